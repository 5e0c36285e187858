//! conv3d / conv2d on the GPU against src/reference/conv3d.rs, forward and all three backward
//! passes, on shapes that break indexing; the fast (tiled) path against the naive one, every tile
//! variant included; the adjoint identity; a 1×1×1 conv against a CPU matmul; typed errors. The
//! PyTorch weight layout and the `nn` conv layers are in tests/conv3d_nn.rs.

mod common;

use cads::ops::conv3d::{conv3d_with, ConvPath, ForwardTile, WeightTile};
use cads::ops::{conv2d, conv3d, Conv2dConfig, Conv3dConfig};
use cads::reference::{conv3d as rc, gradcheck::dot, Array};
use cads::util::{Rng, F32_ACCUM, F32_GRAD};
use cads::Tensor;
use common::*;

/// (input shape [N, D, H, W, Cin], Cout, config)
fn cases() -> Vec<([usize; 5], usize, Conv3dConfig)> {
    vec![
        // odd/prime extents, per-axis stride / padding / dilation [1,2,3]
        (
            [2, 5, 7, 11, 3],
            5,
            Conv3dConfig {
                kernel: [3, 2, 3],
                stride: [1, 2, 3],
                padding: [1, 2, 3],
                dilation: [1, 2, 3],
                groups: 1,
            },
        ),
        (
            [1, 7, 5, 6, 6],
            9,
            Conv3dConfig {
                kernel: [3, 3, 3],
                stride: [2, 1, 1],
                padding: [0, 1, 2],
                dilation: [3, 2, 1],
                groups: 3,
            },
        ),
        // depthwise
        ([2, 3, 5, 7, 8], 8, Conv3dConfig::cube(3, 1, 1).groups(8)),
        // stride-1 c4 shapes that take the tiled kernels (Cout multiple of 16)
        ([2, 5, 6, 7, 8], 16, Conv3dConfig::cube(3, 1, 1)),
        (
            [1, 4, 9, 5, 12],
            32,
            Conv3dConfig {
                kernel: [3, 1, 3],
                stride: [1, 1, 1],
                padding: [1, 0, 2],
                dilation: [1, 1, 2],
                groups: 1,
            },
        ),
        ([2, 3, 5, 7, 16], 32, Conv3dConfig::cube(3, 1, 1).groups(2)),
        // strided with Cin = 1 (stem-like) and k = s (spatial reduction)
        ([1, 9, 11, 10, 1], 16, Conv3dConfig::cube(5, 2, 2)),
        ([2, 8, 8, 16, 4], 16, Conv3dConfig::cube(4, 4, 0)),
        ([1, 6, 7, 5, 8], 32, Conv3dConfig::cube(3, 2, 1)),
    ]
}

fn run_case(path: ConvPath, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    for (xs, cout, cfg) in cases() {
        let ws = [
            cfg.kernel[0],
            cfg.kernel[1],
            cfg.kernel[2],
            xs[4] / cfg.groups,
            cout,
        ];
        let (x, tx) = random_param(&gpu, &mut rng, &xs, -1.0, 1.0);
        let (w, tw) = random_param(&gpu, &mut rng, &ws, -1.0, 1.0);
        let (b, tb) = random_param(&gpu, &mut rng, &[cout], -1.0, 1.0);
        let y = conv3d_with(&tx, &tw, Some(&tb), &cfg, path).unwrap();
        let want = rc::conv3d(&x, &w, Some(&b), &cfg);
        assert_eq!(y.shape(), want.shape.as_slice(), "{cfg:?}");
        let what = format!("{path:?} {xs:?}→{cout} {cfg:?}");
        assert_close(
            &format!("{what} forward"),
            &y.to_vec().unwrap(),
            &want.data,
            F32_ACCUM,
        );
        let (g, tg) = random_pair(&gpu, &mut rng, y.shape(), -1.0, 1.0);
        let grads = y.backward_with(&tg).unwrap();
        let gx = rc::conv3d_backward_input(&g, &w, &xs, &cfg);
        let gw = rc::conv3d_backward_weight(&g, &x, &ws, &cfg);
        let gb = rc::conv3d_backward_bias(&g);
        assert_close(
            &format!("{what} grad x"),
            &grads.get(&tx).unwrap().to_vec().unwrap(),
            &gx.data,
            F32_GRAD,
        );
        assert_close(
            &format!("{what} grad w"),
            &grads.get(&tw).unwrap().to_vec().unwrap(),
            &gw.data,
            F32_GRAD,
        );
        assert_close(
            &format!("{what} grad b"),
            &grads.get(&tb).unwrap().to_vec().unwrap(),
            &gb.data,
            F32_GRAD,
        );
    }
}

#[test]
fn naive_kernels_match_reference_forward_and_backward() {
    run_case(ConvPath::Naive, 41);
}

#[test]
fn fast_kernels_match_reference_forward_and_backward() {
    run_case(ConvPath::Fast, 42);
}

#[test]
fn fast_path_matches_naive_on_a_larger_shape() {
    // Big enough for many workgroups and the split weight-gradient reduction.
    let gpu = gpu();
    let mut rng = Rng::new(43);
    let cfg = Conv3dConfig::cube(3, 1, 1);
    let (_, tx) = random_param(&gpu, &mut rng, &[2, 9, 17, 13, 16], -1.0, 1.0);
    let (_, tw) = random_param(&gpu, &mut rng, &[3, 3, 3, 16, 32], -1.0, 1.0);
    let fast = conv3d_with(&tx, &tw, None, &cfg, ConvPath::Fast).unwrap();
    let naive = conv3d_with(&tx, &tw, None, &cfg, ConvPath::Naive).unwrap();
    let (_, tg) = random_pair(&gpu, &mut rng, fast.shape(), -1.0, 1.0);
    let want: Vec<f64> = naive.to_vec().unwrap().iter().map(|&v| v as f64).collect();
    assert_close(
        "fast vs naive forward",
        &fast.to_vec().unwrap(),
        &want,
        F32_ACCUM,
    );
    let gf = fast.backward_with(&tg).unwrap();
    let gn = naive.backward_with(&tg).unwrap();
    for (t, name) in [(&tx, "x"), (&tw, "w")] {
        let want: Vec<f64> = gn
            .get(t)
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(
            &format!("fast vs naive grad {name}"),
            &gf.get(t).unwrap().to_vec().unwrap(),
            &want,
            F32_GRAD,
        );
    }
}

/// The tiled forward splits its tap reduction across workgroups when the output is small (the
/// shapes above); this one has enough output tiles (≥ 1024 workgroups) to run unsplit, with bias.
#[test]
fn fast_forward_unsplit_matches_naive_with_bias() {
    let gpu = gpu();
    let mut rng = Rng::new(44);
    let cfg = Conv3dConfig::cube(1, 1, 0);
    let (_, tx) = random_pair(&gpu, &mut rng, &[1, 16, 64, 64, 4], -1.0, 1.0);
    let (_, tw) = random_pair(&gpu, &mut rng, &[1, 1, 1, 4, 64], -1.0, 1.0);
    let (_, tb) = random_pair(&gpu, &mut rng, &[64], -1.0, 1.0);
    let fast = conv3d_with(&tx, &tw, Some(&tb), &cfg, ConvPath::Fast).unwrap();
    let naive = conv3d_with(&tx, &tw, Some(&tb), &cfg, ConvPath::Naive).unwrap();
    let want: Vec<f64> = naive.to_vec().unwrap().iter().map(|&v| v as f64).collect();
    assert_close(
        "fast (unsplit) vs naive forward",
        &fast.to_vec().unwrap(),
        &want,
        F32_ACCUM,
    );
}

/// Depthwise convs (groups = C, C % 4 == 0) take their own vec4 weight-gradient kernel on the
/// fast path: strides, padding, dilation and batch against the naive path.
#[test]
fn depthwise_weight_gradient_matches_naive() {
    let gpu = gpu();
    let mut rng = Rng::new(45);
    for (x, cfg) in [
        (
            [2, 5, 7, 6, 8],
            Conv3dConfig {
                groups: 8,
                ..Conv3dConfig::cube(3, 1, 1)
            },
        ),
        (
            [1, 9, 8, 7, 12],
            Conv3dConfig {
                kernel: [3, 2, 3],
                stride: [2, 1, 3],
                padding: [1, 0, 2],
                dilation: [1, 2, 1],
                groups: 12,
            },
        ),
    ] {
        let c = x[4];
        let w_shape = [cfg.kernel[0], cfg.kernel[1], cfg.kernel[2], 1, c];
        let (_, tx) = random_param(&gpu, &mut rng, &x, -1.0, 1.0);
        let (_, tw) = random_param(&gpu, &mut rng, &w_shape, -1.0, 1.0);
        let fast = conv3d_with(&tx, &tw, None, &cfg, ConvPath::Fast).unwrap();
        let naive = conv3d_with(&tx, &tw, None, &cfg, ConvPath::Naive).unwrap();
        let (_, tg) = random_pair(&gpu, &mut rng, fast.shape(), -1.0, 1.0);
        let gf = fast.backward_with(&tg).unwrap();
        let gn = naive.backward_with(&tg).unwrap();
        let want: Vec<f64> = gn
            .get(&tw)
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(
            &format!("depthwise {cfg:?} grad w"),
            &gf.get(&tw).unwrap().to_vec().unwrap(),
            &want,
            F32_GRAD,
        );
    }
}

#[test]
fn adjoint_identity_holds() {
    // ⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ with convᵀ the GPU input-gradient pass (no bias).
    let gpu = gpu();
    let mut rng = Rng::new(44);
    for (xs, cout, cfg) in cases() {
        let ws = [
            cfg.kernel[0],
            cfg.kernel[1],
            cfg.kernel[2],
            xs[4] / cfg.groups,
            cout,
        ];
        let (x, tx) = random_param(&gpu, &mut rng, &xs, -1.0, 1.0);
        let (_, tw) = random_pair(&gpu, &mut rng, &ws, -1.0, 1.0);
        let out = conv3d(&tx, &tw, None, &cfg).unwrap();
        let (yv, ty) = random_pair(&gpu, &mut rng, out.shape(), -1.0, 1.0);
        let ax: Vec<f64> = out.to_vec().unwrap().iter().map(|&v| v as f64).collect();
        let aty: Vec<f64> = out
            .backward_with(&ty)
            .unwrap()
            .get(&tx)
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let (lhs, rhs) = (dot(&ax, &yv.data), dot(&x.data, &aty));
        assert!(
            (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
            "{xs:?} {cfg:?}: ⟨Ax,y⟩ = {lhs}, ⟨x,Aᵀy⟩ = {rhs}"
        );
    }
}

#[test]
fn pointwise_conv_is_a_channel_matmul() {
    let gpu = gpu();
    let mut rng = Rng::new(45);
    for (cin, cout) in [(5, 7), (16, 32), (8, 16)] {
        let xs = [2, 3, 5, 7, cin];
        let (x, tx) = random_pair(&gpu, &mut rng, &xs, -1.0, 1.0);
        let (w, tw) = random_pair(&gpu, &mut rng, &[1, 1, 1, cin, cout], -1.0, 1.0);
        let y = conv3d(&tx, &tw, None, &Conv3dConfig::new([1, 1, 1])).unwrap();
        let want = rc::matmul_channels(&x.data, &w.data, cin, cout);
        assert_close(
            &format!("1x1x1 conv {cin}→{cout}"),
            &y.to_vec().unwrap(),
            &want,
            F32_ACCUM,
        );
    }
}

#[test]
fn conv2d_matches_the_3d_reference_with_depth_one() {
    let gpu = gpu();
    let mut rng = Rng::new(46);
    let cfg = Conv2dConfig {
        kernel: [3, 2],
        stride: [2, 1],
        padding: [1, 1],
        dilation: [1, 2],
        groups: 2,
    };
    let (x, tx) = random_param(&gpu, &mut rng, &[3, 11, 7, 4], -1.0, 1.0);
    let (w, tw) = random_param(&gpu, &mut rng, &[3, 2, 2, 6], -1.0, 1.0);
    let y = conv2d(&tx, &tw, None, &cfg).unwrap();
    let x5 = Array::new(x.data.clone(), &[3, 1, 11, 7, 4]);
    let w5 = Array::new(w.data.clone(), &[1, 3, 2, 2, 6]);
    let want = rc::conv3d(&x5, &w5, None, &cfg.to_3d());
    assert_eq!(y.shape(), &[3, want.shape[2], want.shape[3], 6]);
    assert_close(
        "conv2d forward",
        &y.to_vec().unwrap(),
        &want.data,
        F32_ACCUM,
    );
    let (g, tg) = random_pair(&gpu, &mut rng, y.shape(), -1.0, 1.0);
    let grads = y.backward_with(&tg).unwrap();
    let g5 = Array::new(g.data.clone(), &want.shape);
    let gx = rc::conv3d_backward_input(&g5, &w5, &x5.shape, &cfg.to_3d());
    let gw = rc::conv3d_backward_weight(&g5, &x5, &w5.shape, &cfg.to_3d());
    assert_close(
        "conv2d grad x",
        &grads.get(&tx).unwrap().to_vec().unwrap(),
        &gx.data,
        F32_GRAD,
    );
    assert_close(
        "conv2d grad w",
        &grads.get(&tw).unwrap().to_vec().unwrap(),
        &gw.data,
        F32_GRAD,
    );
}

#[test]
fn bad_input_gets_typed_errors() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[1, 4, 4, 4, 6]).unwrap();
    let w = |s: &[usize]| Tensor::zeros(&gpu, s).unwrap();
    let msg = |r: cads::Result<Tensor>| r.unwrap_err().to_string();
    // kernel larger than the padded input
    let e = msg(conv3d(
        &x,
        &w(&[7, 3, 3, 6, 2]),
        None,
        &Conv3dConfig::new([7, 3, 3]).padding([1, 0, 0]),
    ));
    assert!(
        e.contains("conv3d") && e.contains("kernel extent 7 > padded input 6"),
        "{e}"
    );
    // channels not divisible by groups
    let e = msg(conv3d(
        &x,
        &w(&[1, 1, 1, 1, 4]),
        None,
        &Conv3dConfig::new([1, 1, 1]).groups(4),
    ));
    assert!(
        e.contains("conv3d") && e.contains("divisible by groups = 4") && e.contains("Cin = 6"),
        "{e}"
    );
    // zero-size output (no batch)
    let e0 = Tensor::zeros(&gpu, &[0, 4, 4, 4, 6]).unwrap();
    let e = msg(conv3d(
        &e0,
        &w(&[1, 1, 1, 6, 2]),
        None,
        &Conv3dConfig::new([1, 1, 1]),
    ));
    assert!(
        e.contains("conv3d") && e.contains("non-empty output"),
        "{e}"
    );
    // mismatched ranks
    let x4 = Tensor::zeros(&gpu, &[4, 4, 4, 6]).unwrap();
    let e = msg(conv3d(
        &x4,
        &w(&[1, 1, 1, 6, 2]),
        None,
        &Conv3dConfig::new([1, 1, 1]),
    ));
    assert!(
        e.contains("conv3d") && e.contains("rank 5") && e.contains("[4, 4, 4, 6]"),
        "{e}"
    );
    let e = msg(conv2d(
        &x,
        &w(&[1, 1, 6, 2]),
        None,
        &Conv2dConfig::new([1, 1]),
    ));
    assert!(e.contains("conv2d") && e.contains("rank 4"), "{e}");
    // weight that does not match the config, and a bias of the wrong length
    let e = msg(conv3d(
        &x,
        &w(&[3, 3, 3, 6, 2]),
        None,
        &Conv3dConfig::new([1, 1, 1]),
    ));
    assert!(
        e.contains("conv3d") && e.contains("[1, 1, 1, 6, 2]") && e.contains("[3, 3, 3, 6, 2]"),
        "{e}"
    );
    let e = msg(conv3d(
        &x,
        &w(&[1, 1, 1, 6, 2]),
        Some(&w(&[3])),
        &Conv3dConfig::new([1, 1, 1]),
    ));
    assert!(
        e.contains("conv3d") && e.contains("[2]") && e.contains("[3]"),
        "{e}"
    );
}

#[test]
fn every_tile_variant_matches_reference() {
    // The plan picks one tile per shape; force each variant in turn through the explicit path
    // (a call-level choice, so tests running meanwhile are unaffected).
    let gpu = gpu();
    let mut rng = Rng::new(49);
    let cfg = Conv3dConfig {
        kernel: [3, 2, 3],
        stride: [1, 1, 1],
        padding: [1, 1, 0],
        dilation: [1, 2, 1],
        groups: 1,
    };
    let fwd = [ForwardTile::M8N8, ForwardTile::M16N8, ForwardTile::M8N8];
    let bwd = [WeightTile::N16, WeightTile::N8, WeightTile::N32];
    for i in 0..fwd.len() {
        let path = ConvPath::Tiles {
            forward: fwd[i],
            weight: bwd[i],
        };
        for cin in [8, 3] {
            let xs = [2, 4, 5, 7, cin];
            let ws = [3, 2, 3, cin, 32];
            let (x, tx) = random_param(&gpu, &mut rng, &xs, -1.0, 1.0);
            let (w, tw) = random_param(&gpu, &mut rng, &ws, -1.0, 1.0);
            let y = conv3d_with(&tx, &tw, None, &cfg, path).unwrap();
            let what = format!("{:?} / {:?} Cin {cin}", fwd[i], bwd[i]);
            assert_close(
                &format!("{what} forward"),
                &y.to_vec().unwrap(),
                &rc::conv3d(&x, &w, None, &cfg).data,
                F32_ACCUM,
            );
            let (g, tg) = random_pair(&gpu, &mut rng, y.shape(), -1.0, 1.0);
            let grads = y.backward_with(&tg).unwrap();
            assert_close(
                &format!("{what} grad x"),
                &grads.get(&tx).unwrap().to_vec().unwrap(),
                &rc::conv3d_backward_input(&g, &w, &xs, &cfg).data,
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
