//! Data-parallel launch of the training commands (`cads pretrain`, `cads segment train`).
//!
//! In one process, `--devices N` runs N replicas as threads, one `Gpu` each (the i-th of the
//! equally good adapters; with fewer adapters than replicas several devices share one).
//!
//! Under an MPI launcher (`mpirun -np N cads …`, `srun --mpi=pmix cads …`) a `cads` built with
//! `--features mpi` joins the job: the world size is the number of replicas, each rank takes the
//! adapter of its local rank (several GPUs in one machine), `--batch` is the global batch, rank
//! 0 writes the run folder and prints. A rank that fails prints its error and ends every rank
//! (MPI_Abort), as does a panic. Without the feature, a launch of several processes is refused
//! (they would each train alone and overwrite one run folder).

use std::sync::Arc;

use cads::dist::{self, DataParallel, LocalGroup};
use cads::gpu::AdapterChoice;
use cads::Result;

/// This process's place in a data-parallel job: None when run alone.
pub fn join_job() -> Result<Option<DataParallel>> {
    if !dist::launched_by_mpi() {
        return Ok(None);
    }
    join_mpi()
}

#[cfg(feature = "mpi")]
fn join_mpi() -> Result<Option<DataParallel>> {
    let comm = dist::mpi::MpiCommunicator::init(dist::timeout_from_env()?)?;
    dist::mpi::install_panic_abort();
    rank_handle(Arc::new(comm)).map(Some)
}

/// This rank's handle, with the overlap choice of `CADS_DIST_OVERLAP`.
fn rank_handle(comm: Arc<dyn dist::Communicator>) -> Result<DataParallel> {
    let mut dp = DataParallel::new(comm);
    dp.overlap = dist::overlap_from_env()?;
    Ok(dp)
}

#[cfg(not(feature = "mpi"))]
fn join_mpi() -> Result<Option<DataParallel>> {
    match dist::launcher_world_size() {
        Some(n) if n > 1 => Err(cads::Error::invalid(
            "cads (MPI launch)",
            "a cads built with `cargo build --release --features mpi` to run as one job of several ranks",
            format!("a build without MPI started as one of {n} processes"),
        )),
        _ => Ok(None),
    }
}

/// The adapter choice of this rank: the local rank's adapter among equally good ones (an
/// in-process replica's rank is its local rank).
pub fn adapter_for(choice: &AdapterChoice, dp: &Option<DataParallel>) -> AdapterChoice {
    let mut choice = choice.clone();
    if let (Some(d), None) = (dp, choice.index) {
        choice.index = if d.comm.backend() == "local" {
            Some(d.rank())
        } else {
            dist::launcher_local_rank()
        };
    }
    choice
}

/// Run `replica` for `devices` in-process replicas (threads) and return the first error in rank
/// order (a replica that fails ends the others' waits with an error naming it).
pub fn run_local(
    devices: usize,
    mpi: &Option<DataParallel>,
    replica: impl Fn(Option<DataParallel>) -> Result<()> + Sync,
) -> Result<()> {
    if mpi.is_some() {
        return Err(cads::Error::invalid(
            "--devices",
            "one device per rank under MPI (launch more ranks instead)",
            devices,
        ));
    }
    let results = LocalGroup::run(devices, dist::timeout_from_env()?, |comm| {
        replica(Some(rank_handle(Arc::new(comm))?))
    })?;
    results.into_iter().collect::<Result<Vec<()>>>().map(drop)
}

/// Rank 0 (or the only process) prints and writes.
pub fn is_root(dp: &Option<DataParallel>) -> bool {
    dp.as_ref().is_none_or(DataParallel::is_root)
}

/// A command's result on one rank of a job: an error ends every rank (their waits would
/// otherwise run into the timeout), after printing it with the rank.
pub fn end_rank<T>(dp: &Option<DataParallel>, result: Result<T>) -> Result<T> {
    if let (Err(e), Some(d)) = (&result, dp) {
        if d.size() > 1 {
            d.comm.abort(&e.to_string());
        }
    }
    result
}

/// The line that says how the job is split (printed by rank 0).
pub fn describe(dp: &Option<DataParallel>, global_batch: usize) -> Option<String> {
    let d = dp.as_ref()?;
    Some(format!(
        "data parallel: {} ranks ({}), global batch {global_batch} = {} per rank",
        d.size(),
        d.comm.backend(),
        global_batch / d.size().max(1)
    ))
}
