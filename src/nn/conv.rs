//! Conv3d and Conv2d layers over channels-last activations (see src/ops/conv3d.rs).
//!
//! Weights live in the kernel's layout, `[kD, kH, kW, Cin/groups, Cout]` (2D: `[kH, kW,
//! Cin/groups, Cout]`); PyTorch's `[Cout, Cin/groups, k...]` is accepted by `import_pytorch`.
//!
//! Initialisation, with fan_in = Cin/groups · kD·kH·kW and fan_out = Cout/groups · kD·kH·kW
//! (PyTorch's `_calculate_fan_in_and_fan_out` for conv weights):
//! - [`ConvInit::TorchDefault`]: `kaiming_uniform_(a = √5)`, i.e. U(−b, b) with
//!   b = gain·√(3/fan_in), gain = √(2/(1+a²)) = √(1/3), so b = 1/√fan_in; bias U(−1/√fan_in, 1/√fan_in).
//! - [`ConvInit::KaimingNormalFanOut`]: N(0, √(2/fan_out)) weights and zero bias, as CADS and
//!   nnU-Net-style decoders use (`kaiming_normal_(mode='fan_out', nonlinearity='relu')`).

use super::linear::{check_bias, write_bias};
use super::pytorch_layout::Layout;
use super::state::{weight_and_bias, Module, StateEntry};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::conv3d::{conv2d, conv3d, Conv2dConfig, Conv3dConfig};
use crate::tensor::Tensor;
use crate::util::Rng;

/// Weight initialisation scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvInit {
    #[default]
    TorchDefault,
    KaimingNormalFanOut,
}

/// (weight values in cads layout, bias values) for a conv with `taps` kernel taps.
fn init_values(
    rng: &mut Rng,
    init: ConvInit,
    taps: usize,
    cin_g: usize,
    cout: usize,
    groups: usize,
) -> (Vec<f32>, Vec<f32>) {
    let n = taps * cin_g * cout;
    let fan_in = (cin_g * taps) as f64;
    let fan_out = (cout / groups * taps) as f64;
    match init {
        ConvInit::TorchDefault => {
            let b = 1.0 / fan_in.sqrt();
            let w = (0..n).map(|_| rng.range(-b, b) as f32).collect();
            let bias = (0..cout).map(|_| rng.range(-b, b) as f32).collect();
            (w, bias)
        }
        ConvInit::KaimingNormalFanOut => {
            let std = (2.0 / fan_out).sqrt();
            (
                (0..n).map(|_| (rng.normal() * std) as f32).collect(),
                vec![0.0; cout],
            )
        }
    }
}

fn check_channels(op: &'static str, cin: usize, cout: usize, groups: usize) -> Result<()> {
    if groups == 0
        || !cin.is_multiple_of(groups)
        || !cout.is_multiple_of(groups)
        || cin == 0
        || cout == 0
    {
        return Err(Error::invalid(
            op,
            "non-zero channel counts divisible by groups",
            format!("Cin {cin}, Cout {cout}, groups {groups}"),
        ));
    }
    Ok(())
}

/// A 3D convolution layer: `[N, D, H, W, Cin]` → `[N, Do, Ho, Wo, Cout]`.
#[derive(Clone, Debug)]
pub struct Conv3d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub config: Conv3dConfig,
}

impl Conv3d {
    pub fn new(
        gpu: &Gpu,
        rng: &mut Rng,
        cin: usize,
        cout: usize,
        config: Conv3dConfig,
        bias: bool,
        init: ConvInit,
    ) -> Result<Conv3d> {
        check_channels("Conv3d::new", cin, cout, config.groups)?;
        let k = config.kernel;
        let cin_g = cin / config.groups;
        let (w, b) = init_values(rng, init, k.iter().product(), cin_g, cout, config.groups);
        Ok(Conv3d {
            weight: Tensor::parameter(gpu, &w, &[k[0], k[1], k[2], cin_g, cout])?,
            bias: if bias {
                Some(Tensor::parameter(gpu, &b, &[cout])?)
            } else {
                None
            },
            config,
        })
    }

    /// Load weights given in PyTorch layout `[Cout, Cin/groups, kD, kH, kW]` (and a bias
    /// exactly when the layer has one). Everything is checked before anything is written.
    pub fn import_pytorch(&self, weight: &[f32], bias: Option<&[f32]>) -> Result<()> {
        let data = Layout::Conv3d.from_pytorch(self.weight.shape(), weight)?;
        check_bias("Conv3d::import_pytorch", self.bias.as_ref(), bias)?;
        self.weight.write(&data)?;
        write_bias(self.bias.as_ref(), bias)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv3d(x, &self.weight, self.bias.as_ref(), &self.config)
    }
}

/// A 2D convolution layer: `[N, H, W, Cin]` → `[N, Ho, Wo, Cout]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub config: Conv2dConfig,
}

impl Conv2d {
    pub fn new(
        gpu: &Gpu,
        rng: &mut Rng,
        cin: usize,
        cout: usize,
        config: Conv2dConfig,
        bias: bool,
        init: ConvInit,
    ) -> Result<Conv2d> {
        check_channels("Conv2d::new", cin, cout, config.groups)?;
        let k = config.kernel;
        let cin_g = cin / config.groups;
        let (w, b) = init_values(rng, init, k[0] * k[1], cin_g, cout, config.groups);
        Ok(Conv2d {
            weight: Tensor::parameter(gpu, &w, &[k[0], k[1], cin_g, cout])?,
            bias: if bias {
                Some(Tensor::parameter(gpu, &b, &[cout])?)
            } else {
                None
            },
            config,
        })
    }

    /// Load weights given in PyTorch layout `[Cout, Cin/groups, kH, kW]` (and a bias exactly
    /// when the layer has one). Everything is checked before anything is written.
    pub fn import_pytorch(&self, weight: &[f32], bias: Option<&[f32]>) -> Result<()> {
        let data = Layout::Conv2d.from_pytorch(self.weight.shape(), weight)?;
        check_bias("Conv2d::import_pytorch", self.bias.as_ref(), bias)?;
        self.weight.write(&data)?;
        write_bias(self.bias.as_ref(), bias)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, self.bias.as_ref(), &self.config)
    }
}

impl Module for Conv3d {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        weight_and_bias(
            prefix,
            &self.weight,
            self.bias.as_ref(),
            Layout::Conv3d,
            out,
        );
    }
}

impl Module for Conv2d {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        weight_and_bias(
            prefix,
            &self.weight,
            self.bias.as_ref(),
            Layout::Conv2d,
            out,
        );
    }
}
