//! `cads check` (src/selfcheck/): on this adapter every check passes, every variant of every
//! family is covered (a variant added to a kernel list is checked without editing the check),
//! a filter selects by `family/variant`, a filter that selects nothing is an error, and the
//! command line prints one JSON object per check and exits 1 when asked for nothing.
mod common;

use cads::ops::conv3d::ConvPath;
use cads::ops::{MatmulF16Kernel, MatmulKernel};
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
