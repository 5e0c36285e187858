//! LayerNorm under mixed precision keeps f16(x − μ) for its backward instead of x
//! (src/ops/norm/layer_kept.rs): half the bytes of its input held; gradients within f16 rounding
//! of the f32 ones even where the mean dwarfs the spread (the centring before the rounding is
//! what keeps them so); f32, below 256 rows, the same bits as without autocast.
mod common;

use cads::gpu::Precision;
use cads::ops;
use cads::util::Rng;
use cads::{Gpu, Tensor};
use common::*;

/// LayerNorm (affine) of `x` `[rows, cols]` + `offset`, made by a recorded op so that the
/// LayerNorm's input is an activation only the norm keeps, forward under `precision`; the output
/// and the gradients of the input's parameter, γ and β for ∂L/∂y = g.
fn norm_step(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    offset: f32,
    precision: Precision,
) -> (Vec<f32>, [Vec<f32>; 3]) {
    let mut rng = Rng::new(5);
    let data: Vec<f32> = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let p = Tensor::parameter(gpu, &data, &[rows, cols]).unwrap();
    let gamma = Tensor::parameter(gpu, &rng.vec_uniform(cols, 0.5, 1.5), &[cols]).unwrap();
    let beta = Tensor::parameter(gpu, &rng.vec_uniform(cols, -0.5, 0.5), &[cols]).unwrap();
    let g =
        Tensor::from_slice(gpu, &rng.vec_uniform(rows * cols, -1.0, 1.0), &[rows, cols]).unwrap();
    let y = gpu
        .autocast(precision, || {
            let x = ops::add_scalar(&p, offset)?;
            ops::layer_norm(&x, Some((&gamma, &beta)), 1e-6)
        })
        .unwrap();
    let grads = y.backward_with(&g).unwrap();
    let read = |t: &Tensor| grads.get(t).unwrap().to_vec().unwrap();
    (y.to_vec().unwrap(), [read(&p), read(&gamma), read(&beta)])
}

/// Values 1000 ± 1: f16's spacing at 1000 is 0.5, so a rounding of x itself would leave x̂
/// almost nothing; the rounding of x − μ errs by 2⁻¹¹ of x̂. The forward is the f32 one.
#[test]
fn gradients_stay_accurate_far_from_zero_mean() {
    let gpu = gpu();
    assert!(
        gpu.features().f16,
        "the test adapter should offer SHADER_F16"
    );
    let (rows, cols) = (512, 64);
    let (y16, g16) = norm_step(&gpu, rows, cols, 1000.0, Precision::Mixed);
    let (y32, g32) = norm_step(&gpu, rows, cols, 1000.0, Precision::F32);
    assert_eq!(y16, y32, "the forward under autocast is the f32 one");
    for (name, (a, b)) in ["x", "gamma", "beta"].iter().zip(g16.iter().zip(&g32)) {
        let e = relative_l2(a, b);
        assert!(e < 2e-3, "grad {name}: relative L2 {e:.2e} from f32");
    }
}

/// Below 256 rows, and in f32, the norm keeps x itself: the same bits as without autocast.
#[test]
fn few_rows_keep_the_input_itself() {
    let gpu = gpu();
    let (_, small16) = norm_step(&gpu, 100, 64, 3.0, Precision::Mixed);
    let (_, small32) = norm_step(&gpu, 100, 64, 3.0, Precision::F32);
    assert_eq!(small16, small32);
}

/// Under autocast the norm holds f16(x − μ) (half of x's bytes) where it held x.
#[test]
fn holds_half_its_input() {
    let gpu = fresh_gpu();
    let (rows, cols) = (1024, 64);
    let mut rng = Rng::new(9);
    let p = Tensor::parameter(
        &gpu,
        &rng.vec_uniform(rows * cols, -1.0, 1.0),
        &[rows, cols],
    )
    .unwrap();
    let held = |precision| {
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        let y = gpu
            .autocast(precision, || {
                // The input lives only in what the norm keeps.
                ops::layer_norm(&ops::add_scalar(&p, 1.0)?, None, 1e-6)
            })
            .unwrap();
        let held = gpu.pool_stats().live_bytes - before;
        drop(y);
        held
    };
    let (f32_held, amp_held) = (held(Precision::F32), held(Precision::Mixed));
    let x_bytes = (rows * cols * 4) as u64;
    assert!(
        amp_held + x_bytes / 2 <= f32_held,
        "held {amp_held} B under autocast, {f32_held} B in f32: not half the input less"
    );
}
