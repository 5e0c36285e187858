//! Reference for src/ops/pool.rs: channels-last `[N, D, H, W, C]` pooling, written directly from
//! the window definition.

use super::Array;
use crate::ops::config::Pool3dConfig;

fn dims(x: &Array) -> (usize, [usize; 3], usize) {
    let s = &x.shape;
    (s[0], [s[1], s[2], s[3]], s[4])
}

fn out_dims(dhw: [usize; 3], cfg: &Pool3dConfig) -> [usize; 3] {
    let mut o = [0; 3];
    for a in 0..3 {
        o[a] = (dhw[a] + 2 * cfg.padding[a] - cfg.kernel[a]) / cfg.stride[a] + 1;
    }
    o
}

/// In-bounds input positions of window `o`, in window order (d, h, w lexicographic).
fn window(o: [usize; 3], dhw: [usize; 3], cfg: &Pool3dConfig) -> Vec<[usize; 3]> {
    let mut pos = Vec::new();
    for a in 0..cfg.kernel[0] {
        for b in 0..cfg.kernel[1] {
            for e in 0..cfg.kernel[2] {
                let q = [
                    (o[0] * cfg.stride[0] + a) as isize - cfg.padding[0] as isize,
                    (o[1] * cfg.stride[1] + b) as isize - cfg.padding[1] as isize,
                    (o[2] * cfg.stride[2] + e) as isize - cfg.padding[2] as isize,
                ];
                if (0..3).all(|i| q[i] >= 0 && (q[i] as usize) < dhw[i]) {
                    pos.push([q[0] as usize, q[1] as usize, q[2] as usize]);
                }
            }
        }
    }
    pos
}

fn divisor(o: [usize; 3], dhw: [usize; 3], cfg: &Pool3dConfig, inside: usize) -> f64 {
    if cfg.count_include_pad {
        (0..3)
            .map(|a| {
                let start = (o[a] * cfg.stride[a]) as isize - cfg.padding[a] as isize;
                let end = (start + cfg.kernel[a] as isize).min((dhw[a] + cfg.padding[a]) as isize);
                (end - start) as f64
            })
            .product()
    } else {
        inside.max(1) as f64
    }
}

/// (output, gradient routing) for max or average pooling; `backward` applies the routing to g.
pub fn pool3d(x: &Array, cfg: &Pool3dConfig, max: bool) -> Array {
    let (n, dhw, c) = dims(x);
    let od = out_dims(dhw, cfg);
    let mut y = Array::zeros(&[n, od[0], od[1], od[2], c]);
    for b in 0..n {
        for o0 in 0..od[0] {
            for o1 in 0..od[1] {
                for o2 in 0..od[2] {
                    let win = window([o0, o1, o2], dhw, cfg);
                    for ch in 0..c {
                        let vals = win
                            .iter()
                            .map(|q| x.data[x.ravel(&[b, q[0], q[1], q[2], ch])]);
                        let v = if max {
                            vals.fold(f64::NEG_INFINITY, f64::max)
                        } else {
                            vals.sum::<f64>() / divisor([o0, o1, o2], dhw, cfg, win.len())
                        };
                        let i = y.ravel(&[b, o0, o1, o2, ch]);
                        y.data[i] = v;
                    }
                }
            }
        }
    }
    y
}

/// dL/dx for `pool3d` given dL/dy = g (max: to the first maximum of each window).
pub fn pool3d_backward(x: &Array, cfg: &Pool3dConfig, max: bool, g: &Array) -> Array {
    let (n, dhw, c) = dims(x);
    let od = out_dims(dhw, cfg);
    let mut gx = Array::zeros(&x.shape);
    for b in 0..n {
        for o0 in 0..od[0] {
            for o1 in 0..od[1] {
                for o2 in 0..od[2] {
                    let win = window([o0, o1, o2], dhw, cfg);
                    for ch in 0..c {
                        let gi = g.data[g.ravel(&[b, o0, o1, o2, ch])];
                        if max {
                            let mut best = 0;
                            for (k, q) in win.iter().enumerate() {
                                let v = x.data[x.ravel(&[b, q[0], q[1], q[2], ch])];
                                let bq = win[best];
                                if v > x.data[x.ravel(&[b, bq[0], bq[1], bq[2], ch])] {
                                    best = k;
                                }
                            }
                            let q = win[best];
                            let i = x.ravel(&[b, q[0], q[1], q[2], ch]);
                            gx.data[i] += gi;
                        } else {
                            let dv = divisor([o0, o1, o2], dhw, cfg, win.len());
                            for q in &win {
                                let i = x.ravel(&[b, q[0], q[1], q[2], ch]);
                                gx.data[i] += gi / dv;
                            }
                        }
                    }
                }
            }
        }
    }
    gx
}
