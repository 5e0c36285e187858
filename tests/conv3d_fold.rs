//! conv3d with input channels not in fours on the row kernels (`ConvPath::Rows`, every variant
//! in the reference checks), through the
//! fold of kernel axes into channels (src/ops/conv3d_fold.rs): forward and the three gradients
//! against src/reference/conv3d.rs over strides, padding and dilation on folded and unfolded
//! axes, one to three folded axes (three with batch 2: a region of more than six axes, copied in
//! host-side slices), channel padding alone (1×1×1), and the flipped-conv input gradient of a
//! conv with Cout not in fours; which kernels run; and a one-hot identity (each output channel
//! a shifted copy of the input) computed by index arithmetic alone.

mod common;

use cads::ops::conv3d::{conv3d_with, ConvPath, RowsLanes};
use cads::ops::Conv3dConfig;
use cads::util::{Rng, F32_GRAD};
use cads::Tensor;
use common::conv_check::{check_conv, conv_kernels_run};
use common::*;

const ROWS: ConvPath = ConvPath::Rows(RowsLanes::Two);

#[test]
fn folded_forward_matches_reference_with_its_gradients() {
    let gpu = gpu();
    let mut rng = Rng::new(181);
    let cases = [
        // The PVT stem's conv (7³, stride 2, padding 3, Cin 1) on odd sizes: W and H fold.
        ([2, 6, 10, 9, 1], 8, Conv3dConfig::cube(7, 2, 3)),
        // 3³ stride 1 Cin 1 (a U-Net's first conv), Cout 12: W and H fold, 9 → 12 channels;
        // 420 output voxels (the 16-voxel tile on `rows`, the 8-voxel one on `rows_c4`).
        ([2, 5, 6, 7, 1], 12, Conv3dConfig::cube(3, 1, 1)),
        // Cin 3: W alone folds (9 channels), with stride, padding and dilation along W, and
        // dilation on D (an axis the remaining conv keeps).
        (
            [1, 7, 6, 11, 3],
            8,
            Conv3dConfig {
                kernel: [3, 2, 3],
                stride: [1, 2, 2],
                padding: [1, 0, 2],
                dilation: [2, 1, 2],
                groups: 1,
            },
        ),
        // Cin 1, kernel (2, 3, 2): W (2), H (6), D (12): all three axes fold, with stride and
        // dilation on H; batch 2 leaves seven region axes (the copy walks N on the host).
        (
            [2, 5, 9, 6, 1],
            4,
            Conv3dConfig {
                kernel: [2, 3, 2],
                stride: [1, 2, 1],
                padding: [0, 1, 1],
                dilation: [1, 2, 1],
                groups: 1,
            },
        ),
        // 1×1×1 with Cin 2: nothing to fold but the channels, padded 2 → 4.
        ([2, 3, 4, 5, 2], 8, Conv3dConfig::new([1, 1, 1])),
        // Cin 5, Cout 12, 3³ (W folds: 15 → 16 channels).
        ([1, 5, 6, 7, 5], 12, Conv3dConfig::cube(3, 1, 1)),
        // Cout 6: the forward stays on the register tiles; the input gradient is the flipped
        // conv 6 → 8 channels, which folds.
        ([1, 6, 6, 6, 8], 6, Conv3dConfig::cube(3, 1, 1)),
    ];
    for (x, cout, cfg) in cases {
        for lanes in [
            RowsLanes::Two,
            RowsLanes::Four,
            RowsLanes::FourDeep,
            RowsLanes::Wide,
        ] {
            let path = ConvPath::Rows(lanes);
            let name = format!("{}_folded", lanes.name());
            check_conv(&gpu, &mut rng, &name, path, x, cout, cfg, F32_GRAD);
        }
    }
}

#[test]
fn the_fold_runs_the_row_forward_and_leaves_the_weight_gradient_to_the_tiles() {
    // (The row kernels by their shaders/conv3d_rows.wgsl names: the subgroup-broadcast twins
    // are off here, tested in tests/conv3d_rows_sga.rs.)
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[("subgroup_broadcast", "never")]));
    // Cin 3 → 8, stride 1: forward on the row kernel through the fold; the weight gradient on
    // the register tile for scalar input channels; the input gradient (8 → 3, Cout not in
    // fours) on neither row kernel.
    let ran = conv_kernels_run(&gpu, ROWS, [1, 6, 6, 6, 3], 8, Conv3dConfig::cube(3, 1, 1));
    assert!(
        ran.contains(&"conv3d_rows::conv3d_rows_m8_c4".to_string()),
        "{ran:?}"
    );
    assert!(
        ran.iter()
            .any(|k| k.starts_with("conv3d_backward_weight::conv3d_backward_weight_tiled")),
        "{ran:?}"
    );
    assert!(
        !ran.iter().any(|k| k.starts_with("conv3d::")),
        "the forward left the row kernel: {ran:?}"
    );
    // Cout 6: the forward on another family (no row lanes for 6 channels; the straightforward
    // kernel, no tile divides 6), the input gradient (the flipped conv 6 → 8, folded) on the
    // row kernel.
    let ran = conv_kernels_run(&gpu, ROWS, [1, 6, 6, 6, 8], 6, Conv3dConfig::cube(3, 1, 1));
    assert!(ran.iter().any(|k| k.starts_with("conv3d::")), "{ran:?}");
    assert!(
        ran.contains(&"conv3d_rows::conv3d_rows_m8_c4".to_string()),
        "{ran:?}"
    );
}

/// With a one-hot weight, output channel c of a Cin-1 conv is the input read at tap t_c:
/// y[n, o, c] = x[n, o·s − p + t_c·dil] (0 in the padding), by index arithmetic alone.
#[test]
fn one_hot_weights_shift_the_input() {
    let gpu = gpu();
    let mut rng = Rng::new(183);
    let cfg = Conv3dConfig {
        kernel: [3, 5, 7],
        stride: [1, 2, 2],
        padding: [1, 2, 3],
        dilation: [1, 1, 2],
        groups: 1,
    };
    let xs = [2, 4, 7, 12, 1];
    let x = rng.vec_uniform(xs.iter().product(), -1.0, 1.0);
    let taps = [[0, 0, 0], [1, 2, 3], [2, 4, 6], [0, 3, 1]];
    let cout = taps.len();
    let k = cfg.kernel;
    let mut w = vec![0.0f32; k[0] * k[1] * k[2] * cout];
    for (c, t) in taps.iter().enumerate() {
        w[((t[0] * k[1] + t[1]) * k[2] + t[2]) * cout + c] = 1.0;
    }
    let tx = Tensor::from_slice(&gpu, &x, &xs).unwrap();
    let tw = Tensor::from_slice(&gpu, &w, &[k[0], k[1], k[2], 1, cout]).unwrap();
    let y = conv3d_with(&tx, &tw, None, &cfg, ROWS).unwrap();
    let ys = y.shape().to_vec();
    let got = y.to_vec().unwrap();
    for n in 0..ys[0] {
        for od in 0..ys[1] {
            for oh in 0..ys[2] {
                for ow in 0..ys[3] {
                    for (c, t) in taps.iter().enumerate() {
                        let o = [od, oh, ow];
                        let i: Vec<i64> = (0..3)
                            .map(|a| {
                                (o[a] * cfg.stride[a] + t[a] * cfg.dilation[a]) as i64
                                    - cfg.padding[a] as i64
                            })
                            .collect();
                        let inside = (0..3).all(|a| i[a] >= 0 && i[a] < xs[a + 1] as i64);
                        let want = if inside {
                            let (d, h, wi) = (i[0] as usize, i[1] as usize, i[2] as usize);
                            x[((n * xs[1] + d) * xs[2] + h) * xs[3] + wi]
                        } else {
                            0.0
                        };
                        let at = (((n * ys[1] + od) * ys[2] + oh) * ys[3] + ow) * cout + c;
                        assert_eq!(got[at], want, "n {n} o {o:?} tap {t:?}");
                    }
                }
            }
        }
    }
}
