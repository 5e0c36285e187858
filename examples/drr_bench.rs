//! DRR throughput on DiffDRR's LIDC benchmark: the `drr` cases of the benchmark suite (cases and
//! geometry in src/bench/drr.rs), one JSON line each with `mrays_per_s` and, where DiffDRR's rate
//! on this machine is known, `ratio_vs_diffdrr`. The same as `cads bench --filter drr`.
//!
//!   cargo run --release --example drr_bench [-- FILTER]      # e.g. FILTER = drr_fwd/siddon
//!
//! Needs data/cxr.nii.gz (scripts/fetch-sample-data.sh); without it every case prints an error.

use cads::bench::run_suite;
use cads::Gpu;

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_else(|| "drr".into());
    let result = Gpu::new().and_then(|gpu| {
        run_suite(&gpu, Some(&filter), |outcome| {
            println!("{}", outcome.to_json())
        })
    });
    if let Err(e) = result {
        eprintln!("drr_bench: {e}");
        std::process::exit(1);
    }
}
