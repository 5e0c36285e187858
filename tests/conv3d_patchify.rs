//! The input gradient of patchify convs (kernel = stride, no padding or dilation, groups 1: PVT's
//! spatial reduction) as one matmul and a scatter copy (src/ops/conv3d_patchify.rs), against
//! src/reference/conv3d.rs: extents that are multiples of the stride (batch and depth merged in
//! one copy) and extents that are not (the uncovered voxels get zero; one copy per sample), batch
//! 1 and 2, anisotropic patches, on the default path and the CPU `rows` path; an identity sharing
//! no code with either (a one-hot weight routes g to one tap of each patch); and the plan's
//! choice.

mod common;

use cads::ops::conv3d::{conv3d_with, ConvPath, RowsLanes};
use cads::ops::Conv3dConfig;
use cads::reference::conv3d as rc;
use cads::util::{Rng, F32_GRAD};
use common::*;

fn patchify(k: [usize; 3]) -> Conv3dConfig {
    Conv3dConfig::new(k).stride(k)
}

#[test]
fn patchify_input_gradient_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(191);
    for path in [
        ConvPath::Fast,
        ConvPath::Rows(RowsLanes::Two),
        ConvPath::Rows(RowsLanes::Four),
        ConvPath::Rows(RowsLanes::FourDeep),
        ConvPath::Rows(RowsLanes::Wide),
    ] {
        for (x_shape, cout, k) in [
            // exact: 2 × (2·2·3) patches of 2×4×4 … merged batch and depth
            ([2, 4, 8, 12, 8], 12, [2, 4, 4]),
            // D, H, W not multiples of the patch: trailing voxels get no gradient; batch 2
            ([2, 5, 9, 7, 4], 8, [2, 4, 3]),
            // the same with one sample (batch and depth merge even when not exact)
            ([1, 5, 9, 7, 4], 8, [1, 4, 3]),
        ] {
            let cfg = patchify(k);
            let cin = x_shape[4];
            let ws = [k[0], k[1], k[2], cin, cout];
            let (x, tx) = random_param(&gpu, &mut rng, &x_shape, -1.0, 1.0);
            let (w, tw) = random_param(&gpu, &mut rng, &ws, -1.0, 1.0);
            let y = conv3d_with(&tx, &tw, None, &cfg, path).unwrap();
            let (g, tg) = random_pair(&gpu, &mut rng, y.shape(), -1.0, 1.0);
            let grads = y.backward_with(&tg).unwrap();
            let what = format!("{path:?} {x_shape:?}→{cout} k=s={k:?}");
            assert_close(
                &format!("{what} grad x"),
                &grads.get(&tx).unwrap().to_vec().unwrap(),
                &rc::conv3d_backward_input(&g, &w, &x_shape, &cfg).data,
                F32_GRAD,
            );
            assert_close(
                &format!("{what} grad w"),
                &grads.get(&tw).unwrap().to_vec().unwrap(),
                &rc::conv3d_backward_weight(&g, &x, &ws, &cfg).data,
                F32_GRAD,
            );
        }
    }
}

/// With w = 1 at (tap t*, ci*, co*) and 0 elsewhere, gx is g[.., co*] at tap t* of each patch,
/// channel ci*, and exactly 0 everywhere else (one product per element: exact).
#[test]
fn a_one_hot_weight_routes_the_gradient_to_one_tap_of_each_patch() {
    let gpu = gpu();
    let mut rng = Rng::new(192);
    let (k, cin, cout) = ([2, 2, 2], 3, 5);
    let x_shape = [2, 4, 6, 5, cin];
    // tap (kd, kh, kw) = (1, 0, 1): index (1·2 + 0)·2 + 1 = 5
    let (t_star, ci_star, co_star) = (5, 2, 3);
    let mut w = vec![0.0f32; 8 * cin * cout];
    w[(t_star * cin + ci_star) * cout + co_star] = 1.0;
    let tw = cads::Tensor::from_slice(&gpu, &w, &[2, 2, 2, cin, cout]).unwrap();
    let (_, tx) = random_param(&gpu, &mut rng, &x_shape, -1.0, 1.0);
    let y = conv3d_with(&tx, &tw, None, &patchify(k), ConvPath::Fast).unwrap();
    assert_eq!(y.shape(), &[2, 2, 3, 2, cout]);
    let g = rng.vec_uniform(y.numel(), -1.0, 1.0);
    let tg = cads::Tensor::from_slice(&gpu, &g, y.shape()).unwrap();
    let gx = y
        .backward_with(&tg)
        .unwrap()
        .get(&tx)
        .unwrap()
        .to_vec()
        .unwrap();
    let (d, h, wd) = (4, 6, 5);
    for (i, v) in gx.iter().enumerate() {
        let ci = i % cin;
        let iw = (i / cin) % wd;
        let ih = (i / cin / wd) % h;
        let id = (i / cin / wd / h) % d;
        let b = i / cin / wd / h / d;
        let tap = ((id % 2) * 2 + ih % 2) * 2 + iw % 2;
        let want = if ci == ci_star && tap == t_star && iw < 4 {
            g[(((b * 2 + id / 2) * 3 + ih / 2) * 2 + iw / 2) * cout + co_star]
        } else {
            0.0
        };
        assert_eq!(*v, want, "gx[{b}, {id}, {ih}, {iw}, {ci}]");
    }
}
