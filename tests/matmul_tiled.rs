//! The workgroup-memory and subgroup matmul tiles for GPUs (src/ops/matmul_tiled.rs), forced by
//! name on whatever adapter runs the tests (lavapipe has subgroups and 32 KiB of workgroup
//! memory, so every tile runs there): forward and backward against src/reference/matmul.rs with
//! batches, broadcast batches, all four transposes, extents that straddle tiles and split-K;
//! the kernel that actually ran (from the profiler); and the fallbacks a device without
//! subgroups or with little workgroup memory takes, before any work. tests/matmul.rs walks
//! `MatmulKernel::ALL` (these tiles included) over its prime extents and identities.

mod common;

use cads::ops::matmul_tiled::SharedTile;
use cads::ops::{self, MatmulKernel};
use cads::reference::{matmul as refmm, Array};
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_GRAD};
use cads::{Gpu, Tensor};
use common::*;

fn stored(batch: &[usize], rows: usize, cols: usize, t: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if t { [cols, rows] } else { [rows, cols] });
    s
}

/// Forward and both gradients of one product on `kernel` against the reference.
#[allow(clippy::too_many_arguments)]
fn check(
    gpu: &Gpu,
    kernel: MatmulKernel,
    rng: &mut Rng,
    (ba, bb): (&[usize], &[usize]),
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
    tol: (Tolerance, Tolerance),
) {
    let what = format!(
        "{} a{ba:?} b{bb:?} M{m} K{k} N{n} ta {ta} tb {tb}",
        kernel.name()
    );
    let (a, at) = random_param(gpu, rng, &stored(ba, m, k, ta), -1.0, 1.0);
    let (b, bt) = random_param(gpu, rng, &stored(bb, k, n, tb), -1.0, 1.0);
    let out = ops::matmul_with(&at, &bt, ta, tb, kernel).unwrap();
    let want = refmm::matmul(&a, &b, ta, tb);
    assert_eq!(out.shape(), want.shape.as_slice(), "{what}");
    assert_close(
        &format!("{what} forward"),
        &out.to_vec().unwrap(),
        &want.data,
        tol.0,
    );
    let g = rng.vec_uniform(out.numel(), -1.0, 1.0);
    let grads = out
        .backward_with(&Tensor::from_slice(gpu, &g, out.shape()).unwrap())
        .unwrap();
    let (ga, gb) = refmm::matmul_backward(&a, &b, ta, tb, &Array::from_f32(&g, out.shape()));
    assert_close(
        &format!("{what} grad a"),
        &grads.get(&at).unwrap().to_vec().unwrap(),
        &ga.data,
        tol.1,
    );
    assert_close(
        &format!("{what} grad b"),
        &grads.get(&bt).unwrap().to_vec().unwrap(),
        &gb.data,
        tol.1,
    );
}

const TILES: [MatmulKernel; 4] = [
    MatmulKernel::Shared(SharedTile::Wg64x64),
    MatmulKernel::Shared(SharedTile::Wg128x64),
    MatmulKernel::Shared(SharedTile::Wg128x128),
    MatmulKernel::Shared(SharedTile::Sg128x128),
];

#[test]
fn every_tile_matches_reference_on_batches_broadcasts_and_transposes() {
    let gpu = gpu();
    let mut rng = Rng::new(131);
    let batches: &[(&[usize], &[usize])] = &[
        (&[], &[]),
        (&[3], &[3]),
        (&[2, 3], &[]),     // shared weight (folded into rows for row-major A)
        (&[], &[4]),        // shared left operand
        (&[2, 1], &[1, 3]), // broadcast both ways
    ];
    for kernel in TILES {
        for &batch in batches {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                // Past one tile in every direction with partial edge tiles; K not a multiple of
                // the panel depth BK.
                check(
                    &gpu,
                    kernel,
                    &mut rng,
                    batch,
                    (133, 37, 141),
                    ta,
                    tb,
                    (F32_ACCUM, F32_GRAD),
                );
            }
        }
    }
}

#[test]
fn long_k_products_split_and_match_reference() {
    const LONG: Tolerance = Tolerance {
        abs: 2e-3,
        rel: 2e-4,
    };
    let gpu = gpu();
    let mut rng = Rng::new(132);
    for kernel in TILES {
        for (batch, (m, k, n), ta, tb) in [
            ((&[][..], &[][..]), (6, 4100, 12), false, false),
            ((&[], &[]), (64, 20000, 64), true, false),
            ((&[3], &[]), (5, 2048, 8), false, true),
        ] {
            check(
                &gpu,
                kernel,
                &mut rng,
                batch,
                (m, k, n),
                ta,
                tb,
                (LONG, LONG),
            );
        }
    }
}

/// The kernels one product launched, by `shader::entry`.
fn kernels_run(gpu: &Gpu, kernel: MatmulKernel, (m, k, n): (usize, usize, usize)) -> Vec<String> {
    let mut rng = Rng::new(133);
    let a = Tensor::from_slice(gpu, &rng.vec_uniform(m * k, -1.0, 1.0), &[m, k]).unwrap();
    let b = Tensor::from_slice(gpu, &rng.vec_uniform(k * n, -1.0, 1.0), &[k, n]).unwrap();
    gpu.set_profiling(true);
    let out = ops::matmul_with(&a, &b, false, false, kernel).unwrap();
    let got = out.to_vec().unwrap();
    gpu.set_profiling(false);
    let want = refmm::matmul(
        &Array::from_f32(&a.to_vec().unwrap(), &[m, k]),
        &Array::from_f32(&b.to_vec().unwrap(), &[k, n]),
        false,
        false,
    );
    assert_close(
        &format!("{} forward", kernel.name()),
        &got,
        &want.data,
        F32_ACCUM,
    );
    gpu.take_profile().into_iter().map(|t| t.kernel).collect()
}

fn entry(tile: SharedTile) -> String {
    let shader = if tile.uses_subgroups() {
        "matmul_subgroup"
    } else {
        "matmul_tiled"
    };
    format!("{shader}::matmul_{}", tile.name())
}

#[test]
fn the_named_tile_is_the_kernel_that_runs() {
    let gpu = fresh_gpu();
    if gpu.adapter().driver.contains("llvmpipe") {
        // lavapipe runs every tile (subgroups, 32 KiB of workgroup memory).
        assert!(gpu.features().subgroups);
        for tile in SharedTile::ALL {
            assert_eq!(
                MatmulKernel::Shared(tile).runs_as(&gpu),
                MatmulKernel::Shared(tile)
            );
        }
    }
    for tile in SharedTile::ALL {
        let kernel = MatmulKernel::Shared(tile);
        let MatmulKernel::Shared(runs) = kernel.runs_as(&gpu) else {
            continue; // no tile fits this device: tested below on a device made so
        };
        let ran = kernels_run(&gpu, kernel, (100, 40, 90));
        assert_eq!(ran, [entry(runs)]);
        // A long K with few output tiles: the split-K partials, then their sum.
        let ran = kernels_run(&gpu, kernel, (8, 8192, 8));
        assert!(ran.contains(&entry(runs)) && ran.len() > 1, "{ran:?}");
    }
}

/// A device on the test adapter with `features` and the adapter's limits changed by `limits`.
fn device_with(features: wgpu::Features, limits: impl FnOnce(&mut wgpu::Limits)) -> Gpu {
    let (device, queue) = pollster::block_on(async {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
            .await
            .unwrap_or_else(|e| panic!("no adapter: {e}. {}", cads::gpu::NO_ADAPTER_HINT));
        let mut required = adapter.limits();
        limits(&mut required);
        adapter
            .request_device(&wgpu::DeviceDescriptor {
                required_features: features,
                required_limits: required,
                ..wgpu::DeviceDescriptor::default()
            })
            .await
            .unwrap()
    });
    Gpu::from_device(device, queue)
}

#[test]
fn a_device_without_subgroups_runs_the_workgroup_memory_tile_instead() {
    let gpu = device_with(wgpu::Features::empty(), |_| {});
    assert!(!gpu.features().subgroups);
    let sg = MatmulKernel::Shared(SharedTile::Sg128x128);
    let wg = MatmulKernel::Shared(SharedTile::Wg128x128);
    assert_eq!(sg.runs_as(&gpu), wg);
    let ran = kernels_run(&gpu, sg, (100, 40, 90));
    assert_eq!(ran, ["matmul_tiled::matmul_wg128x128"]);
    // Nothing failed on the device (a subgroup shader would not even compile there).
    assert!(gpu.synchronize().is_ok());
}

#[test]
fn a_device_with_little_workgroup_memory_falls_back_before_any_work() {
    // WebGPU's baseline 16 KiB: the 128 × 64 tile (12.8 KB) runs for the larger ones.
    let gpu = device_with(wgpu::Features::empty(), |l| {
        l.max_compute_workgroup_storage_size = 16_384
    });
    for (tile, runs) in [
        (SharedTile::Wg64x64, SharedTile::Wg128x64),
        (SharedTile::Wg128x64, SharedTile::Wg128x64),
        (SharedTile::Wg128x128, SharedTile::Wg128x64),
        (SharedTile::Sg128x128, SharedTile::Wg128x64),
    ] {
        let kernel = MatmulKernel::Shared(tile);
        assert_eq!(kernel.runs_as(&gpu), MatmulKernel::Shared(runs), "{tile:?}");
        let ran = kernels_run(&gpu, kernel, (70, 24, 70));
        assert_eq!(ran, [format!("matmul_tiled::matmul_{}", runs.name())]);
    }
    // Less than any tile needs: the vec4 register tile.
    let gpu = device_with(wgpu::Features::empty(), |l| {
        l.max_compute_workgroup_storage_size = 8_192
    });
    let kernel = MatmulKernel::Shared(SharedTile::Wg64x64);
    assert_eq!(kernel.runs_as(&gpu), MatmulKernel::vec4(4, 4));
    // (N = 132: past the 128 columns up to which the tile runs as its `_w16` companion.)
    let ran = kernels_run(&gpu, kernel, (70, 24, 132));
    assert_eq!(ran, ["matmul_vec4::matmul_vec4_4x4"]);
    assert!(gpu.synchronize().is_ok());
}

#[test]
fn cpu_adapters_time_only_the_register_tiles_gpus_also_the_workgroup_tiles() {
    let gpu = gpu();
    let candidates = MatmulKernel::candidates(&gpu);
    let register: Vec<_> = candidates
        .iter()
        .filter(|k| matches!(k, MatmulKernel::Vec4 { .. }))
        .collect();
    let shared: Vec<_> = candidates
        .iter()
        .filter_map(|k| match k {
            MatmulKernel::Shared(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(register.len() + shared.len(), candidates.len());
    assert!(register.len() >= 4, "{candidates:?}");
    if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
        assert!(shared.is_empty(), "{candidates:?}");
    } else {
        assert_eq!(shared, SharedTile::candidates(&gpu));
    }
    // ... while every tile is a valid override name.
    for tile in SharedTile::ALL {
        assert_eq!(
            MatmulKernel::from_name(tile.name()).unwrap(),
            MatmulKernel::Shared(tile)
        );
    }
}
