//! Attention forward + backward at the token and key counts of the PVTv2-b1 encoder, batch 2.
//!
//! 16×48×48 volume (the CADS view): stage grids 8×12×12 → 4×6×6 → 2×3×3 → 1×2×2 and SR ratios
//! 8, 4, 2, 1 leave 1, 1, 1 and 4 keys. 64×160×160 volume: grids 32×40×40 → 16×20×20 → 8×10×10 →
//! 4×5×5, 100 keys at every stage. Widths 64, 128, 320, 512 with 1, 2, 5, 8 heads (head dim 64).
//! FLOPs follow the FlashAttention-2 convention: forward 4·N·L·M·C, backward 2.5× forward.

use super::inputs::{random, random_param};
use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::attention;

const N: usize = 2;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "attention_fwd_bwd",
            case: "vol16x48x48_s1_L1152_M1_C64",
            run: |b| run(b, 1152, 1, 64),
        },
        Case {
            op: "attention_fwd_bwd",
            case: "vol16x48x48_s4_L4_M4_C512",
            run: |b| run(b, 4, 4, 512),
        },
        Case {
            op: "attention_fwd_bwd",
            case: "vol64x160x160_s1_L51200_M100_C64",
            run: |b| run(b, 51200, 100, 64),
        },
        Case {
            op: "attention_fwd_bwd",
            case: "vol64x160x160_s2_L6400_M100_C128",
            run: |b| run(b, 6400, 100, 128),
        },
        Case {
            op: "attention_fwd_bwd",
            case: "vol64x160x160_s3_L800_M100_C320",
            run: |b| run(b, 800, 100, 320),
        },
        Case {
            op: "attention_fwd_bwd",
            case: "vol64x160x160_s4_L100_M100_C512",
            run: |b| run(b, 100, 100, 512),
        },
    ]
}

fn run(b: &Bench, l: usize, m: usize, c: usize) -> Result<Sample> {
    let heads = c / 64;
    let ms = b.time_with_grad(
        |gpu, rng| {
            Ok((
                random_param(gpu, rng, &[N, l, c])?,
                random_param(gpu, rng, &[N, m, c])?,
                random_param(gpu, rng, &[N, m, c])?,
                random(gpu, rng, &[N, l, c])?,
            ))
        },
        |(q, k, v, g)| attention(q, k, v, heads)?.backward_with(g).map(drop),
    )?;
    Ok(Sample::new(
        ms,
        Work::Flops(3.5 * 4.0 * (N * l * m * c) as f64),
    ))
}
