//! The workgroup-memory implicit-GEMM conv3d for GPUs (src/ops/conv3d_igemm.rs), forced by name
//! on the test adapter: forward, input gradient (flipped conv and sub-pixel classes on the same
//! kernel) and weight gradient against src/reference/conv3d.rs with strides, padding, dilation,
//! groups, channel counts that fill neither a tile nor a panel, and both split-K paths; the
//! unsplit forward against a CPU channel matmul and the adjoint identity (checks that share no
//! code with the kernels or the reference); a forward past 65 535 workgroups; the
//! kernels that ran (plan and profiler); the register kernels where a shape does not fit
//! (Cin/groups or Cout/groups not a multiple of 4, depthwise); a device with too little
//! workgroup memory; and the conv3d choice of the tuner (no implicit GEMM among the CPU
//! adapters' candidates, `CADS_KERNEL_CONV3D`).

mod common;

use cads::gpu::ChoiceSource;
use cads::ops::conv3d::{conv3d_with, ConvPath, RowsLanes};
use cads::ops::conv3d_igemm::IgemmTile;
use cads::ops::{conv3d, Conv3dConfig};
use cads::reference::{conv3d as rc, gradcheck::dot};
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_GRAD};
use cads::Gpu;
use common::conv_check::{check_conv, conv_kernels_run, w_shape};
use common::*;

/// Forward (with bias) and the three gradients of `path` against the reference.
fn check(
    gpu: &Gpu,
    path: ConvPath,
    rng: &mut Rng,
    x_shape: [usize; 5],
    cout: usize,
    cfg: Conv3dConfig,
) {
    check_tol(gpu, path, rng, x_shape, cout, cfg, F32_GRAD)
}

fn check_tol(
    gpu: &Gpu,
    path: ConvPath,
    rng: &mut Rng,
    x_shape: [usize; 5],
    cout: usize,
    cfg: Conv3dConfig,
    grad_tol: Tolerance,
) {
    check_conv(gpu, rng, &path.name(), path, x_shape, cout, cfg, grad_tol)
}

const TILES: [ConvPath; 2] = [
    ConvPath::Igemm(IgemmTile::T64x64),
    ConvPath::Igemm(IgemmTile::T128x32),
];

/// (input, Cout, config): every shape here fits the implicit GEMM (channels per group in fours).
fn cases() -> Vec<([usize; 5], usize, Conv3dConfig)> {
    vec![
        // stride 1, Cin 20 (a panel of 16 channels plus a partial one), Cout 36 (partial tile)
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
        // stride 1 with dilation (flipped conv)
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
        // the patch embedding: stride 2 (sub-pixel classes on the implicit GEMM)
        ([2, 6, 8, 7, 16], 32, Conv3dConfig::cube(3, 2, 1)),
        // groups with 8 channels per group in and 12 out
        ([1, 5, 6, 5, 16], 24, Conv3dConfig::cube(3, 1, 1).groups(2)),
        // k = s (spatial reduction), one output voxel per 4³ block
        ([2, 8, 8, 8, 8], 16, Conv3dConfig::cube(4, 4, 0)),
    ]
}

#[test]
fn every_tile_matches_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(151);
    for path in TILES {
        for (x, cout, cfg) in cases() {
            check(&gpu, path, &mut rng, x, cout, cfg);
        }
    }
}

/// Many voxels (several row tiles; the weight gradient splits its voxels) and few voxels with
/// many taps (the forward splits its taps), against the reference with the long-sum tolerance.
#[test]
fn both_split_k_paths_match_reference() {
    const LONG: Tolerance = Tolerance {
        abs: 2e-3,
        rel: 2e-4,
    };
    let gpu = gpu();
    let mut rng = Rng::new(152);
    for path in TILES {
        check_tol(
            &gpu,
            path,
            &mut rng,
            [2, 8, 16, 16, 8],
            16,
            Conv3dConfig::cube(3, 1, 1),
            LONG,
        );
        check_tol(
            &gpu,
            path,
            &mut rng,
            [1, 8, 8, 8, 16],
            8,
            Conv3dConfig::cube(8, 8, 0),
            LONG,
        );
    }
}

/// A 1×1×1 kernel has one tap, so the forward never splits: it writes y and the bias itself.
/// Checked against a CPU channel matmul (no conv code shared), with partial tiles (Cout 12 and
/// 40) and Cin 4 (a panel of 16 channels a quarter full).
#[test]
fn unsplit_forward_with_bias_is_a_channel_matmul() {
    let gpu = gpu();
    let mut rng = Rng::new(157);
    for path in TILES {
        for (cin, cout) in [(4, 12), (20, 40)] {
            let xs = [2, 3, 5, 7, cin];
            let (x, tx) = random_pair(&gpu, &mut rng, &xs, -1.0, 1.0);
            let (w, tw) = random_pair(&gpu, &mut rng, &[1, 1, 1, cin, cout], -1.0, 1.0);
            let (b, tb) = random_pair(&gpu, &mut rng, &[cout], -1.0, 1.0);
            let cfg = Conv3dConfig::new([1, 1, 1]);
            let y = conv3d_with(&tx, &tw, Some(&tb), &cfg, path).unwrap();
            let mut want = rc::matmul_channels(&x.data, &w.data, cin, cout);
            for (i, v) in want.iter_mut().enumerate() {
                *v += b.data[i % cout];
            }
            assert_close(
                &format!("{} 1x1x1 {cin}→{cout}", path.name()),
                &y.to_vec().unwrap(),
                &want,
                F32_ACCUM,
            );
        }
    }
}

/// ⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ with both sides on the implicit GEMM (the input gradient as
/// the flipped conv, the sub-pixel classes or, with dilation and stride, the gather kernel).
#[test]
fn adjoint_identity_holds_on_every_tile() {
    let gpu = gpu();
    let mut rng = Rng::new(158);
    for path in TILES {
        for (xs, cout, cfg) in cases() {
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
}

/// More than 65 535 row tiles: the forward folds them into a 2-D grid (x + y·nx in the shader).
/// 64 × 256 × 257 voxels = 65 792 tiles of 64; a 1×1×1 conv keeps it cheap.
#[test]
fn a_forward_past_65535_workgroups_folds_its_grid() {
    let gpu = gpu();
    let mut rng = Rng::new(159);
    let (cin, cout) = (4, 4);
    let xs = [1, 64, 256, 257, cin];
    let (x, tx) = random_pair(&gpu, &mut rng, &xs, -1.0, 1.0);
    let (w, tw) = random_pair(&gpu, &mut rng, &[1, 1, 1, cin, cout], -1.0, 1.0);
    let path = ConvPath::Igemm(IgemmTile::T64x64);
    let y = conv3d_with(&tx, &tw, None, &Conv3dConfig::new([1, 1, 1]), path).unwrap();
    assert_close(
        "igemm_64x64 forward over 65 792 row tiles",
        &y.to_vec().unwrap(),
        &rc::matmul_channels(&x.data, &w.data, cin, cout),
        F32_ACCUM,
    );
}

/// A register-tiled, depthwise or straightforward conv kernel (not the weight flip or the split
/// sum, which the implicit GEMM shares).
fn other_conv_kernel(k: &str) -> bool {
    k.starts_with("conv3d::")
        || k.ends_with("_naive")
        || k.contains("_tiled_")
        || k.contains("depthwise")
}

#[test]
fn every_pass_runs_the_implicit_gemm_where_it_fits_and_the_register_tiles_elsewhere() {
    let gpu = fresh_gpu();
    for tile in IgemmTile::ALL {
        let path = ConvPath::Igemm(tile);
        let suffix = tile.name().trim_start_matches("igemm_");
        // Stride 1 and stride 2: forward, input gradient (flipped conv / sub-pixel classes) and
        // weight gradient all on the implicit GEMM.
        for cfg in [Conv3dConfig::cube(3, 1, 1), Conv3dConfig::cube(3, 2, 1)] {
            let ran = conv_kernels_run(&gpu, path, [1, 6, 6, 6, 8], 16, cfg);
            for entry in ["fwd", "wgrad"] {
                let want = format!("conv3d_igemm::conv3d_igemm_{entry}_{suffix}");
                assert!(ran.contains(&want), "{cfg:?}: {want} not in {ran:?}");
            }
            assert!(
                !ran.iter().any(|k| other_conv_kernel(k)),
                "{cfg:?}: {ran:?}"
            );
        }
        // Cin = 3 and Cout = 6 (not in fours), depthwise: no implicit GEMM at all.
        for (x, cout, cfg) in [
            ([1, 6, 6, 6, 3], 8, Conv3dConfig::cube(3, 1, 1)),
            ([1, 6, 6, 6, 8], 6, Conv3dConfig::cube(3, 1, 1)),
            ([1, 6, 6, 6, 8], 8, Conv3dConfig::cube(3, 1, 1).groups(8)),
        ] {
            let ran = conv_kernels_run(&gpu, path, x, cout, cfg);
            assert!(
                !ran.iter().any(|k| k.contains("igemm")),
                "{x:?}→{cout} {cfg:?}: {ran:?}"
            );
        }
    }
}

#[test]
fn shapes_the_implicit_gemm_does_not_fit_still_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(154);
    for (x, cout, cfg) in [
        ([1, 7, 6, 5, 3], 8, Conv3dConfig::cube(3, 2, 1)),
        ([2, 5, 6, 5, 8], 6, Conv3dConfig::cube(3, 1, 1)),
        ([1, 5, 6, 7, 8], 8, Conv3dConfig::cube(3, 1, 1).groups(8)),
    ] {
        check(
            &gpu,
            ConvPath::Igemm(IgemmTile::T64x64),
            &mut rng,
            x,
            cout,
            cfg,
        );
    }
}

/// A device on the test adapter with at most `bytes` of workgroup memory.
fn device_with_workgroup_memory(bytes: u32) -> Gpu {
    let (device, queue) = pollster::block_on(async {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
            .await
            .unwrap_or_else(|e| panic!("no adapter: {e}. {}", cads::gpu::NO_ADAPTER_HINT));
        let mut limits = adapter.limits();
        limits.max_compute_workgroup_storage_size = bytes;
        adapter
            .request_device(&wgpu::DeviceDescriptor {
                required_limits: limits,
                ..wgpu::DeviceDescriptor::default()
            })
            .await
            .unwrap()
    });
    Gpu::from_device(device, queue)
}

#[test]
fn a_device_with_little_workgroup_memory_gets_a_tile_that_fits_or_the_register_tiles() {
    let small = IgemmTile::T64x64.workgroup_bytes();
    let gpu = device_with_workgroup_memory(small);
    assert_eq!(
        ConvPath::Igemm(IgemmTile::T128x32).runs_as(&gpu),
        ConvPath::Igemm(IgemmTile::T64x64)
    );
    let gpu = device_with_workgroup_memory(16_384);
    for tile in IgemmTile::ALL {
        assert_eq!(ConvPath::Igemm(tile).runs_as(&gpu), ConvPath::Fast);
    }
    // conv3d_with resolves it before any work: the register tiles run, the result is right.
    let ran = conv_kernels_run(
        &gpu,
        ConvPath::Igemm(IgemmTile::T64x64),
        [1, 6, 6, 6, 8],
        16,
        Conv3dConfig::cube(3, 1, 1),
    );
    assert!(!ran.iter().any(|k| k.contains("igemm")), "{ran:?}");
    let mut rng = Rng::new(155);
    check(
        &gpu,
        ConvPath::Igemm(IgemmTile::T64x64),
        &mut rng,
        [1, 5, 6, 7, 8],
        16,
        Conv3dConfig::cube(3, 1, 1),
    );
    assert!(gpu.synchronize().is_ok());
}

#[test]
fn conv3d_takes_the_tuned_family_and_the_override() {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[]));
    if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
        // No implicit GEMM among the CPU candidates (tests/conv3d_rows.rs times them).
        let candidates = ConvPath::candidates(&gpu);
        assert_eq!(
            candidates[..4],
            [
                ConvPath::Fast,
                ConvPath::Rows(RowsLanes::Two),
                ConvPath::Rows(RowsLanes::Four),
                ConvPath::Rows(RowsLanes::FourDeep)
            ]
        );
        assert!(
            candidates[4..].is_empty() || candidates[4..] == [ConvPath::Rows(RowsLanes::Wide)],
            "{candidates:?}"
        );
    } else {
        let choice = ConvPath::tuned_choice(&gpu).unwrap();
        assert_eq!(choice.source, ChoiceSource::Measured);
    }
    for name in ["igemm_64x64", "igemm_128x32", "tiled", "naive"] {
        gpu.set_tune_settings(memo_tuning(&[("conv3d", name)]));
        let choice = ConvPath::tuned_choice(&gpu).unwrap();
        assert_eq!(
            (choice.variant.as_str(), choice.source),
            (name, ChoiceSource::Override)
        );
        assert_eq!(ConvPath::chosen(&gpu).unwrap().name(), name);
    }
    // conv3d itself on the overridden family: its kernels ran, and the result is right.
    gpu.set_tune_settings(memo_tuning(&[("conv3d", "igemm_64x64")]));
    let mut rng = Rng::new(156);
    let cfg = Conv3dConfig::cube(3, 1, 1);
    let (x, tx) = random_pair(&gpu, &mut rng, &[1, 5, 6, 7, 8], -1.0, 1.0);
    let (w, tw) = random_pair(&gpu, &mut rng, &[3, 3, 3, 8, 16], -1.0, 1.0);
    gpu.set_profiling(true);
    let y = conv3d(&tx, &tw, None, &cfg).unwrap();
    let got = y.to_vec().unwrap();
    gpu.set_profiling(false);
    let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
    assert!(
        ran.contains(&"conv3d_igemm::conv3d_igemm_fwd_64x64".to_string())
            && !ran.iter().any(|k| other_conv_kernel(k)),
        "{ran:?}"
    );
    assert_close(
        "conv3d on the override",
        &got,
        &rc::conv3d(&x, &w, None, &cfg).data,
        F32_ACCUM,
    );
    // An unknown name is an error naming the variable and the choices.
    gpu.set_tune_settings(memo_tuning(&[("conv3d", "igemm_9x9")]));
    let e = conv3d(&tx, &tw, None, &cfg).unwrap_err().to_string();
    assert!(
        e.contains("CADS_KERNEL_CONV3D") && e.contains("igemm_9x9") && e.contains("igemm_64x64"),
        "{e}"
    );
}
