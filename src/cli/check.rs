//! `cads check`: the self-check of every kernel variant on this adapter against the CPU
//! reference (src/selfcheck/), one line per check, then a summary; status 1 when any failed.

use cads::gpu::AdapterChoice;
use cads::{selfcheck, Gpu, Result};

pub fn run(choice: &AdapterChoice, filter: Option<&str>, json: bool) -> Result<()> {
    let gpu = Gpu::with_choice(choice)?;
    let adapter = gpu.adapter().name.clone();
    let started = std::time::Instant::now();
    if !json {
        out!("adapter: {adapter}");
        out!(
            "{:<18} {:<25} {:<25} {:>8}  {:<6} case",
            "family",
            "variant",
            "ran as",
            "worst",
            "result"
        );
    }
    // Each check is printed as it ends.
    let mut print = |c: &selfcheck::Check| {
        if json {
            let line = serde_json::json!({
                "adapter": adapter,
                "family": c.family,
                "variant": c.variant,
                "ran_as": c.ran_as,
                "case": c.case,
                "worst": c.worst,
                "passed": c.passed(),
                "failure": c.failure,
                "kernels": c.kernels,
            });
            out!("{line}");
            return;
        }
        let worst = c.worst.map_or("-".to_string(), |w| format!("{w:.3}"));
        let result = if c.passed() { "ok" } else { "FAILED" };
        out!(
            "{:<18} {:<25} {:<25} {:>8}  {:<6} {}",
            c.family,
            c.variant,
            c.ran_as,
            worst,
            result,
            c.case
        );
        if let Some(f) = &c.failure {
            out!("    {f}");
        }
    };
    let report = selfcheck::run_reporting(&gpu, filter, json, &mut print)?;
    let failed = report.failed().count();
    eprintln!(
        "{} checks on {}: {} passed, {failed} failed ({:.1} s); worst is the largest error as a \
         multiple of its tolerance (at most 1 passes)",
        report.checks.len(),
        report.adapter,
        report.checks.len() - failed,
        started.elapsed().as_secs_f64()
    );
    report.verdict()
}
