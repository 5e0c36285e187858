//! Per-adapter kernel choice (src/gpu/tuning.rs) on a real context: the override picks the
//! named variant and rejects unknown names, `CADS_TUNE=off` gives the default, a measurement
//! picks the fastest candidate and is remembered (memo, then the cache file), a corrupt cache
//! file is measured over and replaced, failing candidates are left out, a single candidate runs
//! unmeasured. Every matmul variant's agreement with the CPU reference is tests/matmul.rs (it
//! walks `MatmulKernel::ALL`).

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use cads::gpu::{
    kernels_fingerprint, ChoiceSource, KernelSpec, ParamsLayout, TuneRequest, TuneSettings,
    TUNE_ROUNDS,
};
use cads::ops::MatmulKernel;
use cads::{Error, Gpu};
use common::*;

/// A folder of its own under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cads-tuning-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(overrides: &[(&str, &str)], tune: bool, cache_dir: Option<PathBuf>) -> TuneSettings {
    TuneSettings {
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        tune,
        cache_dir,
    }
}

fn gpu_with(s: TuneSettings) -> Gpu {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(s);
    gpu
}

#[test]
fn the_override_picks_the_named_matmul_variant() {
    for name in ["vec4_8x4", "vec4_32x4_w8", "naive"] {
        let gpu = gpu_with(settings(&[("matmul", name)], true, None));
        let choice = MatmulKernel::tuned_choice(&gpu).unwrap();
        assert_eq!(choice.variant, name);
        assert_eq!(choice.source, ChoiceSource::Override);
        assert_eq!(MatmulKernel::chosen(&gpu).unwrap().name(), name);
    }
}

#[test]
fn an_unknown_override_is_an_error_naming_the_variable_and_the_choices() {
    let gpu = gpu_with(settings(&[("matmul", "vec4_99x99")], true, None));
    let err = MatmulKernel::chosen(&gpu).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::InvalidArgument { op: "matmul", .. }),
        "{text}"
    );
    assert!(text.contains("CADS_KERNEL_MATMUL"), "{text}");
    assert!(
        text.contains("vec4_99x99") && text.contains("vec4_8x4"),
        "{text}"
    );
    // ... and so is a matmul run under it (the op goes through the choice).
    let a = cads::Tensor::from_slice(&gpu, &[1.0; 16], &[4, 4]).unwrap();
    assert!(cads::ops::matmul(&a, &a, false, false).is_err());
}

#[test]
fn tuning_off_runs_the_default_and_writes_no_cache() {
    let dir = TempDir::new("off");
    let gpu = gpu_with(settings(&[], false, Some(dir.0.clone())));
    let choice = MatmulKernel::tuned_choice(&gpu).unwrap();
    assert_eq!(choice.source, ChoiceSource::Default);
    assert_eq!(choice.variant, MatmulKernel::default_for(&gpu).name());
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn a_single_candidate_runs_unmeasured_and_writes_no_cache() {
    let dir = TempDir::new("single");
    let gpu = gpu_with(settings(&[], true, Some(dir.0.clone())));
    let req = TuneRequest {
        op: "fake_single",
        variants: &["only", "forced_only"],
        candidates: &["only"],
        default: "forced_only",
        kernels: &[],
    };
    let choice = gpu
        .tuned_variant(&req, |v| {
            panic!("{v} measured though it is the only candidate")
        })
        .unwrap();
    assert_eq!(choice.variant, "only");
    assert_eq!(choice.source, ChoiceSource::OnlyCandidate);
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
    // The override still wins over it.
    gpu.set_tune_settings(settings(
        &[("fake_single", "forced_only")],
        true,
        Some(dir.0.clone()),
    ));
    let choice = gpu.tuned_variant(&req, |_| unreachable!()).unwrap();
    assert_eq!(
        (choice.variant.as_str(), choice.source),
        ("forced_only", ChoiceSource::Override)
    );
}

#[test]
fn the_fastest_candidate_is_chosen_then_remembered_in_memory_and_on_disk() {
    let dir = TempDir::new("fastest");
    let gpu = gpu_with(settings(&[], true, Some(dir.0.clone())));
    let calls = RefCell::new(Vec::new());
    let req = TuneRequest {
        op: "fake_op",
        variants: &["slow", "fast", "broken", "unused"],
        candidates: &["slow", "fast", "broken"],
        default: "slow",
        kernels: &[],
    };
    let measure = |v: &str| {
        calls.borrow_mut().push(v.to_string());
        match v {
            "slow" => Ok(5.0),
            "fast" => Ok(1.0),
            _ => Err(Error::invalid("fake_op", "a kernel that compiles", "none")),
        }
    };
    let choice = gpu.tuned_variant(&req, measure).unwrap();
    assert_eq!(choice.variant, "fast");
    assert_eq!(choice.source, ChoiceSource::Measured);
    // A warm-up call each, then the rounds for the two that work ("broken" left out).
    assert_eq!(calls.borrow().len(), 3 + 2 * TUNE_ROUNDS);
    // Memo: no more measurements.
    let again = gpu.tuned_variant(&req, measure).unwrap();
    assert_eq!(again.variant, "fast");
    assert_eq!(calls.borrow().len(), 3 + 2 * TUNE_ROUNDS);
    // Disk: a new context (same adapter, same folder) reads the file.
    let other = gpu_with(settings(&[], true, Some(dir.0.clone())));
    let cached = other
        .tuned_variant(&req, |_| panic!("a cached choice must not be measured"))
        .unwrap();
    assert_eq!(cached.variant, "fast");
    assert_eq!(cached.source, ChoiceSource::Cache);
    // Different candidates (a later build with a new variant, so a new process: a new context)
    // measure again.
    let grown = TuneRequest {
        candidates: &["slow", "fast", "unused"],
        ..req
    };
    let later = gpu_with(settings(&[], true, Some(dir.0.clone())));
    let remeasured = later
        .tuned_variant(&grown, |v| Ok(if v == "unused" { 0.5 } else { 2.0 }))
        .unwrap();
    assert_eq!(remeasured.variant, "unused");
    assert_eq!(remeasured.source, ChoiceSource::Measured);
}

/// Candidates are timed with the profiler off (its wait after every launch would skew the
/// choice kept on disk), and a profiler that was on is on again afterwards.
#[test]
fn candidates_are_timed_with_the_profiler_off() {
    let dir = TempDir::new("profiler");
    let gpu = gpu_with(settings(&[], true, Some(dir.0.clone())));
    gpu.set_profiling(true);
    let req = TuneRequest {
        op: "fake_profiled_op",
        variants: &["a", "b"],
        candidates: &["a", "b"],
        default: "a",
        kernels: &[],
    };
    let seen = RefCell::new(Vec::new());
    let choice = gpu
        .tuned_variant(&req, |v| {
            seen.borrow_mut().push(gpu.is_profiling());
            Ok(if v == "b" { 1.0 } else { 2.0 })
        })
        .unwrap();
    assert_eq!(choice.variant, "b");
    assert!(!seen.borrow().is_empty());
    assert!(
        seen.borrow().iter().all(|on| !on),
        "profiling during a measurement"
    );
    assert!(gpu.is_profiling(), "the profiler is restored");
    gpu.set_profiling(false);
}

/// A kernel of a fake op's family, with this WGSL source (never compiled: only fingerprinted).
const fn fake_kernel(source: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "fake",
        source,
        entry: "main",
        inputs: 1,
        outputs: 1,
        params: ParamsLayout {
            name: "FakeParams",
            size: 16,
            fields: &[],
        },
        constants: &[],
    }
}

/// A later build whose kernels changed under the same variant names measures again; the same
/// kernels reuse the cached choice. The fingerprint is stable and sees shader, entry and source.
#[test]
fn a_choice_cached_on_other_kernels_is_measured_again() {
    const BEFORE: &[KernelSpec] = &[fake_kernel("fn main() {}")];
    const AFTER: &[KernelSpec] = &[fake_kernel("fn main() { let x = 1; }")];
    let dir = TempDir::new("kernels");
    let req = TuneRequest {
        op: "fake_op",
        variants: &["a", "b"],
        candidates: &["a", "b"],
        default: "a",
        kernels: &[BEFORE],
    };
    let fresh = || gpu_with(settings(&[], true, Some(dir.0.clone())));
    let first = fresh()
        .tuned_variant(&req, |v| Ok(if v == "a" { 1.0 } else { 2.0 }))
        .unwrap();
    assert_eq!(
        (first.variant.as_str(), first.source),
        ("a", ChoiceSource::Measured)
    );
    let same = fresh()
        .tuned_variant(&req, |_| {
            panic!("the same kernels must reuse the cached choice")
        })
        .unwrap();
    assert_eq!(
        (same.variant.as_str(), same.source),
        ("a", ChoiceSource::Cache)
    );
    let changed = TuneRequest {
        kernels: &[AFTER],
        ..req
    };
    let again = fresh()
        .tuned_variant(&changed, |v| Ok(if v == "b" { 1.0 } else { 2.0 }))
        .unwrap();
    assert_eq!(
        (again.variant.as_str(), again.source),
        ("b", ChoiceSource::Measured)
    );
    // Stable (FNV-1a, not std's hasher) and sensitive to each part of a kernel.
    assert_eq!(kernels_fingerprint(&[]), "cbf29ce484222325");
    let base = kernels_fingerprint(&[BEFORE]);
    assert_eq!(base, kernels_fingerprint(&[BEFORE]));
    assert_ne!(base, kernels_fingerprint(&[AFTER]));
    let renamed = [KernelSpec {
        entry: "main2",
        ..fake_kernel("fn main() {}")
    }];
    assert_ne!(base, kernels_fingerprint(&[&renamed]));
    assert_ne!(base, kernels_fingerprint(&[BEFORE, BEFORE]));
}

#[test]
fn every_candidate_failing_is_an_error_not_a_choice() {
    let gpu = gpu_with(settings(&[], true, None));
    let req = TuneRequest {
        op: "fake_op",
        variants: &["a", "b"],
        candidates: &["a", "b"],
        default: "a",
        kernels: &[],
    };
    let err = gpu
        .tuned_variant(&req, |v| {
            Err(Error::invalid("fake_op", "a kernel that runs", v))
        })
        .unwrap_err();
    assert!(err.to_string().contains("fake_op"), "{err}");
}

#[test]
fn a_corrupt_cache_file_is_ignored_measured_over_and_replaced() {
    let dir = TempDir::new("corrupt");
    let gpu = gpu_with(settings(&[], true, Some(dir.0.clone())));
    let path = gpu.tuning_cache_path().unwrap();
    assert!(path.starts_with(&dir.0));
    std::fs::write(&path, b"{\"choices\": {\"matmul\": [not json").unwrap();
    let choice = MatmulKernel::tuned_choice(&gpu).unwrap();
    assert_eq!(choice.source, ChoiceSource::Measured);
    let kernel = MatmulKernel::from_name(&choice.variant).unwrap();
    assert!(matches!(kernel, MatmulKernel::Vec4 { .. }), "{kernel:?}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        written["choices"]["matmul"]["variant"],
        choice.variant.as_str()
    );
    // Every vec4 candidate was timed and its time kept beside the choice.
    for k in MatmulKernel::ALL {
        if let MatmulKernel::Vec4 { .. } = k {
            assert!(
                written["choices"]["matmul"]["ms"][k.name()]
                    .as_f64()
                    .unwrap()
                    > 0.0
            );
        }
    }
    // A matmul on the tuned context still matches the naive oracle.
    let mut rng = cads::util::Rng::new(5);
    let a =
        cads::Tensor::from_slice(&gpu, &rng.vec_uniform(64 * 32, -1.0, 1.0), &[64, 32]).unwrap();
    let b =
        cads::Tensor::from_slice(&gpu, &rng.vec_uniform(32 * 48, -1.0, 1.0), &[32, 48]).unwrap();
    let got = cads::ops::matmul(&a, &b, false, false)
        .unwrap()
        .to_vec()
        .unwrap();
    let want: Vec<f64> = cads::ops::matmul_with(&a, &b, false, false, MatmulKernel::Naive)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close("tuned matmul vs naive", &got, &want, cads::util::F32_ACCUM);
}

#[test]
fn an_unwritable_cache_folder_costs_a_warning_not_an_error() {
    let dir = TempDir::new("unwritable");
    // A file where the cache folder should be: neither create_dir_all nor the write can work.
    let blocker = dir.0.join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let gpu = gpu_with(settings(&[], true, Some(blocker.join("tuning"))));
    let req = TuneRequest {
        op: "fake_op",
        variants: &["a", "b"],
        candidates: &["a", "b"],
        default: "a",
        kernels: &[],
    };
    let choice = gpu
        .tuned_variant(&req, |v| Ok(if v == "b" { 1.0 } else { 2.0 }))
        .unwrap();
    assert_eq!(choice.variant, "b");
}
