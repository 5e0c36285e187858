//! The MPI backend (cargo feature `mpi`): one process per device, launched by the system's MPI
//! (`mpirun -np N cads …`, `srun cads …`), collectives through the `mpi` crate (rsmpi) on
//! `MPI_COMM_WORLD`.
//!
//! Bounded waits: every collective is started non-blocking (`MPI_Iallreduce`, `MPI_Ibcast`,
//! `MPI_Ibarrier`) and polled with `MPI_Test` until it completes or [`Communicator::timeout`]
//! passes. MPI cannot cancel a started collective, so a wait past its bound prints which call
//! timed out and ends the whole job with `MPI_Abort`, as does [`Communicator::abort`] (the
//! command line calls it from its error path and its panic hook). A rank that dies (killed,
//! crashed) is noticed by the launcher, which ends the others (Open MPI's `mpirun` does this by
//! default).
//!
//! Counts: MPI counts are C ints, so buffers are moved in chunks of at most 2^30 elements.

use std::time::{Duration, Instant};

use ::mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use ::mpi::environment::Universe;
use ::mpi::request::Request;
use ::mpi::topology::{Communicator as _, SimpleCommunicator};
use ::mpi::Threading;

use super::Communicator;
use crate::error::{Error, Result};

/// Elements per MPI call (a C int count with room to spare).
const CHUNK: usize = 1 << 30;

/// Exit status of a job ended by [`MpiCommunicator::abort`] or a timed-out wait.
pub const ABORT_STATUS: i32 = 3;

/// `MPI_COMM_WORLD` of this job. Dropping it finalises MPI.
pub struct MpiCommunicator {
    world: SimpleCommunicator,
    timeout: Duration,
    // Last: MPI_Finalize runs when the universe drops, after the communicator.
    _universe: Universe,
}

impl MpiCommunicator {
    /// Initialise MPI and take the world communicator (call it when `dist::launched_by_mpi`).
    /// Fails when MPI was initialised already.
    pub fn init(timeout: Duration) -> Result<MpiCommunicator> {
        // Loader threads never call MPI, but the panic hook may run on any thread and abort.
        let (universe, _) =
            ::mpi::initialize_with_threading(Threading::Multiple).ok_or_else(|| {
                Error::Distributed {
                    op: "MpiCommunicator::init",
                    rank: 0,
                    size: 0,
                    message: "MPI was already initialised in this process".into(),
                }
            })?;
        Ok(MpiCommunicator {
            world: universe.world(),
            timeout,
            _universe: universe,
        })
    }

    /// Poll `request` until it completes; past the timeout, end the job (MPI cannot cancel a
    /// started collective, and a rank returning from it would leave its buffers to MPI).
    fn finish<'a, D: ?Sized, S: ::mpi::request::Scope<'a>>(
        &self,
        op: &'static str,
        mut request: Request<'a, D, S>,
    ) {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_micros(10);
        loop {
            match request.test() {
                Ok(_) => return,
                Err(r) => request = r,
            }
            if Instant::now() >= deadline {
                let reason = format!(
                    "{op} waited {:.1} s for the other ranks (a rank hung or died); ending the job",
                    self.timeout.as_secs_f64()
                );
                self.abort(&reason);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
        for chunk in data.chunks_mut(CHUNK) {
            let send = chunk.to_vec();
            ::mpi::request::scope(|scope| {
                let request = self.world.immediate_all_reduce_into(
                    scope,
                    &send[..],
                    chunk,
                    SystemOperation::sum(),
                );
                self.finish("MPI all_reduce_sum", request);
            });
        }
        Ok(())
    }

    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(Error::Distributed {
                op: "MPI broadcast_bytes",
                rank: self.rank(),
                size: self.size(),
                message: format!("root {root} outside the job"),
            });
        }
        let root = self.world.process_at_rank(root as i32);
        let mut len = [data.len() as u64];
        ::mpi::request::scope(|scope| {
            let request = root.immediate_broadcast_into(scope, &mut len[..]);
            self.finish("MPI broadcast_bytes (length)", request);
        });
        data.resize(len[0] as usize, 0);
        for chunk in data.chunks_mut(CHUNK) {
            ::mpi::request::scope(|scope| {
                let request = root.immediate_broadcast_into(scope, chunk);
                self.finish("MPI broadcast_bytes", request);
            });
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let request = self.world.immediate_barrier();
        self.finish("MPI barrier", request);
        Ok(())
    }

    fn abort(&self, reason: &str) {
        eprintln!(
            "error: rank {} of {}: {reason}; MPI_Abort ends every rank",
            self.rank(),
            self.size()
        );
        self.world.abort(ABORT_STATUS)
    }
}

/// A panic hook for MPI jobs: print the panic as usual, then end every rank with `MPI_Abort`
/// (a panicking rank would otherwise leave the others waiting until their timeout).
pub fn install_panic_abort() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("error: a rank panicked; MPI_Abort ends every rank");
        SimpleCommunicator::world().abort(ABORT_STATUS);
    }));
}
