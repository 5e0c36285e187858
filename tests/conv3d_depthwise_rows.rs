//! The depthwise conv3d of kernel width 3 on lanes over channels with a sliding window along W
//! (src/ops/conv3d_depthwise_rows.rs), on the `rows` path (`ConvPath::Rows`; `rows_c4` runs the
//! same kernels) and in workgroups of 16 lanes on `rows_w16`: forward, input gradient (the
//! flipped depthwise conv, the same kernel) and weight gradient against src/reference/conv3d.rs
//! with batch 2, channel counts that fill no block of 8 or 16 vec4 lanes (12, 20) and several
//! blocks (260), output rows that are not a multiple
//! of the 8-wide window, per-axis stride, padding and dilation along D and H, W padding 0, 1, 2,
//! and both weight-gradient paths
//! (one chunk of rows, split rows summed); an identity that shares no code with the kernel or
//! the reference (a centre-tap kernel scales the input); and the kernels that ran, with the
//! vec4 depthwise kernel where the shape does not fit (kernel width ≠ 3, stride 2 along W).

mod common;

use cads::ops::conv3d::{conv3d_with, ConvPath, RowsLanes};
use cads::ops::Conv3dConfig;
use cads::util::{Rng, F32_GRAD};
use cads::Gpu;
use common::conv_check::{check_conv, conv_kernels_run};
use common::*;

const ROWS: ConvPath = ConvPath::Rows(RowsLanes::Two);
/// The 16-lane family: the same kernels in workgroups of 16.
const WIDE: ConvPath = ConvPath::Rows(RowsLanes::Wide);
const FORWARD: &str = "conv3d_depthwise_rows::conv3d_depthwise_rows_w3";
const WEIGHT: &str = "conv3d_depthwise_rows::conv3d_backward_weight_depthwise_rows_w3";

fn depthwise(kernel: [usize; 3], c: usize) -> Conv3dConfig {
    Conv3dConfig::new(kernel).groups(c)
}

/// Forward (with bias) and the three gradients on `rows` and `rows_w16` against the reference.
fn check(gpu: &Gpu, rng: &mut Rng, x_shape: [usize; 5], cfg: Conv3dConfig) {
    let c = x_shape[4];
    for path in [ROWS, WIDE] {
        let what = format!("depthwise {}", path.name());
        check_conv(gpu, rng, &what, path, x_shape, c, cfg, F32_GRAD)
    }
}

#[test]
fn depthwise_rows_match_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(181);
    for (x, cfg) in [
        // PVT's DWConv: 3³, stride 1, padding 1; 12 channels (one partial lane block), rows
        // of 10 outputs (a full window and a partial one), batch 2
        (
            [2, 4, 5, 10, 12],
            depthwise([3, 3, 3], 12).padding([1, 1, 1]),
        ),
        // 20 channels, no padding along W (8 − 2 = 6 outputs per row), padding 2 along D
        (
            [1, 3, 6, 8, 20],
            depthwise([3, 3, 3], 20).padding([2, 1, 0]),
        ),
        // per-axis stride, dilation and padding along D and H; padding 2 along W
        (
            [2, 7, 8, 5, 8],
            Conv3dConfig {
                kernel: [2, 3, 3],
                stride: [2, 1, 1],
                padding: [0, 2, 2],
                dilation: [1, 2, 1],
                groups: 8,
            },
        ),
        // 260 channels: 9 lane blocks (the last with one lane) × 9 (kd, kh) pairs fill the
        // weight gradient's target in one chunk of rows
        (
            [1, 2, 3, 9, 260],
            depthwise([3, 3, 3], 260).padding([1, 1, 1]),
        ),
        // many rows, few channels: the weight gradient splits its rows into chunks
        ([2, 6, 12, 7, 8], depthwise([1, 3, 3], 8).padding([0, 1, 1])),
    ] {
        check(&gpu, &mut rng, x, cfg);
    }
}

/// A kernel that is zero except its centre tap, s[c] per channel, scales each channel of the
/// input: y = s ⊙ x + b, with padding 1 keeping the extents. Checked element by element on
/// the host, with no convolution code on either side.
#[test]
fn a_centre_tap_kernel_scales_each_channel() {
    let gpu = gpu();
    let mut rng = Rng::new(182);
    let c = 12;
    let xs = [2, 3, 4, 11, c];
    let (x, tx) = random_pair(&gpu, &mut rng, &xs, -1.0, 1.0);
    // Powers of two: each product is exact, so fused or not, y = x·s + b rounds once.
    let scale: Vec<f32> = (0..c).map(|i| 2f32.powi(i as i32 % 5 - 2)).collect();
    let mut w = vec![0.0f32; 27 * c];
    w[13 * c..14 * c].copy_from_slice(&scale);
    let tw = cads::Tensor::from_slice(&gpu, &w, &[3, 3, 3, 1, c]).unwrap();
    let bias: Vec<f32> = (0..c).map(|i| i as f32 - 6.0).collect();
    let tb = cads::Tensor::from_slice(&gpu, &bias, &[c]).unwrap();
    let cfg = depthwise([3, 3, 3], c).padding([1, 1, 1]);
    let want: Vec<f32> = x
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f32 * scale[i % c] + bias[i % c])
        .collect();
    for path in [ROWS, WIDE] {
        let y = conv3d_with(&tx, &tw, Some(&tb), &cfg, path).unwrap();
        assert_eq!(
            y.to_vec().unwrap(),
            want,
            "centre tap on {}: exact (one product, one sum)",
            path.name()
        );
    }
}

#[test]
fn width_3_depthwise_convs_run_the_window_kernels_and_others_the_vec4_ones() {
    let gpu = fresh_gpu();
    for (path, lanes) in [(ROWS, ""), (WIDE, "[LANES=16]")] {
        let ran = conv_kernels_run(
            &gpu,
            path,
            [1, 4, 4, 9, 16],
            16,
            depthwise([3, 3, 3], 16).padding([1, 1, 1]),
        );
        for want in [FORWARD, WEIGHT].map(|k| format!("{k}{lanes}")) {
            assert!(ran.contains(&want), "{want} not in {ran:?}");
        }
        assert!(
            !ran.iter().any(|k| k.contains("conv3d_depthwise_c4")
                || k.ends_with("_naive")
                || k.starts_with("conv3d_depthwise_rows::") && !k.ends_with(lanes)),
            "forward, input and weight gradient all on the {} window kernels: {ran:?}",
            path.name()
        );
    }
    // Kernel width 5, and stride 2 along W: the vec4 depthwise kernels.
    for cfg in [
        depthwise([3, 3, 5], 16).padding([1, 1, 2]),
        depthwise([3, 3, 3], 16).stride([1, 1, 2]),
    ] {
        let ran = conv_kernels_run(&gpu, ROWS, [1, 4, 4, 10, 16], 16, cfg);
        assert!(
            !ran.iter().any(|k| k.starts_with("conv3d_depthwise_rows::")),
            "{cfg:?}: {ran:?}"
        );
        assert!(
            ran.iter().any(|k| k == "conv3d::conv3d_depthwise_c4"),
            "{cfg:?}: {ran:?}"
        );
    }
}
