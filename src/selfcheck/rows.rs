//! Checks of the row and reduction families: attention (direct and online-softmax forward, both
//! backward kernels), softmax and log-softmax and LayerNorm on both row kernels (a workgroup per
//! row, an invocation per row), InstanceNorm, and sums over inner, outer and all axes (the split
//! reductions into few outputs among them).

use super::Run;
use crate::error::Result;
use crate::ops::norm::{layer_norm_backward_raw, layer_norm_raw, LAYER_NORM_SHORT_ROW};
use crate::ops::softmax::{softmax_backward_raw, softmax_raw, thread_per_row, SHORT_ROW};
use crate::ops::{self, AttentionPath, RowKernel};
use crate::reference::{attention as ra, norm as rn, reduce as rr, softmax as rs, Array};
use crate::util::{Tolerance, F32_ACCUM, F32_GRAD};

/// Normalised outputs are O(1) and pass through two f32 reductions.
const NORM_OUT: Tolerance = Tolerance {
    abs: 2e-5,
    rel: 1e-4,
};

const ROW_KERNELS: [(RowKernel, &str); 3] = [
    (RowKernel::Auto, "auto"),
    (RowKernel::Workgroup, "workgroup"),
    (RowKernel::Thread, "thread"),
];

pub(super) fn attention_variants(run: &mut Run) -> Result<()> {
    // (N, L, M, C, heads): head dims 64 (every PVT stage), 32 and 4; keys within the direct
    // kernel's 64 and past them.
    let cases = [(2, 37, 20, 64, 1), (1, 50, 90, 64, 2), (2, 9, 12, 16, 4)];
    let paths = [
        (AttentionPath::Auto, "auto"),
        (AttentionPath::Direct, "direct"),
        (AttentionPath::Online, "online"),
    ];
    for (path, name) in paths {
        if !run.wants("attention", name) {
            continue;
        }
        for (n, l, m, c, heads) in cases {
            if path == AttentionPath::Direct && m > ops::attention::MAX_DIRECT_KEYS {
                continue;
            }
            let ran = match path {
                AttentionPath::Auto if m <= ops::attention::MAX_DIRECT_KEYS => "direct",
                AttentionPath::Auto => "online",
                _ => name,
            };
            let case = format!("N{n} L{l} M{m} C{c} heads {heads}");
            run.check("attention", name, ran, &case, |run, cmp| {
                let (q, tq) = run.random(&[n, l, c], true)?;
                let (k, tk) = run.random(&[n, m, c], true)?;
                let (v, tv) = run.random(&[n, m, c], true)?;
                let scale = ((c / heads) as f32).powf(-0.5);
                let y = ops::attention_with(&tq, &tk, &tv, heads, scale, path)?;
                let want = ra::attention(&q, &k, &v, heads, scale as f64);
                cmp.tensor("forward", &y, &want, F32_ACCUM);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let (gq, gk, gv) = ra::attention_backward(&q, &k, &v, heads, scale as f64, &g);
                cmp.grad("grad q", &grads, &tq, &gq, F32_GRAD);
                cmp.grad("grad k", &grads, &tk, &gk, F32_GRAD);
                cmp.grad("grad v", &grads, &tv, &gv, F32_GRAD);
                Ok(())
            });
        }
    }
    Ok(())
}

/// Rows × columns of the row-kernel cases: short rows, and rows longer than the GPU
/// thread-per-row limit ([`crate::ops::softmax::SHORT_ROW`]).
const ROW_SHAPES: [[usize; 2]; 2] = [[37, 49], [5, 300]];

/// The row kernel `variant` runs on rows of `cols` elements: `thread` or `workgroup`.
fn row_kernel_ran(run: &Run, variant: RowKernel, cols: usize, short_row: usize) -> &'static str {
    if thread_per_row(run.gpu, variant, cols, short_row) {
        "thread"
    } else {
        "workgroup"
    }
}

pub(super) fn softmax_variants(run: &mut Run) -> Result<()> {
    for (variant, name) in ROW_KERNELS {
        for log in [false, true] {
            let family = if log { "log_softmax" } else { "softmax" };
            if !run.wants(family, name) {
                continue;
            }
            for shape in ROW_SHAPES {
                let case = format!("{}x{}", shape[0], shape[1]);
                let ran = row_kernel_ran(run, variant, shape[1], SHORT_ROW);
                run.check(family, name, ran, &case, |run, cmp| {
                    let (x, tx) = run.random(&shape, false)?;
                    // Spread the logits so the maximum subtraction matters.
                    let x = Array::new(x.data.iter().map(|v| 8.0 * v).collect(), &shape);
                    let tx = ops::scale(&tx, 8.0)?;
                    let y = softmax_raw(&tx, log, variant)?;
                    cmp.tensor("forward", &y, &rs::softmax(&x, log), F32_ACCUM);
                    let (g, tg) = run.random(&shape, false)?;
                    let gx = softmax_backward_raw(&y, &tg, log, variant)?;
                    cmp.tensor("grad x", &gx, &rs::softmax_backward(&x, &g, log), F32_GRAD);
                    Ok(())
                });
            }
        }
    }
    Ok(())
}

pub(super) fn norms(run: &mut Run) -> Result<()> {
    let eps = 1e-6f32;
    for (variant, name) in ROW_KERNELS {
        if !run.wants("layer_norm", name) {
            continue;
        }
        for shape in ROW_SHAPES {
            let case = format!("{}x{} affine, values in [2, 4)", shape[0], shape[1]);
            let ran = row_kernel_ran(run, variant, shape[1], LAYER_NORM_SHORT_ROW);
            run.check("layer_norm", name, ran, &case, |run, cmp| {
                let c = shape[1];
                // An offset of 3: a variance taken as E[x²] − μ² would lose digits here.
                let (x, tx) = run.uniform(&shape, 2.0, 4.0, false)?;
                let (gamma, tgamma) = run.random(&[c], false)?;
                let (beta, tbeta) = run.random(&[c], false)?;
                let affine = Some((&tgamma, &tbeta));
                let (y, stats) = layer_norm_raw(&tx, affine, eps, variant)?;
                let want = rn::layer_norm(&x, Some((&gamma.data, &beta.data)), eps as f64);
                cmp.tensor("forward", &y, &want, NORM_OUT);
                let (g, tg) = run.random(&shape, false)?;
                let (gx, params) =
                    layer_norm_backward_raw(&tx, Some(&tgamma), &stats, &tg, true, variant)?;
                let want = rn::layer_norm_backward(&x, Some(&gamma.data), eps as f64, &g);
                cmp.tensor("grad x", &gx, &want.x, F32_GRAD);
                match params {
                    Some((gg, gb)) => {
                        cmp.tensor("grad gamma", &gg, &want.gamma, F32_GRAD);
                        cmp.tensor("grad beta", &gb, &want.beta, F32_GRAD);
                    }
                    None => cmp.fail("grad gamma and beta: not produced".into()),
                }
                Ok(())
            });
        }
    }
    if run.wants("instance_norm", "auto") {
        let shape = [2, 3, 5, 6, 8];
        run.check(
            "instance_norm",
            "auto",
            "auto",
            "[2, 3, 5, 6, 8] affine",
            |run, cmp| {
                let (x, tx) = run.uniform(&shape, 2.0, 4.0, true)?;
                let (gamma, tgamma) = run.random(&[8], true)?;
                let (beta, tbeta) = run.random(&[8], true)?;
                let y = ops::instance_norm(&tx, Some((&tgamma, &tbeta)), eps)?;
                let want = rn::instance_norm(&x, Some((&gamma.data, &beta.data)), eps as f64);
                cmp.tensor("forward", &y, &want, NORM_OUT);
                let (g, tg) = run.random(&shape, false)?;
                let grads = y.backward_with(&tg)?;
                let want = rn::instance_norm_backward(&x, Some(&gamma.data), eps as f64, &g);
                cmp.grad("grad x", &grads, &tx, &want.x, F32_GRAD);
                cmp.grad("grad gamma", &grads, &tgamma, &want.gamma, F32_GRAD);
                cmp.grad("grad beta", &grads, &tbeta, &want.beta, F32_GRAD);
                Ok(())
            },
        );
    }
    // InstanceNorm + LeakyReLU as one op: without affine its backward reads the output (x̂ from
    // z, centred), with affine it reads x.
    for (variant, affine) in [("leaky_from_output", false), ("leaky_affine", true)] {
        if !run.wants("instance_norm", variant) {
            continue;
        }
        let shape = [2, 3, 5, 6, 8];
        let case = format!("{shape:?} slope 0.01");
        run.check("instance_norm", variant, variant, &case, |run, cmp| {
            let (x, tx) = run.uniform(&shape, 2.0, 4.0, true)?;
            let (gamma, tgamma) = run.uniform(&[8], 0.5, 1.5, true)?;
            let (beta, tbeta) = run.random(&[8], true)?;
            let pair = affine.then_some((&tgamma, &tbeta));
            let y = ops::instance_norm_leaky_relu(&tx, pair, eps, 0.01)?;
            let aff = affine.then_some((&gamma.data[..], &beta.data[..]));
            let want = rn::instance_norm_leaky_relu(&x, aff, eps as f64, 0.01);
            cmp.tensor("forward", &y, &want, NORM_OUT);
            let (g, tg) = run.random(&shape, false)?;
            let grads = y.backward_with(&tg)?;
            let want = rn::instance_norm_leaky_relu_backward(&x, aff, eps as f64, 0.01, &g);
            cmp.grad("grad x", &grads, &tx, &want.x, F32_GRAD);
            if affine {
                cmp.grad("grad gamma", &grads, &tgamma, &want.gamma, F32_GRAD);
                cmp.grad("grad beta", &grads, &tbeta, &want.beta, F32_GRAD);
            }
            Ok(())
        });
    }
    Ok(())
}

pub(super) fn sums(run: &mut Run) -> Result<()> {
    // (shape, axes): the last axis, a middle one, the leading rows (a bias gradient), and all
    // of a long vector (split into partial sums, then summed again).
    // A sum of ~10⁵ terms in f32 needs a looser absolute bound than F32_ACCUM.
    const LONG: Tolerance = Tolerance {
        abs: 1e-3,
        rel: 1e-4,
    };
    let cases: [(&[usize], &[usize], Tolerance); 4] = [
        (&[3, 50, 70], &[2], F32_ACCUM),
        (&[3, 50, 70], &[1], F32_ACCUM),
        (&[4, 300, 64], &[0, 1], F32_ACCUM),
        (&[300_001], &[0], LONG),
    ];
    if !run.wants("sum", "auto") {
        return Ok(());
    }
    for (shape, axes, tol) in cases {
        let case = format!("{shape:?} over axes {axes:?}");
        run.check("sum", "auto", "auto", &case, |run, cmp| {
            let (x, tx) = run.random(shape, false)?;
            let signed: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
            let y = ops::sum(&tx, &signed, true)?;
            cmp.tensor("forward", &y, &rr::sum_keepdim(&x, axes, 1.0), tol);
            Ok(())
        });
    }
    Ok(())
}
