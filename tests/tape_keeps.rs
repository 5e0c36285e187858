//! What the tape keeps for backward: exactly the values a backward reads (src/autograd/mod.rs).
//! Each case builds its inputs inside a closure that returns only the op's output, so whatever
//! else is still live in the pool afterwards is held by the output's tape node; then the
//! backward runs and its gradients are checked against the closed form, so a kept-too-little
//! bug fails as loudly as a kept-too-much one. Under autocast, convs, activation functions and
//! attention keep f16 copies (half the bytes; gradients within the rounding's bound of f32's),
//! norms and math functions keep f32.

mod common;

use cads::gpu::Precision;
use cads::nn::{Linear, LinearInit};
use cads::ops::{self, Conv3dConfig, UnaryOp};
use cads::util::Rng;
use cads::{Gpu, Tensor};
use common::fresh_gpu;

/// Elements of every test tensor: a power of two, so its bytes are exactly one pool size class.
const N: usize = 4096;
const BYTES: u64 = (N * 4) as u64;

/// (bytes the output's tape node holds beyond the output itself, the output).
fn held_by_tape(gpu: &Gpu, forward: impl FnOnce(&Gpu) -> Tensor) -> (u64, Tensor) {
    gpu.synchronize().unwrap();
    let before = gpu.pool_stats().live_bytes;
    let out = forward(gpu);
    let out_bytes = out.numel() as u64 * 4;
    let held = gpu.pool_stats().live_bytes - before - out_bytes;
    (held, out)
}

fn values(rng: &mut Rng) -> Vec<f32> {
    rng.vec_uniform(N, -1.0, 1.0)
}

fn grad_of(grads: &cads::Gradients, t: &Tensor) -> Vec<f32> {
    grads.get(t).expect("a gradient").to_vec().unwrap()
}

#[test]
fn sums_keep_neither_operand() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(1);
    let (a0, b0) = (values(&mut rng), values(&mut rng));
    let a = Tensor::parameter(&gpu, &a0, &[N]).unwrap();
    let b = Tensor::parameter(&gpu, &b0, &[N]).unwrap();
    let (held, y) = held_by_tape(&gpu, |gpu| {
        // Two activations made here and dropped after the add: the tape must not hold them.
        let x1 = ops::scale(&a, 2.0).unwrap();
        let x2 = ops::add_scalar(&b, 1.0).unwrap();
        let s = ops::sub(&ops::add(&x1, &x2).unwrap(), &x2).unwrap();
        assert_eq!(gpu.pool_stats().live_bytes % BYTES, 0);
        s
    });
    assert_eq!(held, 0, "add/sub/scale/add_scalar hold no activation");
    // y = 2a + (b + 1) − (b + 1): dy/da = 2, dy/db = 0.
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    assert!(grad_of(&grads, &a).iter().all(|&g| g == 2.0));
    assert!(grad_of(&grads, &b).iter().all(|&g| g == 0.0));
}

#[test]
fn a_product_keeps_only_the_factor_the_wanted_gradient_reads() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(2);
    let (x0, m0) = (values(&mut rng), values(&mut rng));
    let x = Tensor::parameter(&gpu, &x0, &[N]).unwrap();
    // Like drop path's mask: a constant factor. d(x·m)/dx = m is read, x is not.
    let (held, y) = held_by_tape(&gpu, |gpu| {
        let h = ops::scale(&x, 1.0).unwrap();
        let m = Tensor::from_slice(gpu, &m0, &[N]).unwrap();
        ops::mul(&h, &m).unwrap()
    });
    assert_eq!(held, BYTES, "x·mask holds the mask only");
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    assert_eq!(grad_of(&grads, &x), m0);

    // Both factors trainable: both are read.
    let w = Tensor::parameter(&gpu, &m0, &[N]).unwrap();
    let (held, y) = held_by_tape(&gpu, |_| {
        ops::mul(&ops::scale(&x, 1.0).unwrap(), &ops::scale(&w, 1.0).unwrap()).unwrap()
    });
    assert_eq!(held, 2 * BYTES);
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    assert_eq!(grad_of(&grads, &x), m0);
    assert_eq!(grad_of(&grads, &w), x0);
}

#[test]
fn activations_keep_their_input_and_affine_maps_keep_nothing() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(3);
    let x0 = values(&mut rng);
    let x = Tensor::parameter(&gpu, &x0, &[N]).unwrap();
    let (held, y) = held_by_tape(&gpu, |_| {
        let h = ops::relu(&ops::scale(&x, 3.0).unwrap()).unwrap();
        ops::scale(&ops::add_scalar(&h, 5.0).unwrap(), -0.5).unwrap()
    });
    assert_eq!(held, BYTES, "only the ReLU's input");
    // y = −0.5·(relu(3x) + 5): dy/dx = −1.5 where x > 0, else 0.
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    for (g, &v) in grad_of(&grads, &x).iter().zip(&x0) {
        assert_eq!(*g, if v > 0.0 { -1.5 } else { 0.0 });
    }
    // Negation keeps nothing either.
    let (held, y) = held_by_tape(&gpu, |_| {
        ops::unary(UnaryOp::Neg, &ops::scale(&x, 2.0).unwrap()).unwrap()
    });
    assert_eq!(held, 0);
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    assert!(grad_of(&grads, &x).iter().all(|&g| g == -2.0));
}

#[test]
fn a_linear_keeps_its_input_and_weight_not_its_pre_bias_output() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(4);
    // [64, 64] input, 64 → 64: every tensor is N elements.
    let lin = Linear::new(&gpu, 64, 64, true, LinearInit::Torch, &mut rng).unwrap();
    let x0 = values(&mut rng);
    let x = Tensor::parameter(&gpu, &x0, &[64, 64]).unwrap();
    let (held, y) = held_by_tape(&gpu, |_| {
        lin.forward(&ops::scale(&x, 1.0).unwrap()).unwrap()
    });
    // The input (for dW); the weight is the layer's own buffer, live before and after.
    assert_eq!(held, BYTES, "x·W + b holds x only");
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    // d sum(xW + b)/db = 64 rows of ones.
    let gb = grad_of(&grads, lin.bias.as_ref().unwrap());
    assert!(gb.iter().all(|&g| g == 64.0));
    // d/dW[i, j] = Σ_r x[r, i].
    let gw = grad_of(&grads, &lin.weight);
    for i in 0..64 {
        let col: f32 = (0..64).map(|r| x0[r * 64 + i]).sum();
        assert!((gw[i * 64] - col).abs() < 1e-4, "dW[{i}, 0]");
    }
}

#[test]
fn frozen_operands_keep_nothing_the_backward_does_not_read() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(5);
    let (a0, w0) = (values(&mut rng), values(&mut rng));
    let a = Tensor::parameter(&gpu, &a0, &[64, 64]).unwrap();
    // matmul with a frozen right operand: dA = G·Wᵀ reads W, not A.
    let (held, y) = held_by_tape(&gpu, |gpu| {
        let w = Tensor::from_slice(gpu, &w0, &[64, 64]).unwrap();
        ops::matmul(&ops::scale(&a, 1.0).unwrap(), &w, false, false).unwrap()
    });
    assert_eq!(held, BYTES, "A·W with W frozen holds W only");
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    // dA[i, k] = Σ_j W[k, j].
    let ga = grad_of(&grads, &a);
    let row0: f32 = w0[..64].iter().sum();
    assert!((ga[0] - row0).abs() < 1e-4);

    // A network's first conv: the input wants no gradient, so dx is never computed and the
    // weight is not kept for it; dW reads the input.
    let cfg = Conv3dConfig::new([1, 1, 1]);
    let w = Tensor::parameter(&gpu, &w0[..16], &[1, 1, 1, 4, 4]).unwrap();
    let (held, y) = held_by_tape(&gpu, |gpu| {
        let image = Tensor::from_slice(gpu, &a0, &[1, 4, 16, 16, 4]).unwrap();
        ops::conv3d(&image, &w, None, &cfg).unwrap()
    });
    assert_eq!(held, BYTES, "the input only");
    let grads = ops::sum_all(&y).unwrap().backward().unwrap();
    // 1×1×1 conv: dW[ci, co] = Σ_voxels x[voxel, ci].
    let gw = grad_of(&grads, &w);
    let sum_ci0: f32 = a0.iter().step_by(4).sum();
    assert!((gw[0] - sum_ci0).abs() < 1e-3, "{} vs {sum_ci0}", gw[0]);
}

// ---- under autocast: activations kept in f16 (src/tensor/saved.rs) -------------------------

/// (bytes held by the tape, gradient of `leaf`) of `forward` under `precision`, with the loss
/// Σ out ⊙ up for a fixed upstream `up` (a plain sum would zero attention's value gradient).
fn held_and_grad(
    gpu: &Gpu,
    precision: Precision,
    leaf: &Tensor,
    forward: impl FnOnce(&Gpu) -> Tensor,
) -> (u64, Vec<f32>) {
    let (held, out) = gpu.autocast(precision, || held_by_tape(gpu, forward));
    let up = Rng::new(99).vec_uniform(out.numel(), -1.0, 1.0);
    let up = Tensor::from_slice(gpu, &up, out.shape()).unwrap();
    let grads = out.backward_with(&up).unwrap();
    (held, grad_of(&grads, leaf))
}

fn require_f16(gpu: &Gpu) {
    assert!(
        gpu.features().f16,
        "these tests need SHADER_F16 (lavapipe and most GPUs have it): without it autocast runs \
         f32 and keeps f32"
    );
}

#[test]
fn under_autocast_activation_functions_keep_an_f16_input() {
    let gpu = fresh_gpu();
    require_f16(&gpu);
    let x0 = values(&mut Rng::new(6));
    let x = Tensor::parameter(&gpu, &x0, &[N]).unwrap();
    let run = |p, f: fn(&Tensor) -> cads::Result<Tensor>| {
        held_and_grad(&gpu, p, &x, |_| f(&ops::scale(&x, 2.0).unwrap()).unwrap())
    };
    for (name, f) in [
        ("gelu", ops::gelu as fn(&Tensor) -> cads::Result<Tensor>),
        ("relu", ops::relu),
    ] {
        let (held32, g32) = run(Precision::F32, f);
        let (held16, g16) = run(Precision::Mixed, f);
        assert_eq!((held32, held16), (BYTES, BYTES / 2), "{name}");
        // d/dx f(2x) = 2 f'(2x) with 2x rounded to f16 (relative 2⁻¹¹, |2x| ≤ 2): GELU's f'' is
        // at most 0.8 in size, so the gradients differ by ≤ 2·0.8·2·2⁻¹¹ < 2e-3; ReLU's only
        // where the rounding crosses 0, which it cannot (rounding keeps the sign).
        let worst = g32
            .iter()
            .zip(&g16)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 2e-3, "{name}: {worst}");
        if name == "relu" {
            assert_eq!(g32, g16);
        } else {
            assert!(worst > 0.0, "gelu's gradient really read the rounded input");
        }
    }
    // Math functions keep f32 under autocast.
    let (held32, g32) = run(Precision::F32, ops::exp);
    let (held16, g16) = run(Precision::Mixed, ops::exp);
    assert_eq!((held32, held16), (BYTES, BYTES));
    assert_eq!(g32, g16);
}

#[test]
fn under_autocast_a_conv_keeps_an_f16_input_and_its_f32_weight() {
    let gpu = fresh_gpu();
    require_f16(&gpu);
    let mut rng = Rng::new(7);
    let (x0, w0) = (values(&mut rng), values(&mut rng));
    let w = Tensor::parameter(&gpu, &w0[..16], &[1, 1, 1, 4, 4]).unwrap();
    let cfg = Conv3dConfig::new([1, 1, 1]);
    let run = |p| {
        held_and_grad(&gpu, p, &w, |gpu| {
            let image = Tensor::from_slice(gpu, &x0, &[1, 4, 16, 16, 4]).unwrap();
            ops::conv3d(&image, &w, None, &cfg).unwrap()
        })
    };
    let (held32, g32) = run(Precision::F32);
    let (held16, g16) = run(Precision::Mixed);
    assert_eq!((held32, held16), (BYTES, BYTES / 2));
    // dW[ci, co] = Σ_v x[v, ci]·up[v, co]: rounding x changes it by ≤ 2⁻¹¹·Σ_v |x[v, ci]|.
    for ci in 0..4 {
        let bound: f32 = x0.iter().skip(ci).step_by(4).map(|v| v.abs()).sum::<f32>() / 2048.0;
        for co in 0..4 {
            let d = (g32[ci * 4 + co] - g16[ci * 4 + co]).abs();
            assert!(d <= bound, "dW[{ci}, {co}]: {d} > {bound}");
        }
    }
    assert_ne!(g32, g16, "the f16 input was really read");
}

#[test]
fn under_autocast_attention_keeps_f16_and_norms_keep_f32() {
    let gpu = fresh_gpu();
    require_f16(&gpu);
    let mut rng = Rng::new(8);
    // q, k, v, out: [1, 256, 16] = N elements each; two heads.
    let q = Tensor::parameter(&gpu, &values(&mut rng), &[1, 256, 16]).unwrap();
    let (k0, v0) = (values(&mut rng), values(&mut rng));
    let run = |p| {
        held_and_grad(&gpu, p, &q, |gpu| {
            let k = Tensor::from_slice(gpu, &k0, &[1, 256, 16]).unwrap();
            let v = Tensor::from_slice(gpu, &v0, &[1, 256, 16]).unwrap();
            ops::attention(&ops::scale(&q, 1.0).unwrap(), &k, &v, 2).unwrap()
        })
    };
    let (held32, g32) = run(Precision::F32);
    let (held16, g16) = run(Precision::Mixed);
    // f32: q, k and v (the output is the caller's, not counted); f16: the copies of q, k, v and
    // the output. Both: the per-row log-sum-exp [1, 2, 256] in f32.
    let lse = 2 * 256 * 4;
    assert_eq!(held32, 3 * BYTES + lse);
    assert_eq!(held16, 2 * BYTES + lse);
    let (diff, norm) = g32
        .iter()
        .zip(&g16)
        .fold((0.0f64, 0.0f64), |(d, n), (a, b)| {
            (d + ((a - b) as f64).powi(2), n + (*a as f64).powi(2))
        });
    let rel = (diff / norm).sqrt();
    assert!(rel > 0.0 && rel < 5e-3, "dq relative L2 {rel:.2e}");

    // LayerNorm keeps its f32 input under autocast (its backward subtracts the mean).
    let x = Tensor::parameter(&gpu, &values(&mut rng), &[64, 64]).unwrap();
    let ln = |p| {
        held_and_grad(&gpu, p, &x, |_| {
            ops::layer_norm(&ops::scale(&x, 1.0).unwrap(), None, 1e-5).unwrap()
        })
    };
    let ((held32, g32), (held16, g16)) = (ln(Precision::F32), ln(Precision::Mixed));
    assert_eq!(held32, held16);
    assert!(held16 >= BYTES);
    assert_eq!(g32, g16);
}
