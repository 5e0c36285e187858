//! Reference for src/ops/conv3d.rs: direct f64 loops, written to be read.
//!
//! Layouts (the same as the GPU):
//! - input  `x[n, d, h, w, ci]`            `[N, D, H, W, Cin]` (channels-last)
//! - weight `w[kd, kh, kw, cig, co]`       `[kD, kH, kW, Cin/groups, Cout]`
//! - bias   `b[co]`                        `[Cout]`
//! - output `y[n, od, oh, ow, co]`         `[N, Do, Ho, Wo, Cout]`
//!
//! With `Cin_g = Cin/groups`, `Cout_g = Cout/groups` and `grp = co / Cout_g`:
//!
//! ```text
//! y[n,od,oh,ow,co] = b[co] + Σ_{kd,kh,kw,cig} x[n, od·s0 − p0 + kd·d0, oh·s1 − p1 + kh·d1,
//!                                               ow·s2 − p2 + kw·d2, grp·Cin_g + cig] · w[kd,kh,kw,cig,co]
//! ```
//! (taps that fall into the zero padding contribute nothing), and
//! `Do = ⌊(D + 2·p0 − d0·(kD − 1) − 1) / s0⌋ + 1` (likewise H, W).
//!
//! The weight layout puts Cout innermost so that a GPU invocation reads the weights of several
//! output channels as one vec4 load, and one tap's `[Cin_g, Cout]` block is a dense GEMM operand.
//! PyTorch's `[Cout, Cin/groups, kD, kH, kW]` converts with [`import_pytorch_weight`].

use super::Array;
use crate::ops::config::Conv3dConfig;

/// Output extent along one axis (None when the kernel does not fit the padded input).
pub fn out_extent(size: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d * (k - 1) + 1;
    let padded = size + 2 * p;
    if k == 0 || s == 0 || d == 0 || span > padded {
        return None;
    }
    Some((padded - span) / s + 1)
}

/// `[Cout, Cin_g, kD, kH, kW]` (PyTorch) → `[kD, kH, kW, Cin_g, Cout]` (cads).
pub fn import_pytorch_weight(data: &[f64], cout: usize, cin_g: usize, k: [usize; 3]) -> Vec<f64> {
    let mut out = vec![0.0; data.len()];
    for co in 0..cout {
        for ci in 0..cin_g {
            for a in 0..k[0] {
                for b in 0..k[1] {
                    for c in 0..k[2] {
                        let src = (((co * cin_g + ci) * k[0] + a) * k[1] + b) * k[2] + c;
                        let dst = (((a * k[1] + b) * k[2] + c) * cin_g + ci) * cout + co;
                        out[dst] = data[src];
                    }
                }
            }
        }
    }
    out
}

/// Iterate every (output voxel, tap, input channel, output channel) quadruple that touches the
/// input, calling `f(x_index, w_index, y_index)`. The three passes below are the same sum read
/// three ways, which is the whole content of conv backward.
fn for_each_term(
    x: &[usize],
    w: &[usize],
    cfg: &Conv3dConfig,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (n, dims, cin) = (x[0], [x[1], x[2], x[3]], x[4]);
    let (cin_g, cout) = (w[3], w[4]);
    let cout_g = cout / cfg.groups;
    let o: Vec<usize> = (0..3)
        .map(|a| {
            out_extent(
                dims[a],
                cfg.kernel[a],
                cfg.stride[a],
                cfg.padding[a],
                cfg.dilation[a],
            )
            .expect("kernel fits")
        })
        .collect();
    for b in 0..n {
        for od in 0..o[0] {
            for oh in 0..o[1] {
                for ow in 0..o[2] {
                    let out_pos = [od, oh, ow];
                    let y_base = (((b * o[0] + od) * o[1] + oh) * o[2] + ow) * cout;
                    for kd in 0..cfg.kernel[0] {
                        for kh in 0..cfg.kernel[1] {
                            for kw in 0..cfg.kernel[2] {
                                let tap = [kd, kh, kw];
                                let mut pos = [0usize; 3];
                                let mut inside = true;
                                for a in 0..3 {
                                    let i = (out_pos[a] * cfg.stride[a] + tap[a] * cfg.dilation[a])
                                        as isize
                                        - cfg.padding[a] as isize;
                                    inside &= i >= 0 && (i as usize) < dims[a];
                                    pos[a] = i.max(0) as usize;
                                }
                                if !inside {
                                    continue;
                                }
                                let x_base = (((b * dims[0] + pos[0]) * dims[1] + pos[1])
                                    * dims[2]
                                    + pos[2])
                                    * cin;
                                let w_base =
                                    ((kd * cfg.kernel[1] + kh) * cfg.kernel[2] + kw) * cin_g * cout;
                                for co in 0..cout {
                                    let grp = co / cout_g;
                                    for cig in 0..cin_g {
                                        f(
                                            x_base + grp * cin_g + cig,
                                            w_base + cig * cout + co,
                                            y_base + co,
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Output shape `[N, Do, Ho, Wo, Cout]`.
pub fn output_shape(x: &[usize], w: &[usize], cfg: &Conv3dConfig) -> Vec<usize> {
    let o: Vec<usize> = (0..3)
        .map(|a| {
            out_extent(
                x[a + 1],
                cfg.kernel[a],
                cfg.stride[a],
                cfg.padding[a],
                cfg.dilation[a],
            )
            .expect("kernel fits")
        })
        .collect();
    vec![x[0], o[0], o[1], o[2], w[4]]
}

/// y = conv3d(x, w) + b.
pub fn conv3d(x: &Array, w: &Array, bias: Option<&Array>, cfg: &Conv3dConfig) -> Array {
    let mut y = Array::zeros(&output_shape(&x.shape, &w.shape, cfg));
    let cout = w.shape[4];
    if let Some(b) = bias {
        for (i, v) in y.data.iter_mut().enumerate() {
            *v = b.data[i % cout];
        }
    }
    for_each_term(&x.shape, &w.shape, cfg, |xi, wi, yi| {
        y.data[yi] += x.data[xi] * w.data[wi]
    });
    y
}

/// dL/dx given dL/dy = g.
pub fn conv3d_backward_input(g: &Array, w: &Array, x_shape: &[usize], cfg: &Conv3dConfig) -> Array {
    let mut gx = Array::zeros(x_shape);
    for_each_term(x_shape, &w.shape, cfg, |xi, wi, yi| {
        gx.data[xi] += g.data[yi] * w.data[wi]
    });
    gx
}

/// dL/dw given dL/dy = g.
pub fn conv3d_backward_weight(
    g: &Array,
    x: &Array,
    w_shape: &[usize],
    cfg: &Conv3dConfig,
) -> Array {
    let mut gw = Array::zeros(w_shape);
    for_each_term(&x.shape, w_shape, cfg, |xi, wi, yi| {
        gw.data[wi] += g.data[yi] * x.data[xi]
    });
    gw
}

/// dL/db = Σ over every output voxel of g.
pub fn conv3d_backward_bias(g: &Array) -> Array {
    let c = *g.shape.last().expect("rank >= 1");
    let mut gb = Array::zeros(&[c]);
    for (i, v) in g.data.iter().enumerate() {
        gb.data[i % c] += v;
    }
    gb
}

/// Matmul over channels, `y[m, co] = Σ_ci x[m, ci] · w[ci, co]`: the independent oracle for a
/// 1×1×1 conv (shares no indexing with the conv loops).
pub fn matmul_channels(x: &[f64], w: &[f64], cin: usize, cout: usize) -> Vec<f64> {
    let m = x.len() / cin;
    let mut y = vec![0.0; m * cout];
    for r in 0..m {
        for k in 0..cin {
            for c in 0..cout {
                y[r * cout + c] += x[r * cin + k] * w[k * cout + c];
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{dot, numeric_gradient};
    use crate::util::{compare, Rng, FD_F64};

    fn rand(rng: &mut Rng, shape: &[usize]) -> Array {
        Array::new(
            (0..shape.iter().product())
                .map(|_| rng.range(-1.0, 1.0))
                .collect(),
            shape,
        )
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = Rng::new(31);
        let cfgs = [
            (
                Conv3dConfig {
                    kernel: [2, 3, 2],
                    stride: [1, 2, 3],
                    padding: [1, 0, 2],
                    dilation: [2, 1, 1],
                    groups: 1,
                },
                [1, 4, 5, 6, 3],
                2,
            ),
            (
                Conv3dConfig {
                    kernel: [1, 3, 3],
                    stride: [1, 1, 2],
                    padding: [0, 1, 1],
                    dilation: [1, 1, 2],
                    groups: 2,
                },
                [2, 2, 4, 5, 4],
                6,
            ),
            (
                Conv3dConfig {
                    kernel: [3, 3, 1],
                    stride: [2, 1, 1],
                    padding: [1, 1, 0],
                    dilation: [1, 1, 1],
                    groups: 3,
                },
                [1, 3, 3, 2, 3],
                3,
            ),
        ];
        for (cfg, xs, cout) in cfgs {
            let ws = [
                cfg.kernel[0],
                cfg.kernel[1],
                cfg.kernel[2],
                xs[4] / cfg.groups,
                cout,
            ];
            let x = rand(&mut rng, &xs);
            let w = rand(&mut rng, &ws);
            let b = rand(&mut rng, &[cout]);
            let y = conv3d(&x, &w, Some(&b), &cfg);
            let g = rand(&mut rng, &y.shape);
            let loss_x = |v: &[f64]| {
                dot(
                    &conv3d(&Array::new(v.to_vec(), &xs), &w, Some(&b), &cfg).data,
                    &g.data,
                )
            };
            let loss_w = |v: &[f64]| {
                dot(
                    &conv3d(&x, &Array::new(v.to_vec(), &ws), Some(&b), &cfg).data,
                    &g.data,
                )
            };
            let loss_b = |v: &[f64]| {
                dot(
                    &conv3d(&x, &w, Some(&Array::new(v.to_vec(), &[cout])), &cfg).data,
                    &g.data,
                )
            };
            let gx = conv3d_backward_input(&g, &w, &xs, &cfg);
            let gw = conv3d_backward_weight(&g, &x, &ws, &cfg);
            let gb = conv3d_backward_bias(&g);
            compare(
                "fd x",
                &gx.data,
                &numeric_gradient(loss_x, &x.data, 1e-6),
                FD_F64,
            )
            .unwrap();
            compare(
                "fd w",
                &gw.data,
                &numeric_gradient(loss_w, &w.data, 1e-6),
                FD_F64,
            )
            .unwrap();
            compare(
                "fd b",
                &gb.data,
                &numeric_gradient(loss_b, &b.data, 1e-6),
                FD_F64,
            )
            .unwrap();
        }
    }

    #[test]
    fn pytorch_import_moves_each_element_to_its_tap() {
        // w_pt[co, ci, a, b, c] = a distinct code; cads index [a, b, c, ci, co] must hold it.
        let (cout, cin, k) = (3, 2, [2, 1, 3]);
        let n = cout * cin * 6;
        let pt: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let ours = import_pytorch_weight(&pt, cout, cin, k);
        // Element (co 2, ci 1, a 1, b 0, c 2): PyTorch flat index ((co·Cin + ci)·2 + a)·3 + c
        // (kH = 1), cads flat index ((a·kW + c)·Cin + ci)·Cout + co with kH = 1.
        let (co, ci, a, c) = (2, 1, 1, 2);
        assert_eq!(
            ours[((a * 3 + c) * cin + ci) * cout + co],
            (((co * cin + ci) * 2 + a) * 3 + c) as f64
        );
    }
}
