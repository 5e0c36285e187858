//! Matmul checks: every f32 kernel ([`MatmulKernel::ALL`]) forward on five transpose patterns and
//! shapes, ragged ones included (the tiles' edge handling and fallbacks), and every f16 kernel
//! ([`MatmulF16Kernel::ALL`], cooperative matrices included where the device has them) forward
//! and backward, as autocast runs them: f32 leaves cast to f16.

use super::{Comparison, Run};
use crate::error::Result;
use crate::ops::{self, MatmulF16Kernel, MatmulKernel};
use crate::reference::{matmul as refmm, matmul_f16 as ref16};
use crate::tensor::DType;
use crate::util::{Tolerance, F32_ACCUM};

/// Unit roundoff of f16 (11-bit significand).
const F16_U: f64 = 1.0 / 2048.0;

/// The f16 product's gradients are rounded to f16 (the operands' type) on both sides; an f32
/// accumulation may cross a rounding boundary the f64 one does not: one f16 ulp (2u relative).
const F16_GRAD: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 4.0 * F16_U,
};

/// (batch of A, batch of B, M, K, N, transpose A, transpose B): ragged and aligned extents, all
/// four transpose patterns, a batch against a shared matrix (a Linear's weight), and a weight
/// gradient's shape (few outputs, K = 4096 tokens: the split-K paths).
type Case = (
    &'static [usize],
    &'static [usize],
    usize,
    usize,
    usize,
    bool,
    bool,
);
const CASES: [Case; 6] = [
    (&[], &[], 67, 45, 53, false, false),
    (&[], &[], 128, 96, 64, false, false),
    (&[], &[], 96, 64, 128, true, false),
    (&[2], &[], 72, 64, 40, false, true),
    (&[], &[], 33, 40, 36, true, true),
    (&[], &[], 16, 4096, 32, true, false),
];

/// The stored shape of an operand of logical `rows × cols` (transposed: `[cols, rows]`).
fn stored(batch: &[usize], rows: usize, cols: usize, t: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if t { [cols, rows] } else { [rows, cols] });
    s
}

fn describe(c: &Case) -> String {
    let (ba, bb, m, k, n, ta, tb) = *c;
    let pattern = format!(
        "{}{}",
        if ta { 't' } else { 'n' },
        if tb { 't' } else { 'n' }
    );
    format!(
        "{pattern} a{:?} b{:?} M{m} K{k} N{n}",
        stored(ba, m, k, ta),
        stored(bb, k, n, tb)
    )
}

pub(super) fn f32_variants(run: &mut Run) -> Result<()> {
    for &kernel in MatmulKernel::ALL {
        let name = kernel.name();
        if !run.wants("matmul", &name) {
            continue;
        }
        let ran = kernel.runs_as(run.gpu).name();
        for case in &CASES {
            run.check("matmul", &name, &ran, &describe(case), |run, cmp| {
                f32_case(run, cmp, kernel, case)
            });
        }
    }
    Ok(())
}

fn f32_case(run: &mut Run, cmp: &mut Comparison, kernel: MatmulKernel, c: &Case) -> Result<()> {
    let (ba, bb, m, k, n, ta, tb) = *c;
    let (a, ta_t) = run.random(&stored(ba, m, k, ta), false)?;
    let (b, tb_t) = run.random(&stored(bb, k, n, tb), false)?;
    let y = ops::matmul_with(&ta_t, &tb_t, ta, tb, kernel)?;
    cmp.tensor("forward", &y, &refmm::matmul(&a, &b, ta, tb), F32_ACCUM);
    Ok(())
}

pub(super) fn f16_variants(run: &mut Run) -> Result<()> {
    if !run.gpu.features().f16 {
        return Ok(());
    }
    for &kernel in MatmulF16Kernel::ALL {
        let name = kernel.name();
        if !run.wants("matmul_f16", name) {
            continue;
        }
        let ran = match kernel.effective(run.gpu) {
            Ok(k) => k.name().to_string(),
            Err(e) => {
                run.check("matmul_f16", name, "none", "kernel choice", |_, _| Err(e));
                continue;
            }
        };
        for case in &CASES {
            run.check("matmul_f16", name, &ran, &describe(case), |run, cmp| {
                f16_case(run, cmp, kernel, case)
            });
        }
    }
    Ok(())
}

fn f16_case(run: &mut Run, cmp: &mut Comparison, kernel: MatmulF16Kernel, c: &Case) -> Result<()> {
    let (ba, bb, m, k, n, ta, tb) = *c;
    let (a, a_leaf) = run.random(&stored(ba, m, k, ta), true)?;
    let (b, b_leaf) = run.random(&stored(bb, k, n, tb), true)?;
    let a16 = a_leaf.to_dtype(DType::F16)?;
    let b16 = b_leaf.to_dtype(DType::F16)?;
    let y = ops::matmul_f16_with(&a16, &b16, ta, tb, kernel)?;
    cmp.tensor("forward", &y, &ref16::matmul_f16(&a, &b, ta, tb), F32_ACCUM);
    let (g, g_t) = run.random(y.shape(), false)?;
    let grads = y.backward_with(&g_t)?;
    let (ga, gb) = ref16::matmul_f16_backward(&a, &b, ta, tb, &g);
    cmp.grad("grad a", &grads, &a_leaf, &ga, F16_GRAD);
    cmp.grad("grad b", &grads, &b_leaf, &gb, F16_GRAD);
    Ok(())
}
