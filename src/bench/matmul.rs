//! Matmul cases: square sizes on the kernel this adapter runs (chosen per adapter, see
//! `MatmulKernel::chosen`; every line names it in `"variant"`), every tile variant and the naive
//! oracle at 1024 (the gain of the tiled kernels, measured side by side), the transposed forms the
//! backward pass launches, and a shared-weight token projection.

use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::matmul::{matmul_launch, packed_b_form, pads_k, subgroup_a_runs, MatmulKernel};
use crate::tensor::Tensor;

/// `matmul/1024_<variant>`: the 1024³ product on one named kernel variant.
macro_rules! variant_case {
    ($name:literal) => {
        Case {
            op: "matmul",
            case: concat!("1024_", $name),
            run: |b| {
                let kernel = MatmulKernel::from_name($name)?;
                square(b, 1024, false, false, Some(kernel))
            },
        }
    };
}

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "matmul",
            case: "256",
            run: |b| square(b, 256, false, false, None),
        },
        Case {
            op: "matmul",
            case: "1024",
            run: |b| square(b, 1024, false, false, None),
        },
        Case {
            op: "matmul",
            case: "2048",
            run: |b| square(b, 2048, false, false, None),
        },
        Case {
            op: "matmul",
            case: "1024_nt",
            run: |b| square(b, 1024, false, true, None),
        },
        Case {
            op: "matmul",
            case: "1024_tn",
            run: |b| square(b, 1024, true, false, None),
        },
        Case {
            op: "matmul",
            case: "1024_k1026",
            run: |b| odd_k(b, 1024, 1026, None),
        },
        Case {
            op: "matmul",
            case: "1024_k1026_4x4",
            run: |b| odd_k(b, 1024, 1026, Some(MatmulKernel::Tile { rows: 4, cols: 4 })),
        },
        Case {
            op: "matmul",
            case: "tokens_2x4096x64_by_64x256",
            run: |b| tokens(b, 4096, 256),
        },
        Case {
            op: "matmul",
            case: "tokens_2x1152x64_by_64x64",
            run: |b| tokens(b, 1152, 64),
        },
        Case {
            op: "matmul",
            case: "head_6x256_by_256x60000",
            run: |b| head(b, None),
        },
        Case {
            op: "matmul",
            case: "head_6x256_by_256x60000_vec4_8x4",
            run: |b| head(b, Some(MatmulKernel::from_name("vec4_8x4")?)),
        },
        variant_case!("4x4"),
        variant_case!("vec4_4x4"),
        variant_case!("vec4_4x8"),
        variant_case!("vec4_8x4"),
        variant_case!("vec4_8x8"),
        variant_case!("vec4_32x4_w8"),
        variant_case!("vec4_16x8_w8"),
        variant_case!("vec4_32x4_w16"),
        variant_case!("vec4_16x2"),
        variant_case!("vec4_32x4_w8_sa128"),
        variant_case!("vec4_48x4_w8_sa64"),
        variant_case!("naive"),
        // Workgroup-memory tiles for GPUs (src/ops/matmul_tiled.rs); on a device without what
        // a tile needs, the line names the kernel that ran instead.
        variant_case!("wg64x64"),
        variant_case!("wg128x64"),
        variant_case!("wg128x128"),
        variant_case!("sg128x128"),
    ]
}

fn random(gpu: &crate::Gpu, rng: &mut crate::util::Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_slice(gpu, &rng.vec_uniform(n, -1.0, 1.0), shape)
}

/// n × n × n, 2n³ FLOPs; `None`: the kernel this adapter runs (tuned before timing starts).
fn square(b: &Bench, n: usize, ta: bool, tb: bool, kernel: Option<MatmulKernel>) -> Result<Sample> {
    let kernel = match kernel {
        Some(k) => k,
        None => MatmulKernel::chosen(b.gpu())?,
    };
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[n, n])?, random(gpu, rng, &[n, n])?)),
        |(x, y)| matmul_launch(x, y, ta, tb, kernel).map(drop),
    )?;
    let mut s = Sample::new(ms, Work::Flops(2.0 * (n * n * n) as f64));
    s.variant = Some(variant_name(b.gpu(), kernel, (ta, tb), (n, n, n))?);
    Ok(s)
}

/// An n × k by k × n product with k % 4 ≠ 0 (a linear layer with an odd input width): on the
/// adapter's kernel (a vec4 tile pads K to a multiple of 4 first, `+pad_k`) or a named one.
fn odd_k(b: &Bench, n: usize, k: usize, kernel: Option<MatmulKernel>) -> Result<Sample> {
    let kernel = match kernel {
        Some(k) => k,
        None => MatmulKernel::chosen(b.gpu())?,
    };
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[n, k])?, random(gpu, rng, &[k, n])?)),
        |(x, y)| matmul_launch(x, y, false, false, kernel).map(drop),
    )?;
    let mut s = Sample::new(ms, Work::Flops(2.0 * (n * k * n) as f64));
    let ran = kernel.runs_as(b.gpu());
    s.variant = Some(match ran {
        MatmulKernel::Vec4 { .. } if pads_k(1, (n, k, n)) => {
            let k4 = k.next_multiple_of(4);
            format!(
                "{}+pad_k",
                variant_name(b.gpu(), ran, (false, false), (n, k4, n))?
            )
        }
        _ => ran.name(),
    });
    Ok(s)
}

/// The kernel that ran, `+pack_b` when B was packed in column panels first, `+sga` when the
/// tile's subgroup-broadcast twin ran (src/ops/matmul_subgroup_a.rs).
fn variant_name(
    gpu: &crate::Gpu,
    kernel: MatmulKernel,
    transposes: (bool, bool),
    (m, k, n): (usize, usize, usize),
) -> Result<String> {
    let ran = kernel.runs_as(gpu).for_rows(m).for_columns(n);
    let packed = packed_b_form(gpu, ran, transposes, false, (m, k, n))?.is_some();
    let sga = subgroup_a_runs(gpu, ran, transposes)?;
    Ok(format!(
        "{}{}{}",
        ran.name(),
        if packed { "+pack_b" } else { "" },
        if sga { "+sga" } else { "" }
    ))
}

/// The DINO head's last layer in a CADS b1 step: the student's 6 rows (3 per sample at batch 2)
/// of bottleneck features [6, 256] times the normalised weight [256, 60000]: a product of few
/// rows and a wide, streamed B.
fn head(b: &Bench, kernel: Option<MatmulKernel>) -> Result<Sample> {
    let kernel = match kernel {
        Some(k) => k,
        None => MatmulKernel::chosen(b.gpu())?,
    };
    let (m, k, n) = (6, 256, 60000);
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[m, k])?, random(gpu, rng, &[k, n])?)),
        |(z, w)| matmul_launch(z, w, false, false, kernel).map(drop),
    )?;
    let mut s = Sample::new(ms, Work::Flops(2.0 * (m * k * n) as f64));
    s.variant = Some(variant_name(b.gpu(), kernel, (false, false), (m, k, n))?);
    Ok(s)
}

/// Tokens [2, L, 64] times a shared weight [64, N]: a PVT MLP expansion at stage 1 (L = 4096,
/// N = 256) and the encoder step's stage-1 q projection (L = 1152, N = 64: a narrow product,
/// which the 64-lane vec4 tiles run in workgroups of 16).
fn tokens(b: &Bench, l: usize, n: usize) -> Result<Sample> {
    let kernel = MatmulKernel::chosen(b.gpu())?;
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[2, l, 64])?, random(gpu, rng, &[64, n])?)),
        |(x, w)| matmul_launch(x, w, false, false, kernel).map(drop),
    )?;
    let mut s = Sample::new(ms, Work::Flops(2.0 * (2 * l * 64 * n) as f64));
    // The batch of tokens is more rows of A (a shared weight).
    s.variant = Some(variant_name(
        b.gpu(),
        kernel,
        (false, false),
        (2 * l, 64, n),
    )?);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_variant_has_a_1024_case() {
        let cases = cases();
        for k in MatmulKernel::ALL {
            let name = format!("1024_{}", k.name());
            assert!(
                cases.iter().any(|c| c.case == name),
                "no bench case matmul/{name}"
            );
        }
    }
}
