//! The lanes-over-output-channel conv3d for CPU adapters (src/ops/conv3d_rows.rs), its four
//! variants forced by name (`ConvPath::Rows(RowsLanes::Two)`, `(RowsLanes::Four)`,
//! `(RowsLanes::FourDeep)` and `(RowsLanes::Wide)`, `CADS_KERNEL_CONV3D=rows`, `rows_c4`,
//! `rows_c4_m24` and `rows_w16`) on the test adapter: forward, input gradient (flipped conv and
//! sub-pixel classes on the same kernel) and weight gradient against src/reference/conv3d.rs with
//! strides, padding, dilation, batch 2, channel counts that fill neither a workgroup's 8 or 16
//! lanes nor a weight-gradient block of 32 input channels, the four forward tiles (24 voxels × 4
//! channels, 16 × 2, 8 × 4, 4 × 4) in workgroups of 8 and 16 lanes, the three weight-gradient tiles
//! (32 input channels × 4 output channels, 64 × 2, 32 × 2) and both split paths (taps in the
//! forward, voxels in the weight gradient); the unsplit forward against a CPU channel matmul and
//! the adjoint identity (checks that share no code with the kernels or the reference); a forward
//! past 65 535 workgroups; the kernels that ran (plan and profiler); the register kernels where a
//! shape does not fit (groups ≠ 1, depthwise of width ≠ 3; channels not in fours:
//! tests/conv3d_fold.rs); and the tuner's choice.

mod common;

use cads::gpu::ChoiceSource;
use cads::ops::conv3d::{conv3d_with, ConvPath, RowsLanes};
use cads::ops::{conv3d, Conv3dConfig};
use cads::reference::{conv3d as rc, gradcheck::dot};
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_GRAD};
use cads::Gpu;
use common::conv_check::{check_conv, conv_kernels_run, w_shape};
use common::*;

/// The row variants: 2 and 4 output channels per lane in the large tiles, the latter 8 or 24
/// voxels deep, in workgroups of 8 lanes, and workgroups of 16.
const ALL: [ConvPath; 4] = [
    ConvPath::Rows(RowsLanes::Two),
    ConvPath::Rows(RowsLanes::Four),
    ConvPath::Rows(RowsLanes::FourDeep),
    ConvPath::Rows(RowsLanes::Wide),
];
/// The 16-lane family's index in [`ALL`].
const WIDE: usize = 3;

/// Forward (with bias) and the three gradients on every row variant against the reference.
fn check(gpu: &Gpu, rng: &mut Rng, x_shape: [usize; 5], cout: usize, cfg: Conv3dConfig) {
    check_tol(gpu, rng, x_shape, cout, cfg, F32_GRAD)
}

fn check_tol(
    gpu: &Gpu,
    rng: &mut Rng,
    x_shape: [usize; 5],
    cout: usize,
    cfg: Conv3dConfig,
    grad_tol: Tolerance,
) {
    for path in ALL {
        check_conv(gpu, rng, &path.name(), path, x_shape, cout, cfg, grad_tol)
    }
}

/// (input, Cout, config): every shape here fits the row kernels (groups 1, channels in fours).
fn cases() -> Vec<([usize; 5], usize, Conv3dConfig)> {
    vec![
        // stride 1, batch 2, Cin 20 (a weight-gradient block of 32 channels, partly empty),
        // Cout 36 (18 channel pairs: a third workgroup of 8 lanes with two live lanes, a second
        // of 16 with two; 9 groups of 4: a second workgroup of 8 with one); 420 voxels on the
        // 16-voxel tile (`rows`) and the 24-voxel one (`rows_c4_m24`; 24 × 2 channels on
        // `rows_w16`) with a partial last tile
        ([2, 5, 6, 7, 20], 36, Conv3dConfig::cube(3, 1, 1)),
        // per-axis stride / padding / dilation: input gradient by the gather kernel
        (
            [1, 7, 9, 8, 8],
            12,
            Conv3dConfig {
                kernel: [3, 2, 3],
                stride: [1, 2, 3],
                padding: [1, 2, 0],
                dilation: [2, 1, 1],
                groups: 1,
            },
        ),
        // stride 1 with dilation and per-axis kernel and padding (flipped conv)
        (
            [1, 6, 7, 9, 4],
            8,
            Conv3dConfig {
                kernel: [3, 3, 2],
                stride: [1, 1, 1],
                padding: [2, 1, 1],
                dilation: [2, 1, 2],
                groups: 1,
            },
        ),
        // the patch embedding: stride 2, odd sizes (sub-pixel classes on the row kernel)
        ([2, 6, 8, 7, 16], 32, Conv3dConfig::cube(3, 2, 1)),
        // k = s (spatial reduction), 16 output voxels: two 8-voxel tiles
        ([2, 8, 8, 8, 8], 16, Conv3dConfig::cube(4, 4, 0)),
        // k = s, 4 output voxels: the 4-voxel tile
        ([1, 8, 4, 8, 8], 16, Conv3dConfig::cube(4, 4, 0)),
        // Cin 68 (three weight-gradient blocks, the last a quarter full), Cout 4 (one lane)
        ([1, 4, 5, 6, 68], 4, Conv3dConfig::cube(3, 1, 1)),
        // Cin 64 and 128: the weight gradient's 64-channel tile (`rows`), one and two blocks, or
        // two and four blocks of 32 (`rows_c4`, `rows_w16`), with Cout 20 (10 channel pairs: a
        // second workgroup of 8 lanes with two live lanes) and 12
        ([1, 4, 5, 6, 64], 20, Conv3dConfig::cube(3, 1, 1)),
        ([2, 3, 4, 5, 128], 12, Conv3dConfig::cube(3, 2, 1)),
        // Cout 72: 18 groups of 4 fill 16 lanes (the 4-channel tiles on `rows_w16`, 24 voxels
        // deep on 300 output voxels) with a second workgroup of two live lanes
        ([2, 5, 5, 6, 8], 72, Conv3dConfig::cube(3, 1, 1)),
    ]
}

#[test]
fn rows_match_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(171);
    for (x, cout, cfg) in cases() {
        check(&gpu, &mut rng, x, cout, cfg);
    }
}

/// Many voxels (the weight gradient splits its voxels into chunks) and few voxels with many
/// taps (the forward splits its taps), against the reference with the long-sum tolerance.
#[test]
fn both_split_paths_match_reference() {
    const LONG: Tolerance = Tolerance {
        abs: 2e-3,
        rel: 2e-4,
    };
    let gpu = gpu();
    let mut rng = Rng::new(172);
    check_tol(
        &gpu,
        &mut rng,
        [2, 8, 16, 16, 8],
        16,
        Conv3dConfig::cube(3, 1, 1),
        LONG,
    );
    check_tol(
        &gpu,
        &mut rng,
        [1, 8, 8, 8, 16],
        8,
        Conv3dConfig::cube(8, 8, 0),
        LONG,
    );
    // 256 output voxels on the 16-voxel tile, 16 → 4 channels: 16 workgroups, so the taps split.
    check_tol(
        &gpu,
        &mut rng,
        [1, 4, 8, 8, 16],
        4,
        Conv3dConfig::cube(3, 1, 1),
        LONG,
    );
    // 128 output voxels at 64 → 32 channels, k4 s4: 64 taps over 16 row blocks of 8.
    check_tol(
        &gpu,
        &mut rng,
        [1, 16, 16, 32, 64],
        32,
        Conv3dConfig::cube(4, 4, 0),
        LONG,
    );
}

/// A 1×1×1 kernel has one tap, so the forward never splits: it writes y and the bias itself.
/// Checked against a CPU channel matmul (no conv code shared), on the four forward tiles (336
/// voxels: 16 × 2 channels on `rows`, 24 × 2 on `rows_w16`, 8 × 4 on `rows_c4`, 24 × 4 on
/// `rows_c4_m24`; 210 voxels: 8 × 4; 30 voxels: 4 × 4) with partial lane groups (Cout 12 and
/// 40) and Cin 4.
#[test]
fn unsplit_forward_with_bias_is_a_channel_matmul() {
    let gpu = gpu();
    let mut rng = Rng::new(177);
    for xs in [[2, 4, 6, 7], [2, 3, 5, 7], [1, 2, 3, 5]] {
        for (cin, cout) in [(4, 12), (20, 40)] {
            let xs = [xs[0], xs[1], xs[2], xs[3], cin];
            let (x, tx) = random_pair(&gpu, &mut rng, &xs, -1.0, 1.0);
            let (w, tw) = random_pair(&gpu, &mut rng, &[1, 1, 1, cin, cout], -1.0, 1.0);
            let (b, tb) = random_pair(&gpu, &mut rng, &[cout], -1.0, 1.0);
            let cfg = Conv3dConfig::new([1, 1, 1]);
            let mut want = rc::matmul_channels(&x.data, &w.data, cin, cout);
            for (i, v) in want.iter_mut().enumerate() {
                *v += b.data[i % cout];
            }
            for path in ALL {
                let y = conv3d_with(&tx, &tw, Some(&tb), &cfg, path).unwrap();
                assert_close(
                    &format!("{} 1x1x1 {xs:?}→{cout}", path.name()),
                    &y.to_vec().unwrap(),
                    &want,
                    F32_ACCUM,
                );
            }
        }
    }
}

/// ⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ with both sides on the row kernels where they fit.
#[test]
fn adjoint_identity_holds() {
    let gpu = gpu();
    let mut rng = Rng::new(178);
    for ((xs, cout, cfg), path) in cases().into_iter().flat_map(|c| ALL.map(|p| (c, p))) {
        let (x, tx) = random_param(&gpu, &mut rng, &xs, -1.0, 1.0);
        let (_, tw) = random_pair(&gpu, &mut rng, &w_shape(&xs, cout, &cfg), -1.0, 1.0);
        let out = conv3d_with(&tx, &tw, None, &cfg, path).unwrap();
        let (yv, ty) = random_pair(&gpu, &mut rng, out.shape(), -1.0, 1.0);
        let ax: Vec<f64> = out.to_vec().unwrap().iter().map(|&v| v as f64).collect();
        let grads = out.backward_with(&ty).unwrap();
        let aty: Vec<f64> = grads
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
            "{} {xs:?}→{cout} {cfg:?}: ⟨Ax,y⟩ = {lhs}, ⟨x,Aᵀy⟩ = {rhs}",
            path.name()
        );
    }
}

/// More than 65 535 row tiles: the forward folds them into a 2-D grid (x + y·nx in the shader).
/// 16 × 256 × 260 voxels = 66 560 tiles of 16 (`rows`), 133 120 of 8 (`rows_c4`), 44 374 of 24
/// (`rows_c4_m24`, `rows_w16`: a 1-D grid); a 1×1×1 conv keeps it cheap.
#[test]
fn a_forward_past_65535_workgroups_folds_its_grid() {
    let gpu = gpu();
    let mut rng = Rng::new(179);
    let (cin, cout) = (4, 4);
    let xs = [1, 16, 256, 260, cin];
    let (x, tx) = random_pair(&gpu, &mut rng, &xs, -1.0, 1.0);
    let (w, tw) = random_pair(&gpu, &mut rng, &[1, 1, 1, cin, cout], -1.0, 1.0);
    let want = rc::matmul_channels(&x.data, &w.data, cin, cout);
    for path in ALL {
        let y = conv3d_with(&tx, &tw, None, &Conv3dConfig::new([1, 1, 1]), path).unwrap();
        assert_close(
            &format!("{} forward past 65 535 row tiles", path.name()),
            &y.to_vec().unwrap(),
            &want,
            F32_ACCUM,
        );
    }
}

/// A register-tiled, depthwise or straightforward conv kernel (not the weight flip or the split
/// sum, which the row kernels share).
fn other_conv_kernel(k: &str) -> bool {
    k.starts_with("conv3d::")
        || k.ends_with("_naive")
        || k.contains("_tiled_")
        || k.contains("depthwise")
}

/// A context of its own that runs the row kernels themselves, not their subgroup-broadcast
/// twins (those: tests/conv3d_rows_sga.rs), so kernels are named as in shaders/conv3d_rows.wgsl.
fn gpu_without_twins() -> Gpu {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[("subgroup_broadcast", "never")]));
    gpu
}

#[test]
fn every_pass_runs_the_row_kernels_where_they_fit_and_the_register_tiles_elsewhere() {
    let gpu = gpu_without_twins();
    // Stride 1 and stride 2: forward, input gradient (flipped conv / sub-pixel classes) and weight
    // gradient all on the row kernels (512 output voxels: the 16-voxel tile on `rows` (2 channels),
    // the 8-voxel one on `rows_c4`, the 24-voxel one on `rows_c4_m24` and (2 channels: 16 output
    // channels) `rows_w16`; 216 and 27: the 8-voxel tile); k2 s2 to 2·2·1 voxels: the 4-voxel tile
    // (its input gradient is the patchify matmul, tests/conv3d_patchify.rs). Cin 64: the weight
    // gradient's 64-channel tile on `rows`, the 32-channel one on `rows_c4`; `rows_w16` takes 32 ×
    // 2 channels (16 output channels do not fill 16 lanes of 4), in workgroups of 16 (`[LANES=16]`
    // in the profile).
    for (x, cout, cfg, tiles, weight_tiles) in [
        (
            [1, 8, 8, 8, 8],
            16,
            Conv3dConfig::cube(3, 1, 1),
            ["m16_c2", "m8_c4", "m24_c4", "m24_c2"],
            ["c4", "c4", "c4", "r8_c2"],
        ),
        (
            [1, 6, 6, 6, 8],
            16,
            Conv3dConfig::cube(3, 1, 1),
            ["m8_c4", "m8_c4", "m8_c4", "m8_c4"],
            ["c4", "c4", "c4", "r8_c2"],
        ),
        (
            [1, 6, 6, 6, 64],
            16,
            Conv3dConfig::cube(3, 1, 1),
            ["m8_c4", "m8_c4", "m8_c4", "m8_c4"],
            ["r16_c2", "c4", "c4", "r8_c2"],
        ),
        (
            [1, 6, 6, 6, 8],
            16,
            Conv3dConfig::cube(3, 2, 1),
            ["m8_c4", "m8_c4", "m8_c4", "m8_c4"],
            ["c4", "c4", "c4", "r8_c2"],
        ),
        (
            [1, 4, 4, 2, 8],
            16,
            Conv3dConfig::cube(2, 2, 0),
            ["m4_c4", "m4_c4", "m4_c4", "m4_c4"],
            ["c4", "c4", "c4", "r8_c2"],
        ),
        // 64 output channels fill 16 lanes of 4: `rows_w16` takes the 24-voxel tile on 512
        // output voxels too, and 32 × 4 channels in the weight gradient.
        (
            [1, 8, 8, 8, 8],
            64,
            Conv3dConfig::cube(3, 1, 1),
            ["m16_c2", "m8_c4", "m24_c4", "m24_c4"],
            ["c4", "c4", "c4", "c4"],
        ),
    ] {
        for ((path, tile), weight_tile) in ALL.into_iter().zip(tiles).zip(weight_tiles) {
            let wide = path == ALL[WIDE];
            let lanes = if wide { "[LANES=16]" } else { "" };
            let ran = conv_kernels_run(&gpu, path, x, cout, cfg);
            for want in [
                format!("conv3d_rows::conv3d_rows_{tile}{lanes}"),
                format!("conv3d_rows::conv3d_backward_weight_rows_{weight_tile}{lanes}"),
            ] {
                assert!(
                    ran.contains(&want),
                    "{path:?} {cfg:?}: {want} not in {ran:?}"
                );
            }
            // No kernel of another family, no 2-channel tile on `rows_c4` and `rows_c4_m24`, and
            // every row kernel in workgroups of 16 exactly on `rows_w16`.
            let wrong = |k: &String| {
                other_conv_kernel(k)
                    || (path == ALL[1] || path == ALL[2]) && k.ends_with("_c2")
                    || k.starts_with("conv3d_rows::") && k.ends_with("[LANES=16]") != wide
            };
            assert!(!ran.iter().any(wrong), "{path:?} {cfg:?}: {ran:?}");
        }
    }
    // Groups 2 and a depthwise conv of kernel width 2 (the width-3 depthwise convs take their
    // own row kernels, tests/conv3d_depthwise_rows.rs): no row kernel at all. (Channels not in
    // fours: tests/conv3d_fold.rs.)
    for (x, cout, cfg) in [
        ([1, 6, 6, 6, 16], 16, Conv3dConfig::cube(3, 1, 1).groups(2)),
        ([1, 6, 6, 6, 8], 8, Conv3dConfig::cube(2, 1, 0).groups(8)),
    ] {
        for path in ALL {
            let ran = conv_kernels_run(&gpu, path, x, cout, cfg);
            assert!(
                !ran.iter()
                    .any(|k| k.starts_with("conv3d_rows::")
                        || k.starts_with("conv3d_depthwise_rows::")),
                "{path:?} {x:?}→{cout} {cfg:?}: {ran:?}"
            );
        }
    }
}

#[test]
fn shapes_the_row_kernels_do_not_fit_still_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(174);
    for (x, cout, cfg) in [
        ([1, 7, 6, 5, 3], 8, Conv3dConfig::cube(3, 2, 1)),
        ([2, 5, 6, 5, 8], 6, Conv3dConfig::cube(3, 1, 1)),
        ([1, 5, 6, 5, 16], 24, Conv3dConfig::cube(3, 1, 1).groups(2)),
        ([1, 5, 6, 7, 8], 8, Conv3dConfig::cube(2, 1, 1).groups(8)),
    ] {
        check(&gpu, &mut rng, x, cout, cfg);
    }
}

/// `CADS_KERNEL_CONV3D=rows`, `rows_c4`, `rows_c4_m24` and `rows_w16` run conv3d on the row kernels
/// of their variant, and on CPU adapters the tuner measures the 8-lane ones (and the 16-lane one
/// where the adapter's subgroups have 16 lanes) against `tiled` and picks one.
#[test]
fn conv3d_takes_the_rows_overrides_and_cpu_adapters_tune_them() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(176);
    let cfg = Conv3dConfig::cube(3, 1, 1);
    // 2·5·6·7 = 420 output voxels: the 16-voxel tile on `rows`, the 8-voxel one on `rows_c4`,
    // the 24-voxel one on `rows_c4_m24` and (2 channels) `rows_w16`.
    let (x, tx) = random_pair(&gpu, &mut rng, &[2, 5, 6, 7, 8], -1.0, 1.0);
    let (w, tw) = random_pair(&gpu, &mut rng, &[3, 3, 3, 8, 16], -1.0, 1.0);
    let want = rc::conv3d(&x, &w, None, &cfg).data;
    for (name, path, kernel) in [
        ("rows", ALL[0], "conv3d_rows::conv3d_rows_m16_c2"),
        ("rows_c4", ALL[1], "conv3d_rows::conv3d_rows_m8_c4"),
        ("rows_c4_m24", ALL[2], "conv3d_rows::conv3d_rows_m24_c4"),
        (
            "rows_w16",
            ALL[WIDE],
            "conv3d_rows::conv3d_rows_m24_c2[LANES=16]",
        ),
    ] {
        gpu.set_tune_settings(memo_tuning(&[
            ("conv3d", name),
            ("subgroup_broadcast", "never"),
        ]));
        let choice = ConvPath::tuned_choice(&gpu).unwrap();
        assert_eq!(
            (choice.variant.as_str(), choice.source),
            (name, ChoiceSource::Override)
        );
        assert_eq!(ConvPath::chosen(&gpu).unwrap(), path);
        gpu.set_profiling(true);
        let y = conv3d(&tx, &tw, None, &cfg).unwrap();
        let got = y.to_vec().unwrap();
        gpu.set_profiling(false);
        let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
        let other_row_kernel = |k: &String| k.starts_with("conv3d_rows::") && k != kernel;
        assert!(
            ran.iter().any(|k| k == kernel)
                && !ran
                    .iter()
                    .any(|k| other_conv_kernel(k) || other_row_kernel(k)),
            "{name}: {ran:?}"
        );
        assert_close(
            &format!("conv3d on the {name} override"),
            &got,
            &want,
            F32_ACCUM,
        );
    }
    if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
        let mut want = vec![ConvPath::Fast, ALL[0], ALL[1], ALL[2]];
        if gpu.adapter().subgroup_max_size >= 16 {
            want.push(ALL[WIDE]);
        }
        assert_eq!(ConvPath::candidates(&gpu), want);
        gpu.set_tune_settings(memo_tuning(&[]));
        let choice = ConvPath::tuned_choice(&gpu).unwrap();
        assert_eq!(choice.source, ChoiceSource::Measured);
        let names: Vec<String> = want.iter().map(|p| p.name()).collect();
        assert!(
            names.contains(&choice.variant),
            "{choice:?} not in {names:?}"
        );
    }
}
