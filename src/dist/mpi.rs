//! The MPI backend (cargo feature `mpi`): one process per device, launched by the system's MPI
//! (`mpirun -np N cads …`, `srun cads …`), collectives through the `mpi` crate (rsmpi) on
//! `MPI_COMM_WORLD`.
//!
//! One thread makes every MPI call. `MpiCommunicator::init` starts a service thread ("cads-mpi")
//! that initialises MPI, runs the collectives it is sent over a channel one after the other, in
//! the order they arrive, and finalises MPI when the communicator is dropped. Any thread may hold
//! the communicator (the trainer's, the gradient all-reduce's communication thread of
//! `dist::overlap`): MPI sees one caller, in one order, whatever the thread level the library
//! provides; and MPI handles, which are not `Send`, never leave that thread. The one exception is
//! [`Communicator::abort`] (and the panic hook), which calls `MPI_Abort` from the failing thread
//! at once: the service thread may be busy in a collective that will never finish, and ending
//! the job must not wait for it (MPI is initialised asking for `MPI_THREAD_MULTIPLE`, which
//! permits that call from any thread).
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

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use ::mpi::request::Request;
use ::mpi::topology::{Communicator as _, SimpleCommunicator};
use ::mpi::Threading;

use super::Communicator;
use crate::error::{Error, Result};

/// Elements per MPI call (a C int count with room to spare).
const CHUNK: usize = 1 << 30;

/// Exit status of a job ended by [`MpiCommunicator::abort`] or a timed-out wait.
pub const ABORT_STATUS: i32 = 3;

/// A collective for the service thread, with where to send its result.
enum Call {
    AllReduceSum(Vec<f32>, Sender<Vec<f32>>),
    Broadcast(Vec<u8>, usize, Sender<Vec<u8>>),
    Barrier(Sender<()>),
}

/// `MPI_COMM_WORLD` of this job, through its service thread. Dropping it finalises MPI.
pub struct MpiCommunicator {
    rank: usize,
    size: usize,
    timeout: Duration,
    /// `None` once dropping (closing the channel ends the service thread).
    calls: Mutex<Option<Sender<Call>>>,
    service: Mutex<Option<JoinHandle<()>>>,
}

impl MpiCommunicator {
    /// Initialise MPI (on the service thread) and take the world communicator (call it when
    /// `dist::launched_by_mpi`). Fails when MPI was initialised already.
    pub fn init(timeout: Duration) -> Result<MpiCommunicator> {
        let op = "MpiCommunicator::init";
        let fail = |message: String| Error::Distributed {
            op,
            rank: 0,
            size: 0,
            message,
        };
        let (ready_tx, ready_rx) = channel();
        let (calls_tx, calls_rx) = channel();
        let service = std::thread::Builder::new()
            .name("cads-mpi".into())
            .spawn(move || serve(timeout, calls_rx, ready_tx))
            .map_err(|e| fail(format!("could not start the MPI thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok((rank, size))) => Ok(MpiCommunicator {
                rank,
                size,
                timeout,
                calls: Mutex::new(Some(calls_tx)),
                service: Mutex::new(Some(service)),
            }),
            Ok(Err(message)) => {
                let _ = service.join();
                Err(fail(message))
            }
            Err(_) => {
                let _ = service.join();
                Err(fail("the MPI thread ended during MPI_Init".into()))
            }
        }
    }

    fn error(&self, op: &'static str, message: String) -> Error {
        Error::Distributed {
            op,
            rank: self.rank,
            size: self.size,
            message,
        }
    }

    /// Send `call` to the service thread and wait for its result on `reply`.
    fn call<T>(&self, op: &'static str, call: Call, reply: Receiver<T>) -> Result<T> {
        let sent = match &*self.calls.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(call).is_ok(),
            None => false,
        };
        let ended = || self.error(op, "the MPI thread has ended".into());
        if !sent {
            return Err(ended());
        }
        // No deadline here: the service thread bounds every collective and ends the job past it.
        reply.recv().map_err(|_| ended())
    }
}

impl Drop for MpiCommunicator {
    fn drop(&mut self) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(service) = self
            .service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = service.join();
        }
    }
}

/// The service thread: MPI_Init, the calls in arrival order, MPI_Finalize when the channel
/// closes.
fn serve(
    timeout: Duration,
    calls: Receiver<Call>,
    ready: Sender<std::result::Result<(usize, usize), String>>,
) {
    let Some((universe, _provided)) = ::mpi::initialize_with_threading(Threading::Multiple) else {
        let _ = ready.send(Err("MPI was already initialised in this process".into()));
        return;
    };
    let world = universe.world();
    let service = Service { world, timeout };
    let rank = service.world.rank() as usize;
    let size = service.world.size() as usize;
    if ready.send(Ok((rank, size))).is_err() {
        return;
    }
    while let Ok(call) = calls.recv() {
        // A caller that stopped waiting (its thread ended) is no reason to stop serving.
        match call {
            Call::AllReduceSum(data, reply) => {
                let _ = reply.send(service.all_reduce_sum(data));
            }
            Call::Broadcast(data, root, reply) => {
                let _ = reply.send(service.broadcast(data, root));
            }
            Call::Barrier(reply) => {
                service.barrier();
                let _ = reply.send(());
            }
        }
    }
    drop(service);
    // MPI_Finalize, on the thread that initialised MPI.
    drop(universe);
}

/// What the service thread holds: the world communicator (not `Send`: it never leaves).
struct Service {
    world: SimpleCommunicator,
    timeout: Duration,
}

impl Service {
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
                abort_world(&self.world, &reason);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    fn all_reduce_sum(&self, send: Vec<f32>) -> Vec<f32> {
        let mut sum = vec![0.0f32; send.len()];
        for (chunk, out) in send.chunks(CHUNK).zip(sum.chunks_mut(CHUNK)) {
            ::mpi::request::scope(|scope| {
                let request =
                    self.world
                        .immediate_all_reduce_into(scope, chunk, out, SystemOperation::sum());
                self.finish("MPI all_reduce_sum", request);
            });
        }
        sum
    }

    fn broadcast(&self, mut data: Vec<u8>, root: usize) -> Vec<u8> {
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
        data
    }

    fn barrier(&self) {
        let request = self.world.immediate_barrier();
        self.finish("MPI barrier", request);
    }
}

/// Print why and end every rank of the job (never returns).
fn abort_world(world: &SimpleCommunicator, reason: &str) -> ! {
    eprintln!(
        "error: rank {} of {}: {reason}; MPI_Abort ends every rank",
        world.rank(),
        world.size()
    );
    world.abort(ABORT_STATUS)
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
        let sum = self.all_reduce_sum_owned(data.to_vec())?;
        data.copy_from_slice(&sum);
        Ok(())
    }

    fn all_reduce_sum_owned(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        let op = "MPI all_reduce_sum";
        let n = data.len();
        let (tx, rx) = channel();
        let sum = self.call(op, Call::AllReduceSum(data, tx), rx)?;
        if sum.len() != n {
            return Err(self.error(op, format!("{} values back for {n} sent", sum.len())));
        }
        Ok(sum)
    }

    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<()> {
        let op = "MPI broadcast_bytes";
        if root >= self.size {
            return Err(self.error(op, format!("root {root} outside the job")));
        }
        let (tx, rx) = channel();
        *data = self.call(op, Call::Broadcast(std::mem::take(data), root, tx), rx)?;
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let (tx, rx) = channel();
        self.call("MPI barrier", Call::Barrier(tx), rx)
    }

    fn abort(&self, reason: &str) {
        // From the calling thread, at once (see the module docs).
        abort_world(&SimpleCommunicator::world(), reason)
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
