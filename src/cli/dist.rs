//! Data-parallel launch of the training commands (`cads pretrain`, `cads segment train`).
//!
//! Under an MPI launcher (`mpirun -np N cads …`, `srun --mpi=pmix cads …`) a `cads` built with
//! `--features mpi` joins the job: the world size is the number of replicas, each rank takes the
//! adapter of its local rank (several GPUs in one machine), `--batch` is the global batch, rank
//! 0 writes the run folder and prints. A rank that fails prints its error and ends every rank
//! (MPI_Abort), as does a panic. Without the feature, a launch of several processes is refused
//! (they would each train alone and overwrite one run folder).

use cads::dist::{self, DataParallel};
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
// MPI handles are not Send: this communicator never leaves the main thread (the loader threads
// make host batches only); `Arc` is the type `DataParallel` shares with in-process groups.
#[allow(clippy::arc_with_non_send_sync)]
fn join_mpi() -> Result<Option<DataParallel>> {
    let comm = dist::mpi::MpiCommunicator::init(dist::timeout_from_env()?)?;
    dist::mpi::install_panic_abort();
    Ok(Some(DataParallel::new(std::sync::Arc::new(comm))))
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

/// The adapter choice of this rank: the local rank's adapter among equally good ones.
pub fn adapter_for(choice: &AdapterChoice, dp: &Option<DataParallel>) -> AdapterChoice {
    let mut choice = choice.clone();
    if dp.is_some() && choice.index.is_none() {
        choice.index = dist::launcher_local_rank();
    }
    choice
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
