//! The f16 matmul checked against its reference, forward and backward (tests/mixed_precision.rs
//! on every kernel, tests/matmul_coop.rs on a device with cooperative matrices).

use cads::ops::{self, MatmulF16Kernel};
use cads::reference::{matmul_f16 as ref16, Array};
use cads::tensor::DType;
use cads::util::{Rng, Tolerance, F32_ACCUM};
use cads::{Gpu, Tensor};

use super::f16_bounds::U;
use super::{assert_close, random_param};

/// Gradients of the f16 matmul (rounded to f16 on both sides): one f16 ulp (2u relative) from a
/// rounding boundary the f32 accumulation can cross, plus the accumulation.
pub const F16_GRAD: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 2.0 * 2.0 * U,
};

pub fn stored(batch: &[usize], rows: usize, cols: usize, t: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if t { [cols, rows] } else { [rows, cols] });
    s
}

/// Forward and backward of one f16 matmul against the reference on rounded operands. The
/// operands are f32 leaves cast to f16 (the autocast pattern), so their gradients arrive f32.
#[allow(clippy::too_many_arguments)]
pub fn check_f16_case(
    gpu: &Gpu,
    kernel: MatmulF16Kernel,
    rng: &mut Rng,
    ba: &[usize],
    bb: &[usize],
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
) {
    let what = format!("{kernel:?} a{ba:?} b{bb:?} M{m} K{k} N{n} ta {ta} tb {tb}");
    let (a, a_leaf) = random_param(gpu, rng, &stored(ba, m, k, ta), -1.0, 1.0);
    let (b, b_leaf) = random_param(gpu, rng, &stored(bb, k, n, tb), -1.0, 1.0);
    let a16 = a_leaf.to_dtype(DType::F16).unwrap();
    let b16 = b_leaf.to_dtype(DType::F16).unwrap();
    let out = ops::matmul_f16_with(&a16, &b16, ta, tb, kernel).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let want = ref16::matmul_f16(&a, &b, ta, tb);
    assert_eq!(out.shape(), want.shape.as_slice(), "{what}: shape");
    assert_close(
        &format!("{what} forward"),
        &out.to_vec().unwrap(),
        &want.data,
        F32_ACCUM,
    );
    let gdata = rng.vec_uniform(out.numel(), -1.0, 1.0);
    let grads = out
        .backward_with(&Tensor::from_slice(gpu, &gdata, out.shape()).unwrap())
        .unwrap();
    let (ga, gb) =
        ref16::matmul_f16_backward(&a, &b, ta, tb, &Array::from_f32(&gdata, out.shape()));
    for (name, leaf, want) in [("a", &a_leaf, &ga), ("b", &b_leaf, &gb)] {
        let got = grads.get(leaf).unwrap();
        assert_eq!(got.dtype(), DType::F32, "{what}: grad {name} type");
        assert_eq!(got.shape(), leaf.shape(), "{what}: grad {name} shape");
        assert_close(
            &format!("{what} grad {name}"),
            &got.to_vec().unwrap(),
            &want.data,
            F16_GRAD,
        );
    }
}
