//! Transposed conv3d cases. `up`: N 2, 128 → 64 channels, input 16×24×24, k2 s2 (the U-Net
//! up-sampling), on the k2s2 fast path and, for the gain, on the general gather path.
//! FLOPs: forward 2·N·Ci·Co·k³·D·H·W (every input voxel meets every tap once); forward +
//! both backward passes = 3× that.

use super::inputs::{random, random_param};
use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::conv_transpose3d::{
    conv_transpose3d_with, ConvTranspose3dConfig, ConvTransposePath,
};

const N: usize = 2;
const CI: usize = 128;
const CO: usize = 64;
const DHW: [usize; 3] = [16, 24, 24];

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "conv_transpose3d_fwd",
            case: "up",
            run: |b| up(b, ConvTransposePath::Auto, false),
        },
        Case {
            op: "conv_transpose3d_fwd_bwd",
            case: "up",
            run: |b| up(b, ConvTransposePath::Auto, true),
        },
        Case {
            op: "conv_transpose3d_fwd",
            case: "up_general",
            run: |b| up(b, ConvTransposePath::General, false),
        },
    ]
}

fn up(b: &Bench, path: ConvTransposePath, backward: bool) -> Result<Sample> {
    let cfg = ConvTranspose3dConfig::up2();
    let flops = 2.0 * (N * CI * CO * 8 * DHW.iter().product::<usize>()) as f64;
    let x_shape = [N, DHW[0], DHW[1], DHW[2], CI];
    let ms = if backward {
        let y_shape = [N, 2 * DHW[0], 2 * DHW[1], 2 * DHW[2], CO];
        b.time_with_grad(
            |gpu, rng| {
                Ok((
                    random_param(gpu, rng, &x_shape)?,
                    random_param(gpu, rng, &[2, 2, 2, CI, CO])?,
                    random(gpu, rng, &y_shape)?,
                ))
            },
            |(x, w, g)| {
                conv_transpose3d_with(x, w, None, &cfg, path)?
                    .backward_with(g)
                    .map(drop)
            },
        )?
    } else {
        b.time(
            |gpu, rng| {
                Ok((
                    random(gpu, rng, &x_shape)?,
                    random(gpu, rng, &[2, 2, 2, CI, CO])?,
                ))
            },
            |(x, w)| conv_transpose3d_with(x, w, None, &cfg, path).map(drop),
        )?
    };
    Ok(Sample::new(
        ms,
        Work::Flops(if backward { 3.0 * flops } else { flops }),
    ))
}
