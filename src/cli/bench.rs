//! `cads bench [--filter NAME] [--compare PEERS.jsonl]... [--report DIR]`: the benchmark suite of
//! `benches/ops.rs`, one JSON line per case; peers side by side and a report folder on request
//! (src/bench/compare.rs, src/bench/report.rs).

use std::path::{Path, PathBuf};

use cads::bench::compare::{line_with_peers, read_peers};
use cads::bench::report::write_report;
use cads::gpu::AdapterChoice;
use cads::{Gpu, Result};

pub fn run(
    choice: &AdapterChoice,
    filter: Option<&str>,
    compare: &[PathBuf],
    report: Option<&Path>,
) -> Result<()> {
    // Peer files are read before anything runs: a typo should not cost a whole suite.
    let peers = read_peers(compare)?;
    let gpu = Gpu::with_choice(choice)?;
    let mut outcomes = Vec::new();
    let result = cads::bench::run_suite(&gpu, filter, |o| {
        out!("{}", line_with_peers(o, &peers));
        outcomes.push(o.clone());
    });
    // The report covers what was measured even when some case failed.
    if let Some(dir) = report {
        for path in write_report(dir, &outcomes, &peers)? {
            eprintln!("wrote {path}");
        }
    }
    result.map(drop)
}
