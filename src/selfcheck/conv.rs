//! Convolution checks: every conv3d path ([`ConvPath::ALL`]: register tiles, implicit-GEMM tiles,
//! row kernels, the oracle) forward and the gradients of x, w and bias, on geometries that reach
//! each kernel family a plan can choose (plain 3³, small and with a split weight gradient,
//! strided with its sub-pixel input gradient, depthwise, pointwise with a ragged channel count,
//! anisotropic dilation, a non-overlapping patch embedding); and every transposed-conv path on
//! the UNet's k2s2 and an overlapping k3s2.

use super::{Comparison, Run};
use crate::error::Result;
use crate::ops::conv3d::{conv3d_with, ConvPath};
use crate::ops::conv_transpose3d::{conv_transpose3d_with, resolve_path, ConvTransposePath};
use crate::ops::{Conv3dConfig, ConvTranspose3dConfig};
use crate::reference::{conv3d as rc, conv_transpose3d as rct};
use crate::util::{F32_ACCUM, F32_GRAD};

/// (label, input [N, D, H, W, Cin], Cout, config).
fn conv_cases() -> [(&'static str, [usize; 5], usize, Conv3dConfig); 7] {
    [
        ("k3 s1 p1", [1, 5, 6, 7, 8], 12, Conv3dConfig::cube(3, 1, 1)),
        // 2048 output voxels: the weight gradients split their reduction over the voxels.
        (
            "k3 s1 p1, 2048 voxels",
            [1, 8, 16, 16, 8],
            8,
            Conv3dConfig::cube(3, 1, 1),
        ),
        ("k3 s2 p1", [2, 4, 6, 6, 4], 8, Conv3dConfig::cube(3, 2, 1)),
        (
            "depthwise k3 p1",
            [1, 4, 5, 6, 8],
            8,
            Conv3dConfig::cube(3, 1, 1).groups(8),
        ),
        (
            "pointwise to 6",
            [1, 3, 4, 5, 8],
            6,
            Conv3dConfig::cube(1, 1, 0),
        ),
        (
            "k1x3x3 dilation 1,2,2",
            [1, 3, 8, 8, 4],
            8,
            Conv3dConfig::new([1, 3, 3])
                .padding([0, 2, 2])
                .dilation([1, 2, 2]),
        ),
        (
            "patch k2 s2",
            [1, 4, 4, 6, 8],
            16,
            Conv3dConfig::cube(2, 2, 0),
        ),
    ]
}

pub(super) fn conv3d_variants(run: &mut Run) -> Result<()> {
    for &path in ConvPath::ALL {
        let name = path.name();
        if !run.wants("conv3d", &name) {
            continue;
        }
        let ran = path.runs_as(run.gpu).name();
        for (label, x, cout, cfg) in conv_cases() {
            let case = format!("{label} x{x:?} to {cout}");
            run.check("conv3d", &name, &ran, &case, |run, cmp| {
                conv3d_case(run, cmp, path, x, cout, &cfg)
            });
        }
    }
    Ok(())
}

fn conv3d_case(
    run: &mut Run,
    cmp: &mut Comparison,
    path: ConvPath,
    x_shape: [usize; 5],
    cout: usize,
    cfg: &Conv3dConfig,
) -> Result<()> {
    let k = cfg.kernel;
    let w_shape = [k[0], k[1], k[2], x_shape[4] / cfg.groups, cout];
    let (x, tx) = run.random(&x_shape, true)?;
    let (w, tw) = run.random(&w_shape, true)?;
    let (b, tb) = run.random(&[cout], true)?;
    let y = conv3d_with(&tx, &tw, Some(&tb), cfg, path)?;
    cmp.tensor("forward", &y, &rc::conv3d(&x, &w, Some(&b), cfg), F32_ACCUM);
    let (g, tg) = run.random(y.shape(), false)?;
    let grads = y.backward_with(&tg)?;
    let gx = rc::conv3d_backward_input(&g, &w, &x_shape, cfg);
    cmp.grad("grad x", &grads, &tx, &gx, F32_GRAD);
    let gw = rc::conv3d_backward_weight(&g, &x, &w_shape, cfg);
    cmp.grad("grad w", &grads, &tw, &gw, F32_GRAD);
    cmp.grad(
        "grad bias",
        &grads,
        &tb,
        &rc::conv3d_backward_bias(&g),
        F32_GRAD,
    );
    Ok(())
}

const TRANSPOSE_PATHS: [(ConvTransposePath, &str); 4] = [
    (ConvTransposePath::Auto, "auto"),
    (ConvTransposePath::General, "general"),
    (ConvTransposePath::K2s2, "k2s2"),
    (ConvTransposePath::Patches, "patches"),
];

fn transpose_name(path: ConvTransposePath) -> &'static str {
    TRANSPOSE_PATHS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("?", |(_, name)| name)
}

pub(super) fn conv_transpose3d_variants(run: &mut Run) -> Result<()> {
    let overlapping = ConvTranspose3dConfig {
        kernel: [3; 3],
        stride: [2; 3],
        padding: [1; 3],
        output_padding: [1; 3],
        dilation: [1; 3],
    };
    let cases = [
        ("k2 s2", [1, 3, 4, 5, 8], 8, ConvTranspose3dConfig::up2()),
        ("k3 s2 p1 op1", [1, 3, 3, 4, 4], 6, overlapping),
    ];
    for (path, name) in TRANSPOSE_PATHS {
        if !run.wants("conv_transpose3d", name) {
            continue;
        }
        for (label, x, co, cfg) in &cases {
            let case = format!("{label} x{x:?} to {co}");
            // A path that does not cover a config runs the general kernels (the op's docs).
            let ran = match resolve_path(run.gpu, cfg, x[4], *co, path) {
                Ok(p) => transpose_name(p),
                Err(e) => {
                    run.check("conv_transpose3d", name, "none", &case, |_, _| Err(e));
                    continue;
                }
            };
            run.check("conv_transpose3d", name, ran, &case, |run, cmp| {
                let (xa, tx) = run.random(x, true)?;
                let k = cfg.kernel;
                let (wa, tw) = run.random(&[k[0], k[1], k[2], x[4], *co], true)?;
                let y = conv_transpose3d_with(&tx, &tw, None, cfg, path)?;
                let want = rct::conv_transpose3d(&xa, &wa, cfg);
                cmp.tensor("forward", &y, &want, F32_ACCUM);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let (gx, gw) = rct::conv_transpose3d_backward(&xa, &wa, cfg, &g);
                cmp.grad("grad x", &grads, &tx, &gx, F32_GRAD);
                cmp.grad("grad w", &grads, &tw, &gw, F32_GRAD);
                Ok(())
            });
        }
    }
    Ok(())
}
