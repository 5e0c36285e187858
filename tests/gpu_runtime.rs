//! The GPU runtime: embedding on a host device, limits, buffer pool, device loss.

mod common;

use cads::gpu::{size_class, AdapterChoice};
use cads::{ops, Error, Gpu, Tensor};
use common::*;

#[test]
fn runs_on_a_host_owned_device_and_leaves_it_usable() {
    let (device, queue) = pollster::block_on(async {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
            .await
            .unwrap_or_else(|e| panic!("no adapter: {e}. {}", cads::gpu::NO_ADAPTER_HINT));
        adapter
            .request_device(&wgpu::DeviceDescriptor::default())
            .await
            .unwrap()
    });
    let gpu = Gpu::from_device(device.clone(), queue.clone());
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let y = ops::mul(&x, &x).unwrap().to_vec().unwrap();
    assert_eq!(y, vec![1.0, 4.0, 9.0]);
    // The host's own work on the same device still runs.
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buf, 0, &7u32.to_le_bytes());
    queue.submit([]);
    buf.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert_eq!(&buf.get_mapped_range(..).unwrap()[..], &7u32.to_le_bytes());
}

#[test]
fn adapter_choice_by_name_and_unknown_name_error() {
    let gpu = gpu();
    let name = gpu.adapter().name.clone();
    // On the test adapter's backend: the same driver can be listed under two (llvmpipe is a
    // Vulkan and a GL adapter), and the first match over all backends is the Vulkan one.
    let picked = Gpu::with_choice(&AdapterChoice {
        backends: Some(wgpu::Backends::from(gpu.adapter().backend)),
        name: Some(name[..3].to_string()),
        ..AdapterChoice::default()
    })
    .unwrap();
    assert_eq!(picked.adapter().name, name);
    let err = Gpu::with_choice(&AdapterChoice {
        backends: None,
        name: Some("no-such-gpu-xyz".into()),
        ..AdapterChoice::default()
    })
    .unwrap_err();
    assert!(matches!(err, Error::NoAdapter { .. }), "{err}");
    assert!(err.to_string().contains("no-such-gpu-xyz"));
}

#[test]
fn tensors_over_the_binding_limit_are_typed_errors() {
    let gpu = gpu();
    let max = gpu.max_binding_bytes();
    let too_many = (max / 4 + 1) as usize;
    let err = Tensor::zeros(&gpu, &[too_many]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("Tensor::zeros"));
}

#[test]
fn pool_reuses_buffers_by_size_class_and_tracks_peak() {
    let gpu = fresh_gpu();
    let a = Tensor::zeros(&gpu, &[1000]).unwrap();
    let s0 = gpu.pool_stats();
    assert_eq!(s0.live_bytes, size_class(4000));
    drop(a);
    let _b = Tensor::zeros(&gpu, &[999]).unwrap(); // same class: reused
    let s1 = gpu.pool_stats();
    assert_eq!(s1.allocations, s0.allocations);
    assert_eq!(s1.reuses, s0.reuses + 1);
    let _c = Tensor::zeros(&gpu, &[5000]).unwrap();
    assert_eq!(
        gpu.pool_stats().peak_bytes,
        size_class(4000) + size_class(20000)
    );
    gpu.reset_peak_memory();
    gpu.trim_pool();
    assert_eq!(gpu.pool_stats().cached_bytes, 0);
}

/// Launches share one compute pass until a copy, a clear or a submit needs the encoder
/// (src/gpu/recorder.rs). A chain of 1,300 dependent launches, with buffer copies (`assign`) and
/// clears (`zeros`) between them and across the forced submit every 512 launches, gives the
/// sequential result exactly (every value an integer below 2^24).
#[test]
fn dependent_launches_see_each_others_writes_across_copies_and_submits() {
    let gpu = fresh_gpu();
    let n = 1000;
    let mut want: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut x = Tensor::from_slice(&gpu, &want, &[n]).unwrap();
    let one = Tensor::full(&gpu, &[n], 1.0).unwrap();
    let mirror = Tensor::zeros(&gpu, &[n]).unwrap();
    for i in 0..1300 {
        x = ops::add(&x, &one).unwrap();
        want.iter_mut().for_each(|v| *v += 1.0);
        if i % 211 == 0 {
            // A copy in the stream: the launch after it must read what it copied.
            mirror.assign(&x).unwrap();
            x = ops::add(&mirror, &mirror).unwrap();
            want.iter_mut().for_each(|v| *v *= 2.0);
        }
        if i % 131 == 0 {
            // A clear of a buffer the pool may have lent before: it must not leak old values.
            let zero = Tensor::zeros(&gpu, &[n]).unwrap();
            x = ops::add(&x, &zero).unwrap();
        }
    }
    assert_eq!(x.to_vec().unwrap(), want);
}

/// Which free buffer the pool lends depends on the set of free buffers alone (the one created
/// first), not on the order they came back: a step repeated from the same free set gets the same
/// buffers, which is what lets its launches reuse their bind groups.
#[test]
fn the_pool_lends_the_first_created_free_buffer_whatever_the_return_order() {
    let gpu = fresh_gpu();
    let make = || Tensor::zeros(&gpu, &[100]).unwrap();
    let mut first: Option<Vec<wgpu::Buffer>> = None;
    for order in [[0usize, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
        let mut held: Vec<Option<Tensor>> = (0..3).map(|_| Some(make())).collect();
        let buffers: Vec<wgpu::Buffer> = held
            .iter()
            .map(|t| t.as_ref().unwrap().buffer().clone())
            .collect();
        assert_eq!(first.get_or_insert(buffers.clone()), &buffers);
        for i in order {
            held[i] = None;
        }
        let again: Vec<Tensor> = (0..3).map(|_| make()).collect();
        for (t, b) in again.iter().zip(&buffers) {
            assert_eq!(t.buffer(), b, "returned in the order {order:?}");
        }
    }
}

/// Launches that recur (same kernel, params and buffers) reuse their bind group; launches that
/// differ only in their params get params of their own, also inside one submit; trimming the
/// pool drops the cached bind groups with the buffers.
#[test]
fn bind_groups_are_reused_per_kernel_params_and_buffers() {
    let gpu = fresh_gpu();
    let n = 256;
    let base: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let x = Tensor::from_slice(&gpu, &base, &[n]).unwrap();
    let chain = || {
        // 300 launches of one kernel on the same buffers (the pool lends the same ones each
        // round) with 300 different scalars, summed: each must have read its own scalar.
        let mut acc = Tensor::zeros(&gpu, &[n]).unwrap();
        for s in 0..300 {
            let shifted = ops::add_scalar(&x, s as f32).unwrap();
            acc = ops::add(&acc, &shifted).unwrap();
        }
        acc.to_vec().unwrap()
    };
    let want: Vec<f32> = base.iter().map(|v| 300.0 * v + 44850.0).collect();
    assert_eq!(chain(), want);
    let before = gpu.bind_group_stats();
    assert_eq!(chain(), want);
    let after = gpu.bind_group_stats();
    assert_eq!(
        after.misses, before.misses,
        "the repeated round made no bind group: {before:?} → {after:?}"
    );
    assert_eq!(after.hits - before.hits, 600);
    gpu.trim_pool();
    assert_eq!(gpu.bind_group_stats().cached, 0);
    assert_eq!(gpu.pool_stats().cached_bytes, 0);
    assert_eq!(chain(), want, "after the trim, new bind groups and buffers");
}

/// More distinct launches than the cache holds: the oldest half is dropped (after a submit, so
/// nothing recorded still reads the freed params slots) and every result is still right.
#[test]
fn the_bind_group_cache_stays_bounded_and_evicts_safely() {
    let gpu = fresh_gpu();
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[4]).unwrap();
    // Every output stays alive, so each launch binds a new buffer with a new scalar.
    let outs: Vec<Tensor> = (0..6000)
        .map(|s| ops::add_scalar(&x, s as f32).unwrap())
        .collect();
    let cached = gpu.bind_group_stats().cached;
    assert!((2048..=4096).contains(&cached), "{cached} cached");
    for (s, t) in outs.iter().enumerate().step_by(97) {
        let s = s as f32;
        assert_eq!(t.to_vec().unwrap(), [1.0 + s, 2.0 + s, 3.0 + s, 4.0 + s]);
    }
}

#[test]
fn a_lost_device_gives_a_typed_error_not_a_panic() {
    let gpu = fresh_gpu();
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0], &[2]).unwrap();
    gpu.device().destroy();
    let _ = gpu.device().poll(wgpu::PollType::wait_indefinitely());
    let err = ops::exp(&x).and_then(|y| y.to_vec()).unwrap_err();
    assert!(
        matches!(err, Error::DeviceLost { .. } | Error::Gpu { .. }),
        "{err}"
    );
}

#[test]
fn profiling_counts_each_kernel_launch_and_stays_off_by_default() {
    let gpu = fresh_gpu();
    let a = Tensor::full(&gpu, &[1000], 1.0).unwrap();
    let b = Tensor::full(&gpu, &[1000], 2.0).unwrap();
    ops::add(&a, &b).unwrap();
    gpu.synchronize().unwrap();
    assert!(gpu.take_profile().is_empty(), "profiling is off by default");

    gpu.set_profiling(true);
    let c = ops::add(&a, &b).unwrap();
    ops::add(&c, &b).unwrap();
    ops::matmul(
        &a.reshape(&[10, 100]).unwrap(),
        &b.reshape(&[100, 10]).unwrap(),
        false,
        false,
    )
    .unwrap();
    gpu.set_profiling(false);
    let rows = gpu.take_profile();
    let launches = |name: &str| {
        rows.iter()
            .filter(|r| r.kernel.contains(name))
            .map(|r| r.launches)
            .sum::<u64>()
    };
    assert_eq!(launches("elementwise::binary"), 2, "{rows:?}");
    assert!(launches("matmul") >= 1, "{rows:?}");
    assert!(rows.iter().all(|r| r.ms >= 0.0 && r.launches > 0));
    assert!(
        rows.windows(2).all(|w| w[0].ms >= w[1].ms),
        "sorted by time"
    );
    assert!(
        gpu.take_profile().is_empty(),
        "taking the profile clears it"
    );
}

/// `set_profiling_by_grid` (what `CADS_PROFILE=grid` turns on in `cads bench`) keys each row by
/// kernel and launch grid, so one entry point over two sizes gives two rows.
#[test]
fn profiling_by_grid_splits_one_kernel_by_launch_size() {
    let gpu = fresh_gpu();
    let small = Tensor::full(&gpu, &[1000], 1.0).unwrap();
    let large = Tensor::full(&gpu, &[100_000], 1.0).unwrap();
    gpu.set_profiling(true);
    gpu.set_profiling_by_grid(true);
    ops::add(&small, &small).unwrap();
    ops::add(&small, &small).unwrap();
    ops::add(&large, &large).unwrap();
    gpu.set_profiling(false);
    gpu.set_profiling_by_grid(false);
    let rows: Vec<_> = gpu
        .take_profile()
        .into_iter()
        .filter(|r| r.kernel.starts_with("elementwise::binary"))
        .collect();
    assert_eq!(rows.len(), 2, "one row per grid: {rows:?}");
    let mut launches: Vec<u64> = rows.iter().map(|r| r.launches).collect();
    launches.sort();
    assert_eq!(launches, [1, 2], "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.kernel.contains("Linear(") || r.kernel.contains("Xyz(")),
        "{rows:?}"
    );
}
