//! Matmul cases: square sizes on the adapter's default kernel, every tile variant and the naive
//! oracle at 1024 (the gain of the tiled kernels, measured side by side), the transposed forms the
//! backward pass launches, and a shared-weight token projection.

use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::matmul::{matmul_launch, MatmulKernel};
use crate::tensor::Tensor;

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
            case: "tokens_2x4096x64_by_64x256",
            run: tokens,
        },
        Case {
            op: "matmul",
            case: "1024_tile_4x4",
            run: |b| {
                square(
                    b,
                    1024,
                    false,
                    false,
                    Some(MatmulKernel::Tile { rows: 4, cols: 4 }),
                )
            },
        },
        Case {
            op: "matmul",
            case: "1024_vec4_4x4",
            run: |b| {
                square(
                    b,
                    1024,
                    false,
                    false,
                    Some(MatmulKernel::Vec4 { rows: 4, cols: 4 }),
                )
            },
        },
        Case {
            op: "matmul",
            case: "1024_vec4_4x8",
            run: |b| {
                square(
                    b,
                    1024,
                    false,
                    false,
                    Some(MatmulKernel::Vec4 { rows: 4, cols: 8 }),
                )
            },
        },
        Case {
            op: "matmul",
            case: "1024_vec4_8x4",
            run: |b| {
                square(
                    b,
                    1024,
                    false,
                    false,
                    Some(MatmulKernel::Vec4 { rows: 8, cols: 4 }),
                )
            },
        },
        Case {
            op: "matmul",
            case: "1024_vec4_8x8",
            run: |b| {
                square(
                    b,
                    1024,
                    false,
                    false,
                    Some(MatmulKernel::Vec4 { rows: 8, cols: 8 }),
                )
            },
        },
        Case {
            op: "matmul",
            case: "1024_naive",
            run: |b| square(b, 1024, false, false, Some(MatmulKernel::Naive)),
        },
    ]
}

fn random(gpu: &crate::Gpu, rng: &mut crate::util::Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_slice(gpu, &rng.vec_uniform(n, -1.0, 1.0), shape)
}

/// n × n × n, 2n³ FLOPs.
fn square(b: &Bench, n: usize, ta: bool, tb: bool, kernel: Option<MatmulKernel>) -> Result<Sample> {
    let kernel = kernel.unwrap_or_else(|| MatmulKernel::for_gpu(b.gpu()));
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[n, n])?, random(gpu, rng, &[n, n])?)),
        |(x, y)| matmul_launch(x, y, ta, tb, kernel).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Flops(2.0 * (n * n * n) as f64)))
}

/// Tokens [2, 4096, 64] times a shared weight [64, 256] (a PVT MLP expansion at stage 1).
fn tokens(b: &Bench) -> Result<Sample> {
    let kernel = MatmulKernel::for_gpu(b.gpu());
    let ms = b.time(
        |gpu, rng| {
            Ok((
                random(gpu, rng, &[2, 4096, 64])?,
                random(gpu, rng, &[64, 256])?,
            ))
        },
        |(x, w)| matmul_launch(x, w, false, false, kernel).map(drop),
    )?;
    Ok(Sample::new(
        ms,
        Work::Flops(2.0 * (2 * 4096 * 64 * 256) as f64),
    ))
}
