//! `cads check` (src/selfcheck/): on this adapter every check passes, every variant of every
//! family is covered (a variant added to a kernel list is checked without editing the check)
//! and reaches its own kernels, a filter selects by `family/variant`, a filter that selects
//! nothing is an error, and the command line prints one JSON object per check (with its
//! kernels) and exits 1 when asked for nothing.
mod common;

use cads::ops::conv3d::ConvPath;
use cads::ops::{MatmulF16Kernel, MatmulKernel, UnaryOp};
use cads::selfcheck;
use common::{cads_command, gpu};

fn variants_of<'a>(report: &'a selfcheck::Report, family: &str) -> Vec<&'a str> {
    report
        .checks
        .iter()
        .filter(|c| c.family == family)
        .map(|c| c.variant.as_str())
        .collect()
}

#[test]
fn every_variant_of_every_family_passes_here() {
    let gpu = gpu();
    let report = selfcheck::run(&gpu, None).unwrap();
    if let Err(e) = report.verdict() {
        panic!("{e}");
    }
    for c in &report.checks {
        let worst = c.worst.expect("a passed check compared something");
        assert!(worst.is_finite() && worst <= 1.0, "{c:?}");
    }
    let matmul = variants_of(&report, "matmul");
    for k in MatmulKernel::ALL {
        assert!(matmul.contains(&k.name().as_str()), "matmul {}", k.name());
    }
    let conv = variants_of(&report, "conv3d");
    for p in ConvPath::ALL {
        assert!(conv.contains(&p.name().as_str()), "conv3d {}", p.name());
    }
    let f16 = variants_of(&report, "matmul_f16");
    if gpu.features().f16 {
        for k in MatmulF16Kernel::ALL {
            assert!(f16.contains(&k.name()), "matmul_f16 {}", k.name());
        }
    } else {
        assert!(f16.is_empty(), "f16 checks on a device without f16");
    }
    // The unary kernels on f16 storage, every sample op, and the mixed MLP tail: with f16 only.
    let unary16 = variants_of(&report, "unary_f16");
    let mixed_tail = variants_of(&report, "gelu_linear").contains(&"mixed");
    assert_eq!(mixed_tail, gpu.features().f16, "gelu_linear mixed");
    let mixed_mlp = variants_of(&report, "dw_mlp").contains(&"mixed");
    assert_eq!(mixed_mlp, gpu.features().f16, "dw_mlp mixed");
    if gpu.features().f16 {
        for op in UnaryOp::SAMPLES {
            assert!(unary16.contains(&op.name()), "unary_f16 {}", op.name());
        }
    } else {
        assert!(
            unary16.is_empty(),
            "f16 unary checks on a device without f16"
        );
    }
    // A device without float atomics has no float-atomic scatter to check.
    let scatter_atomic = report
        .checks
        .iter()
        .filter(|c| c.variant.ends_with("_scatter_atomic"))
        .count();
    assert_eq!(scatter_atomic > 0, gpu.features().float_atomics);
    for family in [
        "conv_transpose3d",
        "attention",
        "softmax",
        "log_softmax",
        "layer_norm",
        "instance_norm",
        "sum",
        "unary",
        "binary",
        "gelu_linear",
        "max_pool3d",
        "avg_pool3d",
        "resample",
        "l2_normalize",
        "normalized_linear",
        "soft_cross_entropy",
        "drr_forward",
        "drr_backproject",
        "adamw",
        "sgd",
        "ema",
        "pvt_encoder",
    ] {
        assert!(
            !variants_of(&report, family).is_empty(),
            "no {family} check"
        );
    }
    // Each check is one (family, variant, case): none is listed twice.
    let mut keys: Vec<_> = report
        .checks
        .iter()
        .map(|c| (c.family, c.variant.clone(), c.case.clone()))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a check listed twice");
}

#[test]
fn a_filter_selects_by_family_and_variant_and_inputs_do_not_depend_on_it() {
    let gpu = gpu();
    let some = selfcheck::run(&gpu, Some("conv3d/rows_c4")).unwrap();
    assert!(!some.checks.is_empty());
    assert!(some
        .checks
        .iter()
        .all(|c| c.family == "conv3d" && c.variant.starts_with("rows_c4")));
    // The same checks in a wider run see the same inputs: the same worst errors, bit for bit.
    let wider = selfcheck::run(&gpu, Some("conv3d/")).unwrap();
    for c in &some.checks {
        let twin = wider
            .checks
            .iter()
            .find(|w| w.variant == c.variant && w.case == c.case)
            .expect("the wider run holds every check of the narrower one");
        assert_eq!(twin.worst, c.worst, "{} {}", c.variant, c.case);
    }
    // Alternatives separated by `|`.
    let two = selfcheck::run(&gpu, Some("sgd/|ema/")).unwrap();
    let mut families: Vec<&str> = two.checks.iter().map(|c| c.family).collect();
    families.dedup();
    assert_eq!(families, ["sgd", "ema"]);
    let err = selfcheck::run(&gpu, Some("no-such-kernel")).unwrap_err();
    assert!(err.to_string().contains("a filter matching"), "{err}");
}

#[test]
fn cads_check_prints_json_lines_and_fails_on_an_empty_selection() {
    let out = cads_command()
        .args(["check", "--filter", "attention/", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cads check failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["family"], "attention", "{l}");
        assert_eq!(l["passed"], true, "{l}");
        assert!(l["ran_as"].is_string() && l["worst"].is_number(), "{l}");
        // --json records each check's kernels.
        let kernels = l["kernels"].as_array().expect("a kernels list");
        assert!(
            kernels
                .iter()
                .any(|k| k.as_str().unwrap().starts_with("attention::")),
            "{l}"
        );
    }
    assert!(
        stderr.contains(&format!("{} checks on", lines.len())),
        "{stderr}"
    );

    let out = cads_command()
        .args(["check", "--filter", "no-such-kernel"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a filter matching"), "{stderr}");
}

/// The entry-point text a kernel of the variant that ran must contain.
fn own_kernel(family: &str, ran_as: &str) -> String {
    let tile = |name: &str| name.split('_').nth(1).unwrap_or("").to_string();
    match (family, ran_as) {
        (_, "naive" | "f16_naive") => "naive".into(),
        ("matmul", "4x4") => "matmul_tile_4x4".into(),
        ("matmul", v) if v.starts_with("vec4_") => format!("matmul_vec4_{}", tile(v)),
        ("matmul", v) if v.starts_with("wg") => format!("matmul_tiled::matmul_{v}"),
        ("matmul", v) if v.starts_with("sg") => format!("matmul_subgroup::matmul_{v}"),
        ("matmul_f16", "f16_tile_4x4") => "matmul_f16_nn_4x4".into(),
        ("matmul_f16", v) if v.starts_with("f16_vec4_") => {
            format!("matmul_f16_vec4_{}", v.split('_').nth(2).unwrap_or(""))
        }
        ("matmul_f16", v) if v.starts_with("f16_coop") => "coop".into(),
        ("conv3d", "tiled") => "conv3d::conv3d_tiled".into(),
        ("conv3d", v) if v.starts_with("igemm_") => format!("conv3d_igemm_fwd_{}", &v[6..]),
        ("conv3d", "rows") => "_c2".into(),
        ("conv3d", "rows_c4") => "_m8_c4".into(),
        ("conv3d", "rows_c4_m24") => "_m24_c4".into(),
        ("conv3d", "rows_w16") => "[LANES=16]".into(),
        other => panic!("no expectation for {other:?}"),
    }
}

/// With kernels recorded, every variant of the kernel families reaches its own entry points in
/// at least one of its cases (a variant whose every case fell back to other kernels would be
/// checked in name only).
#[test]
fn each_variant_runs_its_own_kernels() {
    let gpu = common::fresh_gpu();
    for filter in ["matmul", "conv3d/"] {
        let report = selfcheck::run_reporting(&gpu, Some(filter), true, &mut |_| {}).unwrap();
        assert!(!gpu.is_profiling(), "the run restores the profiler");
        let mut variants: Vec<(&str, &str, &str)> = report
            .checks
            .iter()
            .map(|c| (c.family, c.variant.as_str(), c.ran_as.as_str()))
            .collect();
        variants.dedup();
        for (family, variant, ran_as) in variants {
            let want = own_kernel(family, ran_as);
            let reached = report
                .checks
                .iter()
                .filter(|c| c.family == family && c.variant == variant)
                .any(|c| c.kernels.iter().any(|k| k.contains(&want)));
            assert!(
                reached,
                "{family}/{variant} (ran as {ran_as}) never ran a `{want}` kernel"
            );
        }
    }
    // The encoder under autocast multiplies in f16 (where the device has it).
    if gpu.features().f16 {
        let amp = selfcheck::run_reporting(&gpu, Some("pvt_encoder/volume_amp"), true, &mut |_| {})
            .unwrap();
        let kernels = &amp.checks[0].kernels;
        assert!(
            kernels.iter().any(|k| k.starts_with("matmul_f16")),
            "{kernels:?}"
        );
    }
}
