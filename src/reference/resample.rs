//! Reference for src/ops/resample.rs, written from PyTorch's coordinate conventions directly
//! (independent of the kernel's tables): nearest uses floor(o·in/out); linear uses
//! src = o·(in−1)/(out−1) with align-corners, else (o + ½)·in/out − ½ clamped at 0.

use super::Array;
use crate::ops::config::ResampleMode;

/// Source coordinate and neighbours along one axis.
fn taps(mode: ResampleMode, input: usize, output: usize, o: usize) -> Vec<(usize, f64)> {
    match mode {
        ResampleMode::Nearest => {
            let i = ((o * input) / output).min(input - 1);
            vec![(i, 1.0)]
        }
        ResampleMode::Linear { align_corners } => {
            let src = if align_corners {
                if output == 1 {
                    0.0
                } else {
                    o as f64 * (input as f64 - 1.0) / (output as f64 - 1.0)
                }
            } else {
                f64::max((o as f64 + 0.5) * input as f64 / output as f64 - 0.5, 0.0)
            };
            let lo = src.floor();
            let frac = src - lo;
            let i0 = (lo as usize).min(input - 1);
            let i1 = (lo as usize + 1).min(input - 1);
            vec![(i0, 1.0 - frac), (i1, frac)]
        }
    }
}

/// y = resample(x) for x `[N, D, H, W, C]` to `size`.
pub fn resample(x: &Array, size: [usize; 3], mode: ResampleMode) -> Array {
    let s = &x.shape;
    let (n, dhw, c) = (s[0], [s[1], s[2], s[3]], s[4]);
    let mut y = Array::zeros(&[n, size[0], size[1], size[2], c]);
    for b in 0..n {
        for od in 0..size[0] {
            for oh in 0..size[1] {
                for ow in 0..size[2] {
                    for (id, wd) in taps(mode, dhw[0], size[0], od) {
                        for (ih, wh) in taps(mode, dhw[1], size[1], oh) {
                            for (iw, ww) in taps(mode, dhw[2], size[2], ow) {
                                for ch in 0..c {
                                    let o = y.ravel(&[b, od, oh, ow, ch]);
                                    y.data[o] +=
                                        wd * wh * ww * x.data[x.ravel(&[b, id, ih, iw, ch])];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// dL/dx given dL/dy = g: the transpose of `resample`.
pub fn resample_backward(
    x_shape: &[usize],
    size: [usize; 3],
    mode: ResampleMode,
    g: &Array,
) -> Array {
    let (n, dhw, c) = (x_shape[0], [x_shape[1], x_shape[2], x_shape[3]], x_shape[4]);
    let mut gx = Array::zeros(x_shape);
    for b in 0..n {
        for od in 0..size[0] {
            for oh in 0..size[1] {
                for ow in 0..size[2] {
                    for (id, wd) in taps(mode, dhw[0], size[0], od) {
                        for (ih, wh) in taps(mode, dhw[1], size[1], oh) {
                            for (iw, ww) in taps(mode, dhw[2], size[2], ow) {
                                for ch in 0..c {
                                    let i = gx.ravel(&[b, id, ih, iw, ch]);
                                    gx.data[i] +=
                                        wd * wh * ww * g.data[g.ravel(&[b, od, oh, ow, ch])];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    gx
}
