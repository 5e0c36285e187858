//! Input gradient of a strided conv3d as stride-1 convolutions on the fast kernels, one per
//! output parity class ("sub-pixel" decomposition), instead of a gather that tests every tap for
//! divisibility.
//!
//! Per axis (stride s, kernel K, padding p, dilation 1, input extent X, output extent O): an input
//! coordinate i = s·j + r (r ∈ [0, s)) receives gradient from the taps k ≡ r + p (mod s), i.e.
//! k = k_r + s·t with k_r = (r + p) mod s and t < T_r = ⌈(K − k_r) / s⌉, from the output
//! o = j + c_r − t, c_r = (r + p − k_r) / s. So
//!
//!   gx[s·j + r] = Σ_t g[j + c_r − t] · w[k_r + s·t]ᵀ
//!
//! which is a stride-1 correlation of g with the sub-kernel v[u] = w[k_r + s·(T_r − 1 − u)]ᵀ and
//! left padding P_l = T_r − 1 − c_r. With the flipped, transposed weight wf[K − 1 − k] = w[k]ᵀ
//! (the stride-1 input gradient's), v is the strided slice of wf starting at K − 1 − k_r −
//! s·(T_r − 1) with step s. The conv op pads both sides equally, so it runs with P = max(P_l,
//! P_r, 0) (P_r the right padding that yields all J_r = ⌈(X − r) / s⌉ outputs) and the class's
//! outputs start at P − P_l. Each class is scattered into gx at i = s·j + r; classes with no
//! taps (T_r = 0 when K < s) keep the zero gradient.
//!
//! Only useful FLOPs are computed (the gather form spends 1 − 1/s³ of its taps on misses). Every
//! class conv must take a fast kernel: [`plan`] checks that from the shapes before any work, and
//! conv3d.rs's plan uses the gather kernel when it says no.

use super::conv3d::{Conv3dConfig, Geometry};
use super::conv3d_fast::{self, FastForward};
use crate::error::Result;
use crate::tensor::{contiguous_strides, copy_region, Tensor};

/// One axis of one parity class.
#[derive(Clone, Copy, Debug)]
struct ClassAxis {
    /// Residue r of the input coordinates of the class.
    r: usize,
    /// Sub-kernel taps T_r (0: the class gets no gradient).
    taps: usize,
    /// First tap of the sub-kernel in the flipped weight.
    wf_start: usize,
    /// Symmetric padding of the class conv and where the class's outputs start in its output.
    pad: usize,
    out_start: usize,
    /// Input coordinates in the class, J_r.
    count: usize,
}

fn class_axis(r: usize, s: usize, k: usize, p: usize, x: usize, o: usize) -> ClassAxis {
    let k_r = (r + p) % s;
    let count = (x - r).div_ceil(s);
    if k_r >= k || count == 0 {
        return ClassAxis {
            r,
            taps: 0,
            wf_start: 0,
            pad: 0,
            out_start: 0,
            count,
        };
    }
    let taps = (k - k_r).div_ceil(s);
    let c_r = (r + p - k_r) / s;
    let pad_l = taps as isize - 1 - c_r as isize;
    // Output length with left pad P_l and right pad P_r is O + P_l + P_r − T + 1 = J_r.
    let pad_r = count as isize - o as isize - pad_l + taps as isize - 1;
    let pad = pad_l.max(pad_r).max(0);
    ClassAxis {
        r,
        taps,
        wf_start: k - 1 - k_r - s * (taps - 1),
        pad: pad as usize,
        out_start: (pad - pad_l) as usize,
        count,
    }
}

/// One parity class: its three axes, the geometry of its stride-1 conv and that conv's kernel.
#[derive(Clone, Copy, Debug)]
struct ClassPlan {
    axes: [ClassAxis; 3],
    geo: Geometry,
    kernel: FastForward,
}

/// The resolved decomposition: every class that receives gradient, each with a fast kernel.
#[derive(Clone, Debug)]
pub(crate) struct SubpixelPlan {
    classes: Vec<ClassPlan>,
}

impl SubpixelPlan {
    /// The kernel of the first class conv (every class is planned by the same rule on the same
    /// channel counts, so they share a kernel family).
    pub(crate) fn first_kernel(&self) -> Option<FastForward> {
        self.classes.first().map(|c| c.kernel)
    }
}

/// Plan the decomposition of `geo`'s input gradient, each class conv on the kernel `choose`
/// picks for its geometry, or `None` when it picks none for some class (then the caller plans
/// the gather kernel instead; nothing has run yet).
pub(crate) fn plan(
    geo: &Geometry,
    choose: &dyn Fn(&Geometry) -> Option<FastForward>,
) -> Result<Option<SubpixelPlan>> {
    let c = &geo.cfg;
    let axes: Vec<Vec<ClassAxis>> = (0..3)
        .map(|a| {
            (0..c.stride[a])
                .map(|r| {
                    class_axis(
                        r,
                        c.stride[a],
                        c.kernel[a],
                        c.padding[a],
                        geo.x[a + 1],
                        geo.out[a + 1],
                    )
                })
                .collect()
        })
        .collect();
    let mut classes = Vec::new();
    for ad in &axes[0] {
        for ah in &axes[1] {
            for aw in &axes[2] {
                let cls = [*ad, *ah, *aw];
                if cls.iter().any(|a| a.taps == 0 || a.count == 0) {
                    continue;
                }
                // The class conv's weight is a [T_d, T_h, T_w, Cout/groups, Cin] slice of the
                // flipped weight; its input is g.
                let taps = cls.map(|a| a.taps);
                let v_shape = [taps[0], taps[1], taps[2], geo.cout_g, geo.x[4]];
                let cfg = Conv3dConfig {
                    kernel: taps,
                    stride: [1; 3],
                    padding: cls.map(|a| a.pad),
                    dilation: [1; 3],
                    groups: c.groups,
                };
                let geo_r = Geometry::new("conv3d_backward_input", &geo.out, &v_shape, &cfg)?;
                let Some(kernel) = choose(&geo_r) else {
                    return Ok(None);
                };
                classes.push(ClassPlan {
                    axes: cls,
                    geo: geo_r,
                    kernel,
                });
            }
        }
    }
    Ok(Some(SubpixelPlan { classes }))
}

/// gx (zero-initialised, shape `geo.x`) from g and the flipped, transposed weight `wf`
/// ([kD, kH, kW, Cout/groups, Cin]), as planned by [`plan`].
pub(crate) fn backward_input(
    g: &Tensor,
    wf: &Tensor,
    gx: &Tensor,
    geo: &Geometry,
    plan: &SubpixelPlan,
) -> Result<()> {
    let c = &geo.cfg;
    let wf_strides = contiguous_strides(wf.shape());
    let gx_strides = contiguous_strides(&geo.x);
    for class in &plan.classes {
        let cls = &class.axes;
        let geo_r = &class.geo;
        // v = wf[start + s·u] per spatial axis (strided slice of the flipped weight).
        let v = Tensor::uninit(g.gpu(), "conv3d_backward_input", &geo_r.w_shape())?;
        let offset: usize = (0..3).map(|a| cls[a].wf_start * wf_strides[a]).sum();
        let mut in_strides = wf_strides.clone();
        for (st, s) in in_strides.iter_mut().zip(c.stride) {
            *st *= s;
        }
        copy_region(
            "conv3d_backward_input",
            wf,
            offset,
            &in_strides,
            &v,
            0,
            &contiguous_strides(v.shape()),
            v.shape(),
        )?;
        let out = Tensor::uninit(g.gpu(), "conv3d_backward_input", &geo_r.out)?;
        conv3d_fast::forward(g, &v, None, &out, geo_r, class.kernel)?;
        // Scatter the class's J_r outputs (from out_start) to gx[s·j + r].
        let out_strides = contiguous_strides(&geo_r.out);
        let src_offset: usize = (0..3).map(|a| cls[a].out_start * out_strides[a + 1]).sum();
        let dst_offset: usize = (0..3).map(|a| cls[a].r * gx_strides[a + 1]).sum();
        let mut dst_strides = gx_strides.clone();
        for a in 0..3 {
            dst_strides[a + 1] *= c.stride[a];
        }
        let region = [geo.x[0], cls[0].count, cls[1].count, cls[2].count, geo.x[4]];
        copy_region(
            "conv3d_backward_input",
            &out,
            src_offset,
            &out_strides,
            gx,
            dst_offset,
            &dst_strides,
            &region,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{backward_input, class_axis, plan};
    use crate::ops::conv3d::{
        backward_input_raw, flipped_weight, Conv3dConfig, ConvPlan, Geometry,
    };
    use crate::util::{compare, Rng, F32_ACCUM};
    use crate::Tensor;

    /// Strided configs whose class convs all take the fast path (Cin/groups % 8 == 0): the
    /// decomposition must be planned (every class on a fast kernel) and match the gather kernel.
    #[test]
    fn strided_input_gradient_matches_the_gather_kernel() {
        let gpu = crate::gpu::unit_test_gpu();
        let mut rng = Rng::new(71);
        let cases: [([usize; 5], usize, Conv3dConfig); 4] = [
            // (x shape, Cout, config): the stem (k7 s2 p3), the patch embed (k3 s2 p1), mixed
            // per-axis strides with K < s on one axis, groups.
            ([2, 8, 10, 9, 8], 8, Conv3dConfig::cube(7, 2, 3)),
            ([1, 7, 6, 9, 16], 8, Conv3dConfig::cube(3, 2, 1)),
            (
                [1, 9, 8, 7, 8],
                16,
                Conv3dConfig {
                    kernel: [3, 1, 4],
                    stride: [2, 3, 3],
                    padding: [1, 0, 2],
                    dilation: [1; 3],
                    groups: 1,
                },
            ),
            (
                [2, 6, 6, 6, 16],
                16,
                Conv3dConfig {
                    groups: 2,
                    ..Conv3dConfig::cube(3, 2, 1)
                },
            ),
        ];
        for (x, cout, cfg) in cases {
            let w_shape = [
                cfg.kernel[0],
                cfg.kernel[1],
                cfg.kernel[2],
                x[4] / cfg.groups,
                cout,
            ];
            let geo = Geometry::new("test", &x, &w_shape, &cfg).unwrap();
            let w_data = rng.vec_uniform(w_shape.iter().product(), -1.0, 1.0);
            let w = Tensor::from_slice(&gpu, &w_data, &w_shape).unwrap();
            let g_data = rng.vec_uniform(geo.out.iter().product(), -1.0, 1.0);
            let g = Tensor::from_slice(&gpu, &g_data, &geo.out).unwrap();
            let gx = Tensor::zeros(&gpu, &geo.x).unwrap();
            let sub = plan(&geo, &|g| crate::ops::conv3d_fast::plan_forward(g, None))
                .unwrap()
                .unwrap_or_else(|| panic!("{cfg:?}: no fast kernel for some class conv"));
            backward_input(&g, &flipped_weight(&w, &geo).unwrap(), &gx, &geo, &sub).unwrap();
            let naive = ConvPlan::naive(geo);
            let want = backward_input_raw(&g, &w, &naive).unwrap();
            let to64 = |t: &Tensor| -> Vec<f64> {
                t.to_vec().unwrap().iter().map(|&v| v as f64).collect()
            };
            if let Err(msg) = compare(&format!("{cfg:?}"), &to64(&gx), &to64(&want), F32_ACCUM) {
                panic!("{msg}");
            }
        }
    }

    /// Brute force: the taps and outputs each input coordinate of the class receives from.
    #[test]
    fn class_axes_cover_exactly_the_contributing_taps() {
        for (s, k, p, x) in [
            (2, 7, 3, 32),
            (2, 3, 1, 16),
            (3, 5, 2, 11),
            (2, 1, 0, 9),
            (3, 2, 0, 10),
        ] {
            let o = (x + 2 * p - k) / s + 1;
            for r in 0..s {
                let a = class_axis(r, s, k, p, x, o);
                for j in 0..a.count {
                    let i = s * j + r;
                    // Contributions by the definition: o' = (i + p − k') / s when exact.
                    let mut want: Vec<(usize, usize)> = (0..k)
                        .filter(|&kk| i + p >= kk && (i + p - kk) % s == 0 && (i + p - kk) / s < o)
                        .map(|kk| (kk, (i + p - kk) / s))
                        .collect();
                    // Contributions by the class conv: output index out_start + j reads padded
                    // g at (out_start + j) + u − pad for sub-kernel tap u (flipped weight index
                    // wf_start + s·u, i.e. original tap k − 1 − that).
                    let mut got = Vec::new();
                    for u in 0..a.taps {
                        let gi = (a.out_start + j + u) as isize - a.pad as isize;
                        if gi >= 0 && (gi as usize) < o {
                            got.push((k - 1 - (a.wf_start + s * u), gi as usize));
                        }
                    }
                    want.sort();
                    got.sort();
                    assert_eq!(got, want, "s {s} k {k} p {p} x {x} r {r} j {j}");
                }
            }
        }
    }
}
