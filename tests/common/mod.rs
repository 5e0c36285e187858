//! Shared test helpers: the one GPU context per test binary, comparisons and random data.
#![allow(dead_code)]

pub mod conv_check;
pub mod f16_bounds;
pub mod f16_matmul;

use std::sync::OnceLock;

use cads::reference::Array;
use cads::util::{compare, Rng, Tolerance};
use cads::{Gpu, Tensor};

/// The test GPU. With no adapter this FAILS (panics) with instructions; it never skips.
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().map(test_tuning).map_err(|e| e.to_string()))
        .clone()
        .unwrap_or_else(|e| panic!("GPU test cannot run: {e}"))
}

/// A context of its own (own pool and counters) for tests that measure memory.
pub fn fresh_gpu() -> Gpu {
    test_tuning(Gpu::new().unwrap_or_else(|e| panic!("GPU test cannot run: {e}")))
}

/// The tests' own tuning cache folder (under cargo's target/tmp, shared by the test binaries of
/// a build): a kernel choice the tests measure runs beside other tests, so it must not become
/// the choice the user's benchmarks and training read from their cache.
pub fn test_tune_cache() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tuning")
}

/// `gpu` with its tuning cache in [`test_tune_cache`] (overrides and `CADS_TUNE` as the
/// environment says).
pub fn test_tuning(gpu: Gpu) -> Gpu {
    let mut settings = gpu.tune_settings();
    settings.cache_dir = Some(test_tune_cache());
    gpu.set_tune_settings(settings);
    gpu
}

/// Tuning settings that measure (nothing cached on disk, only the context's memo) with these
/// `(op, variant)` overrides, as `CADS_KERNEL_<OP>` would give them.
pub fn memo_tuning(overrides: &[(&str, &str)]) -> cads::gpu::TuneSettings {
    cads::gpu::TuneSettings {
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tune: true,
        cache_dir: None,
    }
}

/// The `cads` binary with its tuning cache in [`test_tune_cache`].
pub fn cads_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cads"));
    c.env(cads::gpu::TUNE_CACHE_ENV, test_tune_cache());
    c
}

/// Panic with the worst-element report unless `got` matches `want` within `tol`.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: Tolerance) {
    let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
    if let Err(msg) = compare(what, &got, want, tol) {
        panic!("{msg}");
    }
}

/// f64 version for reference-vs-finite-difference checks.
pub fn assert_close64(what: &str, got: &[f64], want: &[f64], tol: Tolerance) {
    if let Err(msg) = compare(what, got, want, tol) {
        panic!("{msg}");
    }
}

/// ‖got − want‖₂ / ‖want‖₂ in f64, over f32 or f64 values (a `want` of all zeros divides by
/// 1e-300 rather than 0). Panics on a length mismatch rather than comparing a prefix.
pub fn relative_l2<G: Copy + Into<f64>, W: Copy + Into<f64>>(got: &[G], want: &[W]) -> f64 {
    assert_eq!(got.len(), want.len(), "relative_l2: lengths differ");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w): (f64, f64) = (g.into(), w.into());
        diff += (g - w).powi(2);
        norm += w * w;
    }
    (diff / norm.max(1e-300)).sqrt()
}

/// Random array (uniform in [lo, hi)) and the same data on the GPU.
pub fn random_pair(gpu: &Gpu, rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> (Array, Tensor) {
    let n = shape.iter().product();
    let data = rng.vec_uniform(n, lo, hi);
    (
        Array::from_f32(&data, shape),
        Tensor::from_slice(gpu, &data, shape).expect("upload"),
    )
}

/// Same as `random_pair` but the GPU tensor is a leaf that requires grad.
pub fn random_param(
    gpu: &Gpu,
    rng: &mut Rng,
    shape: &[usize],
    lo: f32,
    hi: f32,
) -> (Array, Tensor) {
    let (a, t) = random_pair(gpu, rng, shape, lo, hi);
    (a, t.requires_grad_(true))
}

/// Run `f` with the profiler on `gpu` (a context of the test's own, [`fresh_gpu`]: tests run in
/// parallel and the profile is per context); its result and the names of the kernels that ran.
pub fn ran<T>(gpu: &Gpu, f: impl FnOnce() -> T) -> (T, Vec<String>) {
    gpu.set_profiling(true);
    let out = f();
    gpu.synchronize().unwrap();
    gpu.set_profiling(false);
    let kernels = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
    (out, kernels)
}
