//! Transposed conv3d cases. `up`: N 2, 128 → 64 channels, input 16×24×24, k2 s2 (the U-Net
//! up-sampling), on the path tuned for the adapter (the line's `"variant"` names it), and on the
//! k2s2 kernels, the patch path (matmul + shuffle) and, for the gain, the general gather path;
//! `up122`: the same with kernel = stride [1, 2, 2] (PVT-UNet's first decoder level), on the
//! patch path (`Auto`) and the general one.
//! FLOPs: forward 2·N·Ci·Co·kD·kH·kW·D·H·W (every input voxel meets every tap once); forward +
//! both backward passes = 3× that.

use super::inputs::{random, random_param};
use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::conv_transpose3d::{
    conv_transpose3d_with, resolve_path, ConvTranspose3dConfig, ConvTransposePath,
};

const N: usize = 2;
const CI: usize = 128;
const CO: usize = 64;
const DHW: [usize; 3] = [16, 24, 24];

const K2: [usize; 3] = [2, 2, 2];
const K122: [usize; 3] = [1, 2, 2];

pub(crate) fn cases() -> Vec<Case> {
    use ConvTransposePath::{Auto, General, K2s2, Patches};
    vec![
        Case {
            op: "conv_transpose3d_fwd",
            case: "up",
            run: |b| up(b, K2, Auto, false),
        },
        Case {
            op: "conv_transpose3d_fwd_bwd",
            case: "up",
            run: |b| up(b, K2, Auto, true),
        },
        Case {
            op: "conv_transpose3d_fwd",
            case: "up_k2s2",
            run: |b| up(b, K2, K2s2, false),
        },
        Case {
            op: "conv_transpose3d_fwd_bwd",
            case: "up_k2s2",
            run: |b| up(b, K2, K2s2, true),
        },
        Case {
            op: "conv_transpose3d_fwd",
            case: "up_general",
            run: |b| up(b, K2, General, false),
        },
        Case {
            op: "conv_transpose3d_fwd",
            case: "up_patches",
            run: |b| up(b, K2, Patches, false),
        },
        Case {
            op: "conv_transpose3d_fwd_bwd",
            case: "up_patches",
            run: |b| up(b, K2, Patches, true),
        },
        Case {
            op: "conv_transpose3d_fwd",
            case: "up122",
            run: |b| up(b, K122, Auto, false),
        },
        Case {
            op: "conv_transpose3d_fwd_bwd",
            case: "up122",
            run: |b| up(b, K122, Auto, true),
        },
        Case {
            op: "conv_transpose3d_fwd",
            case: "up122_general",
            run: |b| up(b, K122, General, false),
        },
        Case {
            op: "conv_transpose3d_fwd_bwd",
            case: "up122_general",
            run: |b| up(b, K122, General, true),
        },
    ]
}

/// Kernel = stride = `k`, no padding.
fn up(b: &Bench, k: [usize; 3], path: ConvTransposePath, backward: bool) -> Result<Sample> {
    let cfg = ConvTranspose3dConfig {
        kernel: k,
        stride: k,
        ..ConvTranspose3dConfig::up2()
    };
    let taps: usize = k.iter().product();
    let flops = 2.0 * (N * CI * CO * taps * DHW.iter().product::<usize>()) as f64;
    let x_shape = [N, DHW[0], DHW[1], DHW[2], CI];
    let w_shape = [k[0], k[1], k[2], CI, CO];
    let ms = if backward {
        let y_shape = [N, k[0] * DHW[0], k[1] * DHW[1], k[2] * DHW[2], CO];
        b.time_with_grad(
            |gpu, rng| {
                Ok((
                    random_param(gpu, rng, &x_shape)?,
                    random_param(gpu, rng, &w_shape)?,
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
            |gpu, rng| Ok((random(gpu, rng, &x_shape)?, random(gpu, rng, &w_shape)?)),
            |(x, w)| conv_transpose3d_with(x, w, None, &cfg, path).map(drop),
        )?
    };
    let mut s = Sample::new(ms, Work::Flops(if backward { 3.0 * flops } else { flops }));
    let ran = resolve_path(b.gpu(), &cfg, CI, CO, path)?;
    s.variant = Some(format!("{ran:?}").to_ascii_lowercase());
    Ok(s)
}
