//! `ConvTranspose3d` layer over channels-last volumes (see src/ops/conv_transpose3d.rs):
//! `[N, D, H, W, Cin]` → `[N, Do, Ho, Wo, Cout]`, groups = 1 (the op has no groups).
//!
//! Weight in the op's layout `[kD, kH, kW, Cin, Cout]` (Cout fastest, what the k2s2 fast kernel
//! loads as vec4); PyTorch's `ConvTranspose3d.weight` is `[Cin, Cout, kD, kH, kW]` and is
//! accepted by [`ConvTranspose3d::import_pytorch`].
//!
//! Initialisation. PyTorch's `_calculate_fan_in_and_fan_out` reads a conv weight as
//! `[dim0, dim1, k...]` with fan_in = dim1·kvol and fan_out = dim0·kvol; for a *transposed* conv
//! dim1 = Cout/groups, so with kvol = kD·kH·kW
//!   fan_in = Cout·kvol,   fan_out = Cin·kvol.
//! - [`ConvInit::TorchDefault`]: `kaiming_uniform_(a = √5)` = U(−b, b), b = √(1/3)·√(3/fan_in)
//!   = 1/√fan_in; bias U(−1/√fan_in, 1/√fan_in) (same fan_in). Variance b²/3 = 1/(3·fan_in).
//! - [`ConvInit::KaimingNormalFanOut`]: N(0, √(2/fan_out)) weights (PyTorch's fan_out above,
//!   i.e. Cin·kvol), zero bias.

use super::linear::{check_bias, write_bias};
use super::pytorch_layout::Layout;
use super::state::{weight_and_bias, Module, StateEntry};
use super::ConvInit;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::{conv_transpose3d, ConvTranspose3dConfig};
use crate::tensor::Tensor;
use crate::util::Rng;

/// A transposed 3D convolution layer. `forward` calls [`conv_transpose3d`], which takes the
/// k2s2 fast path by itself when the geometry is [`ConvTranspose3dConfig::up2`] and
/// Cin % 4 == 0, Cout % 8 == 0 (the general kernel otherwise).
#[derive(Clone, Debug)]
pub struct ConvTranspose3d {
    /// `[kD, kH, kW, Cin, Cout]`.
    pub weight: Tensor,
    /// `[Cout]`.
    pub bias: Option<Tensor>,
    pub config: ConvTranspose3dConfig,
}

impl ConvTranspose3d {
    pub fn new(
        gpu: &Gpu,
        rng: &mut Rng,
        cin: usize,
        cout: usize,
        config: ConvTranspose3dConfig,
        bias: bool,
        init: ConvInit,
    ) -> Result<ConvTranspose3d> {
        let k = config.kernel;
        if cin == 0 || cout == 0 || k.contains(&0) {
            return Err(Error::invalid(
                "ConvTranspose3d::new",
                "non-zero channel counts and kernel extents",
                format!("Cin {cin}, Cout {cout}, kernel {k:?}"),
            ));
        }
        let taps = k.iter().product::<usize>();
        let n = taps * cin * cout;
        let fan_in = (cout * taps) as f64;
        let fan_out = (cin * taps) as f64;
        let (w, b): (Vec<f32>, Vec<f32>) = match init {
            ConvInit::TorchDefault => {
                let bound = 1.0 / fan_in.sqrt();
                (
                    super::init::uniform(rng, n, bound),
                    super::init::uniform(rng, cout, bound),
                )
            }
            ConvInit::KaimingNormalFanOut => (
                super::init::normal(rng, n, (2.0 / fan_out).sqrt()),
                vec![0.0; cout],
            ),
        };
        Ok(ConvTranspose3d {
            weight: Tensor::parameter(gpu, &w, &[k[0], k[1], k[2], cin, cout])?,
            bias: if bias {
                Some(Tensor::parameter(gpu, &b, &[cout])?)
            } else {
                None
            },
            config,
        })
    }

    /// (Cin, Cout).
    pub fn channels(&self) -> (usize, usize) {
        let s = self.weight.shape();
        (s[3], s[4])
    }

    /// The PyTorch shape of the weight, `[Cin, Cout, kD, kH, kW]`.
    pub fn pytorch_weight_shape(&self) -> [usize; 5] {
        let s = self.weight.shape();
        [s[3], s[4], s[0], s[1], s[2]]
    }

    /// Load PyTorch weights: `weight` of shape `shape` = `[Cin, Cout, kD, kH, kW]` (row-major),
    /// and a bias `[Cout]` exactly when the layer has one. Everything is checked before anything
    /// is written, so an error leaves the layer as it was. Element `w_pt[i, o, a, b, c]` lands at
    /// cads `w[a, b, c, i, o]`.
    pub fn import_pytorch(
        &self,
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
    ) -> Result<()> {
        let op = "ConvTranspose3d::import_pytorch";
        let want = self.pytorch_weight_shape();
        if shape != want {
            return Err(Error::shape(
                op,
                format!("weight {want:?} (PyTorch [Cin, Cout, kD, kH, kW])"),
                shape,
            ));
        }
        let data = Layout::ConvTranspose3d.from_pytorch(self.weight.shape(), weight)?;
        check_bias(op, self.bias.as_ref(), bias)?;
        self.weight.write(&data)?;
        write_bias(self.bias.as_ref(), bias)
    }

    /// `[N, D, H, W, Cin]` → `[N, Do, Ho, Wo, Cout]` (see [`ConvTranspose3dConfig::output_dims`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_transpose3d(x, &self.weight, self.bias.as_ref(), &self.config)
    }
}

impl Module for ConvTranspose3d {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        weight_and_bias(
            prefix,
            &self.weight,
            self.bias.as_ref(),
            Layout::ConvTranspose3d,
            out,
        );
    }
}
