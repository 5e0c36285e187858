//! Input gradient of a patchify conv3d (kernel = stride, no padding, no dilation, groups 1: the
//! spatial-reduction convs of PVT, patch embeddings of ViTs) as one matmul and one copy.
//!
//! The patches do not overlap, so every input voxel inside the covered region belongs to exactly
//! one output voxel m and one tap t, and
//!
//!   gx[patch(m) + offset(t), ci] = Σ_co g[m, co] · w[t, ci, co]  =  (g · Wᵀ)[m, t·Cin + ci]
//!
//! with W = w viewed as [taps·Cin, Cout]. The product is [M, taps·Cin]; a strided copy puts each
//! row's taps back where they came from. Voxels past the last whole patch (an extent that is not
//! a multiple of the stride) get no gradient: gx starts at zero then. The gather kernel did the
//! same sum one input voxel at a time with a divisibility test per tap (measured 200 ms against
//! this form's 46 ms on the SR 8 bench case, lavapipe; docs/kernel-tuning.md).

use super::conv3d::Geometry;
use super::matmul::matmul;
use crate::error::Result;
use crate::tensor::{copy_region, Tensor};

/// Whether `geo` is a patchify conv with a stride above 1 on some axis (a 1×1×1 conv keeps the
/// flipped-conv path).
pub(crate) fn fits(geo: &Geometry) -> bool {
    let c = &geo.cfg;
    c.groups == 1
        && c.kernel == c.stride
        && c.padding == [0; 3]
        && c.dilation == [1; 3]
        && c.stride != [1; 3]
}

/// gx for upstream gradient `g` `[N, Do, Ho, Wo, Cout]` and weight `w` `[kD, kH, kW, Cin, Cout]`.
pub(crate) fn backward_input(g: &Tensor, w: &Tensor, geo: &Geometry) -> Result<Tensor> {
    let [n, d, h, wd, cin] = geo.x;
    let [_, od, oh, ow, cout] = geo.out;
    let [kd, kh, kw] = geo.cfg.kernel;
    let taps = kd * kh * kw;
    let m = geo.m_total();
    // cols [M, taps·Cin] = g [M, Cout] · Wᵀ
    let cols = matmul(
        &g.reshape(&[m, cout])?,
        &w.reshape(&[taps * cin, cout])?,
        false,
        true,
    )?;
    let exact = d == od * kd && h == oh * kh && wd == ow * kw;
    let gx = if exact {
        Tensor::uninit(g.gpu(), "conv3d_backward_input", &geo.x)?
    } else {
        Tensor::zeros(g.gpu(), &geo.x)?
    };
    // Region axes (output row, kd, oh, kh, ow, (kw, ci)): the source walks cols row-major, the
    // destination walks the patches. (kw, ci) is contiguous on both sides.
    let row = taps * cin;
    let src_strides = [oh * ow * row, kh * kw * cin, ow * row, kw * cin, row, 1];
    let dst_strides = [
        kd * h * wd * cin,
        h * wd * cin,
        kh * wd * cin,
        wd * cin,
        kw * cin,
        1,
    ];
    if exact || n == 1 {
        // Batch and output depth merge into one axis when D = Do·kD (or there is one sample).
        let shape = [n * od, kd, oh, kh, ow, kw * cin];
        copy_region(
            "conv3d_backward_input",
            &cols,
            0,
            &src_strides,
            &gx,
            0,
            &dst_strides,
            &shape,
        )?;
    } else {
        let shape = [od, kd, oh, kh, ow, kw * cin];
        for b in 0..n {
            copy_region(
                "conv3d_backward_input",
                &cols,
                b * od * oh * ow * row,
                &src_strides,
                &gx,
                b * d * h * wd * cin,
                &dst_strides,
                &shape,
            )?;
        }
    }
    Ok(gx)
}
