//! `cads bench [--filter NAME] [--compare PEERS.jsonl]... [--report DIR]`: the benchmark suite of
//! `benches/ops.rs`, one JSON line per case; peers side by side and a report folder on request
//! (src/bench/compare.rs, src/bench/report.rs). Under an MPI launcher (`mpirun -np 2 cads bench
//! --filter allreduce_exposed`, a build with `--features mpi`) every rank runs the suite, the
//! communication cases over the job's ranks, and rank 0 prints.

use std::path::{Path, PathBuf};

use cads::bench::compare::{line_with_peers, read_peers, PeerLine};
use cads::bench::report::write_report;
use cads::dist::DataParallel;
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
    // Under mpirun every rank runs the suite; the communication cases use the job's ranks and
    // rank 0 alone prints and writes.
    let job = super::dist::join_job()?;
    let result = run_rank(choice, filter, &peers, report, &job);
    super::dist::end_rank(&job, result)
}

fn run_rank(
    choice: &AdapterChoice,
    filter: Option<&str>,
    peers: &[PeerLine],
    report: Option<&Path>,
    job: &Option<DataParallel>,
) -> Result<()> {
    let gpu = Gpu::with_choice(&super::dist::adapter_for(choice, job))?;
    let root = super::dist::is_root(job);
    super::vector_width::announce_hint(&gpu, root);
    let mut outcomes = Vec::new();
    let result = cads::bench::run_suite_in_job(&gpu, filter, job.clone(), |o| {
        if root {
            out!("{}", line_with_peers(o, peers));
            outcomes.push(o.clone());
        }
    });
    // The report covers what was measured even when some case failed.
    if let (Some(dir), true) = (report, root) {
        for path in write_report(dir, &outcomes, peers)? {
            eprintln!("wrote {path}");
        }
    }
    result.map(drop)
}
