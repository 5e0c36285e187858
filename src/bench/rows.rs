//! Row-wise ops (softmax, LayerNorm): bandwidth-bound, reported in GB/s (bytes read + written).

use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::softmax::{softmax_raw, RowKernel};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "softmax",
            case: "64x60000",
            run: |b| softmax(b, 64, 60000),
        },
        Case {
            op: "softmax",
            case: "18432x49",
            run: |b| softmax(b, 18432, 49),
        },
        Case {
            op: "layer_norm",
            case: "9216x64",
            run: |b| layer_norm(b, 9216, 64),
        },
        Case {
            op: "layer_norm",
            case: "2048x512",
            run: |b| layer_norm(b, 2048, 512),
        },
    ]
}

fn softmax(b: &Bench, rows: usize, cols: usize) -> Result<Sample> {
    let ms = b.time(
        |gpu, rng| random(gpu, rng, &[rows, cols]),
        |x| softmax_raw(x, false, RowKernel::Auto).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes((2 * rows * cols * 4) as f64)))
}

fn layer_norm(b: &Bench, rows: usize, cols: usize) -> Result<Sample> {
    let ms = b.time(
        |gpu, rng| {
            Ok((
                random(gpu, rng, &[rows, cols])?,
                random(gpu, rng, &[cols])?,
                random(gpu, rng, &[cols])?,
            ))
        },
        |(x, g, beta)| crate::ops::layer_norm(x, Some((g, beta)), 1e-6).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes((2 * rows * cols * 4) as f64)))
}
