//! 1×1×1 convs with Cout % 4 ≠ 0 (a segmentation head's classes) as transposed matmuls
//! (src/ops/conv3d_pointwise.rs) against src/reference/conv3d.rs: forward with and without bias,
//! the input, weight and bias gradients through the tape, on every fast family; by the kernels
//! that ran, no naive conv kernel on those shapes, and the naive ones still where the pointwise
//! form does not fit (Cin % 4 ≠ 0).

mod common;

use cads::ops::conv3d::{conv3d_with, ConvPath, RowsLanes};
use cads::ops::Conv3dConfig;
use cads::reference::conv3d as rc;
use cads::util::{Rng, F32_ACCUM, F32_GRAD};
use cads::Gpu;
use common::*;

fn naive(kernels: &[String]) -> bool {
    kernels
        .iter()
        .any(|k| k.ends_with("_naive") && k.starts_with("conv3d"))
}

/// (input [N, D, H, W, Cin], Cout, bias): 2, 3, 5 and 14 classes; odd voxel counts (the
/// forward's product has the voxels as columns, 105 and 63 are not in fours).
const CASES: [([usize; 5], usize, bool); 5] = [
    ([2, 3, 5, 7, 8], 2, true),
    ([1, 4, 4, 4, 12], 3, true),
    ([1, 3, 3, 7, 4], 5, false),
    ([2, 8, 16, 16, 32], 14, true),
    ([1, 1, 1, 1, 16], 1, true),
];

fn check(gpu: &Gpu, path: ConvPath, rng: &mut Rng) {
    let cfg = Conv3dConfig::cube(1, 1, 0);
    for (xs, cout, with_bias) in CASES {
        let ws = [1, 1, 1, xs[4], cout];
        let what = format!("{path:?} {xs:?} → {cout}");
        let (x, tx) = random_param(gpu, rng, &xs, -1.0, 1.0);
        let (w, tw) = random_param(gpu, rng, &ws, -1.0, 1.0);
        let (b, tb) = random_param(gpu, rng, &[cout], -1.0, 1.0);
        let bias = with_bias.then_some(&tb);
        let (y, kernels) = ran(gpu, || conv3d_with(&tx, &tw, bias, &cfg, path).unwrap());
        let want = rc::conv3d(&x, &w, with_bias.then_some(&b), &cfg);
        assert_eq!(y.shape(), want.shape.as_slice(), "{what}");
        assert_close(
            &format!("{what} y"),
            &y.to_vec().unwrap(),
            &want.data,
            F32_ACCUM,
        );
        let (g, tg) = random_pair(gpu, rng, y.shape(), -1.0, 1.0);
        let (grads, back) = ran(gpu, || y.backward_with(&tg).unwrap());
        assert!(
            !naive(&kernels) && !naive(&back),
            "{what}: {kernels:?} {back:?}"
        );
        let gx = rc::conv3d_backward_input(&g, &w, &xs, &cfg);
        let gw = rc::conv3d_backward_weight(&g, &x, &ws, &cfg);
        let got = |t| grads.get(t).unwrap().to_vec().unwrap();
        assert_close(&format!("{what} gx"), &got(&tx), &gx.data, F32_GRAD);
        assert_close(&format!("{what} gw"), &got(&tw), &gw.data, F32_GRAD);
        if with_bias {
            let gb = rc::conv3d_backward_bias(&g);
            assert_close(&format!("{what} gb"), &got(&tb), &gb.data, F32_GRAD);
        }
    }
}

#[test]
fn pointwise_heads_match_the_reference_on_every_fast_family() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(61);
    for path in [
        ConvPath::Fast,
        ConvPath::Rows(RowsLanes::Four),
        ConvPath::Rows(RowsLanes::Wide),
    ] {
        check(&gpu, path.runs_as(&gpu), &mut rng);
    }
}

#[test]
fn a_pointwise_conv_on_few_input_channels_keeps_the_naive_kernels() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(67);
    let cfg = Conv3dConfig::cube(1, 1, 0);
    let (x, tx) = random_param(&gpu, &mut rng, &[1, 2, 3, 4, 3], -1.0, 1.0);
    let (w, tw) = random_param(&gpu, &mut rng, &[1, 1, 1, 3, 2], -1.0, 1.0);
    let (y, kernels) = ran(&gpu, || {
        conv3d_with(&tx, &tw, None, &cfg, ConvPath::Fast).unwrap()
    });
    assert!(naive(&kernels), "{kernels:?}");
    let want = rc::conv3d(&x, &w, None, &cfg);
    assert_close("Cin 3 → 2", &y.to_vec().unwrap(), &want.data, F32_ACCUM);
}
