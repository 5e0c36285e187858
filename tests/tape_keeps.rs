//! What the tape keeps for backward: exactly the values a backward reads (src/autograd/mod.rs).
//! Each case builds its inputs inside a closure that returns only the op's output, so whatever
//! else is still live in the pool afterwards is held by the output's tape node; then the
//! backward runs and its gradients are checked against the closed form, so a kept-too-little
//! bug fails as loudly as a kept-too-much one.

mod common;

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
