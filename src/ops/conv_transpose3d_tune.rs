//! Which implementation the kernel-2 / stride-2 transposed conv takes on this adapter: the k2s2
//! kernels (one GEMM per output parity class, shaders/conv_transpose3d_k2s2.wgsl) or the patch
//! path (the matmul tiles and a shuffle, src/ops/conv_transpose3d_patches.rs). On lavapipe the
//! patch path measured 1.4× faster forward and 2.4× forward + backward (docs/kernel-tuning.md,
//! "Transposed convs as one matmul"); on a GPU it costs two extra passes over the output, which
//! the matmul tiles may or may not earn back, so the choice is measured per adapter like the
//! other kernel families (src/gpu/tuning.rs): forward + backward of one U-Net up-sampling,
//! N 1, 64 → 32 channels, 8 × 16 × 16 input on CPU adapters, N 2, 128 → 64, 16 × 32 × 32 on
//! GPUs. `CADS_KERNEL_CONV_TRANSPOSE3D=k2s2|patches` forces one; `CADS_TUNE=off` takes `k2s2`.

use std::time::Instant;

use super::conv_transpose3d::{conv_transpose3d_with, ConvTranspose3dConfig, ConvTransposePath};
use super::matmul::MatmulKernel;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision, TuneRequest};
use crate::tensor::Tensor;
use crate::util::Rng;

/// The op name of the choice: the memo and cache key, and `CADS_KERNEL_CONV_TRANSPOSE3D`.
const OP: &str = "conv_transpose3d";
const NAMES: [&str; 2] = ["k2s2", "patches"];

fn from_name(name: &str) -> Result<ConvTransposePath> {
    match name {
        "k2s2" => Ok(ConvTransposePath::K2s2),
        "patches" => Ok(ConvTransposePath::Patches),
        _ => Err(Error::invalid(OP, format!("one of {NAMES:?}"), name)),
    }
}

/// The path a k2s2 transposed conv (Ci % 4 == 0, Co % 8 == 0) takes on `gpu`.
pub(super) fn up2_path(gpu: &Gpu) -> Result<ConvTransposePath> {
    if let Some(choice) = gpu.remembered_choice(OP) {
        return from_name(&choice.variant);
    }
    // The patch path runs the matmul tiles, whose own choice must be made before this one is
    // measured: the tuner measures one op at a time (a nested choice would wait on itself).
    let settings = gpu.tune_settings();
    if settings.tune && !settings.overrides.contains_key(OP) {
        MatmulKernel::chosen(gpu)?;
    }
    let mut inputs: Option<[Tensor; 3]> = None;
    let request = TuneRequest {
        op: OP,
        variants: &NAMES,
        candidates: &NAMES,
        default: "k2s2",
        kernels: &[super::conv_transpose3d::KERNELS],
    };
    let choice = gpu.tuned_variant(&request, |name| {
        let path = from_name(name)?;
        if inputs.is_none() {
            inputs = Some(tune_inputs(gpu)?);
        }
        let [x, w, g] = inputs.as_ref().expect("made above");
        // Timed as a training step runs it: recorded, in f32, whatever the caller's mode.
        gpu.enable_grad(|| {
            gpu.autocast(Precision::F32, || {
                gpu.synchronize()?;
                let t0 = Instant::now();
                conv_transpose3d_with(x, w, None, &ConvTranspose3dConfig::up2(), path)?
                    .backward_with(g)?;
                gpu.synchronize()?;
                Ok(t0.elapsed().as_secs_f64() * 1e3)
            })
        })
    })?;
    from_name(&choice.variant)
}

/// The timed up-sampling's input, weight (both requiring gradients) and output gradient.
fn tune_inputs(gpu: &Gpu) -> Result<[Tensor; 3]> {
    let (n, ci, co, dhw) = if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
        (1, 64, 32, [8, 16, 16])
    } else {
        (2, 128, 64, [16, 32, 32])
    };
    let mut rng = Rng::new(7);
    let mut random = |shape: &[usize]| {
        let len = shape.iter().product();
        Tensor::from_slice(gpu, &rng.vec_uniform(len, -1.0, 1.0), shape)
    };
    let x = random(&[n, dhw[0], dhw[1], dhw[2], ci])?.requires_grad_(true);
    let w = random(&[2, 2, 2, ci, co])?.requires_grad_(true);
    let g = random(&[n, 2 * dhw[0], 2 * dhw[1], 2 * dhw[2], co])?;
    Ok([x, w, g])
}
