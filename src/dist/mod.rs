//! Data-parallel training: N replicas of one model, each on its own device (several `Gpu`s in
//! one process, or one process per device under MPI), each computing the gradient of its share
//! of the global batch; the gradients are summed across replicas and averaged, so every replica
//! takes the same optimizer step and the replicas stay identical.
//!
//! Why it equals one device with the whole batch. With a global batch of B samples split into N
//! equal shards of b = B/N, a loss that is a mean over samples satisfies
//!
//! ```text
//!   L = (1/B) Σ_i ℓ_i = (1/N) Σ_r L_r,   L_r = (1/b) Σ_{i ∈ shard r} ℓ_i
//!   ∇L = (1/N) Σ_r ∇L_r                  (the all-reduced, averaged gradient)
//! ```
//!
//! so the averaged gradient is the one-device gradient up to float summation order. What else a
//! step computes must be made global the same way, or the equality breaks:
//! - batch-mean statistics that feed the next step (the DINO center: the mean of the teacher
//!   logits over the global batch, all-reduced as the CADS authors' `update_center` does);
//! - per-sample randomness (drop path, augmentation): a function of the global sample index,
//!   never of the replica (`nn::drop_path::with_sample_window`, [`shard::sample_rng`]);
//! - gradient clipping and the optimizer act on the averaged gradient (after the all-reduce);
//! - the reported loss is the mean of the replicas' losses (equal shards: the global mean);
//! - a function of batch sums that is not a mean (nnU-Net's batch Dice, the CADS monitors
//!   KL(P̄_t ‖ u) and feature std) is computed from the all-reduced sums
//!   (`segment::global_batch_dice`, `pretrain::replica_stats`).
//!
//! Shards must be equal (B divisible by N): the mean of unequal shard means is not the global
//! mean. [`DataParallel::window`] rejects the rest.
//!
//! Backends ([`Communicator`]): [`local::LocalGroup`] (threads of one process, one `Gpu` each),
//! `mpi::MpiCommunicator` (cargo feature `mpi`, the system's Open MPI through the `mpi` crate)
//! and [`Single`] (one replica; every collective is the identity). Every collective waits at
//! most [`Communicator::timeout`] and fails with [`Error::Distributed`] naming the ranks it
//! waited for; a rank that fails calls [`Communicator::abort`], which ends the other ranks'
//! waits with an error (local) or ends the job (MPI_Abort).
//!
//! Communication per step (docs/distributed.md): the gradients, 4 bytes per trained parameter,
//! in buckets of at most [`buckets::DEFAULT_BUCKET_BYTES`], reduced while the backward pass runs
//! ([`overlap`]) or after it ([`buckets`]); for CADS also the center and the monitors'
//! statistics (4·(2K + 2C) bytes) and the 8 loss values; for batch Dice 3·K floats per weighted
//! output; one f32 per parameter tensor for the gradient presence mask.

pub mod buckets;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod overlap;
pub mod shard;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::nn::drop_path::SampleWindow;
use crate::tensor::Tensor;

pub use buckets::{all_reduce_gradients, BucketReport, DEFAULT_BUCKET_BYTES};
pub use local::{LocalComm, LocalGroup};
pub use overlap::{backward_all_reduced, BucketOrder};
pub use shard::{sample_rng, EpochSampler};

/// How long a collective waits for the other ranks by default before it fails: long enough
/// for rank 0 to validate or checkpoint while the others wait, short enough that a hung job
/// ends. `CADS_DIST_TIMEOUT_S` (seconds) overrides it for the command line.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The wait bound from `CADS_DIST_TIMEOUT_S`, or [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var("CADS_DIST_TIMEOUT_S") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(Error::invalid(
                "CADS_DIST_TIMEOUT_S",
                "a positive number of seconds",
                text,
            )),
        },
    }
}

/// Whether the gradient all-reduce overlaps the backward pass, from `CADS_DIST_OVERLAP`: `on`
/// (the default when unset) or `off` (reduce after the whole backward, `dist::buckets`).
pub fn overlap_from_env() -> Result<bool> {
    match std::env::var("CADS_DIST_OVERLAP") {
        Err(_) => Ok(true),
        Ok(text) => match text.trim().to_ascii_lowercase().as_str() {
            "on" | "1" | "true" => Ok(true),
            "off" | "0" | "false" => Ok(false),
            _ => Err(Error::invalid("CADS_DIST_OVERLAP", "on or off", text)),
        },
    }
}

/// Whether this process was started by an MPI launcher (Open MPI's mpirun, a PMI/PMIx launcher
/// such as Slurm's srun with `--mpi=pmix`, MPICH's Hydra): then the `mpi` backend joins its job.
/// A plain `cads` run initialises no MPI at all.
pub fn launched_by_mpi() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMIX_RANK",
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// The job size an MPI launcher announced in the environment, if it did.
pub fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// This process's rank among the job's processes on the same machine, if the launcher says
/// (to give each rank of a multi-GPU machine its own adapter).
pub fn launcher_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
        "PMIX_LOCAL_RANK",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// The collectives data-parallel training needs. Every rank must call the same collectives in
/// the same order with the same lengths; a mismatch is detected where the backend can (the
/// local group names both calls) and is otherwise undefined, as in MPI.
///
/// A communicator may be used from any thread (the overlapped gradient all-reduce runs its
/// collectives on a communication thread while the backward pass runs), by one thread at a time
/// and in program order (`dist::overlap`).
pub trait Communicator: Send + Sync {
    /// This replica's index, 0-based.
    fn rank(&self) -> usize;
    /// Number of replicas.
    fn size(&self) -> usize;
    /// The backend's name for logs ("single", "local", "mpi").
    fn backend(&self) -> &'static str;
    /// How long one collective waits for the other ranks.
    fn timeout(&self) -> Duration;
    /// Element-wise sum over all ranks, in place. Every rank receives the same bits (the
    /// replicas must stay identical), summed in a fixed order.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()>;
    /// [`all_reduce_sum`](Self::all_reduce_sum) of an owned buffer, handed back summed (a
    /// backend that moves the data to another thread anyway skips the copies in and out).
    fn all_reduce_sum_owned(&self, mut data: Vec<f32>) -> Result<Vec<f32>> {
        self.all_reduce_sum(&mut data)?;
        Ok(data)
    }
    /// Replace `data` on every rank with rank `root`'s bytes (any length; the others' input
    /// is discarded).
    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Wait until every rank arrives.
    fn barrier(&self) -> Result<()>;
    /// This rank failed with `reason`: end the job on every rank (the others' collectives fail
    /// with an error naming this rank; under MPI the whole job ends). Never blocks.
    fn abort(&self, reason: &str);
}

/// One replica alone: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single"
    }
    fn timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }
    fn all_reduce_sum(&self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _data: &mut Vec<u8>, root: usize) -> Result<()> {
        if root != 0 {
            return Err(Error::Distributed {
                op: "broadcast",
                rank: 0,
                size: 1,
                message: format!("root {root} outside the 1 rank"),
            });
        }
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, _reason: &str) {}
}

/// A replica's handle on its group, as the trainers hold it: the communicator, the gradient
/// bucket size and whether the buckets are reduced during the backward pass.
#[derive(Clone)]
pub struct DataParallel {
    pub comm: Arc<dyn Communicator>,
    /// Largest gradient bucket (flattened f32 gradients per all-reduce), bytes.
    pub bucket_bytes: usize,
    /// Reduce the gradient buckets while the backward pass runs ([`overlap`], the default) or
    /// after it ([`buckets`]). The command line reads it from `CADS_DIST_OVERLAP`.
    pub overlap: bool,
    /// The overlapped path's bucket order, learned in its first step (shared by clones: they
    /// are the same replica).
    order: Arc<Mutex<Option<BucketOrder>>>,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataParallel(rank {} of {}, {}, buckets of {} bytes, {})",
            self.comm.rank(),
            self.comm.size(),
            self.comm.backend(),
            self.bucket_bytes,
            if self.overlap {
                "overlapped"
            } else {
                "after the backward"
            }
        )
    }
}

impl DataParallel {
    pub fn new(comm: Arc<dyn Communicator>) -> DataParallel {
        DataParallel {
            comm,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            overlap: true,
            order: Arc::default(),
        }
    }

    /// The learned bucket order of the overlapped path, once its first step has run.
    pub fn bucket_order(&self) -> Option<BucketOrder> {
        self.order.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// Rank 0 writes logs, plots and checkpoints.
    pub fn is_root(&self) -> bool {
        self.comm.rank() == 0
    }

    /// This rank's rows of a global batch: `global_batch / size` samples from `rank · that`.
    pub fn window(&self, global_batch: usize) -> Result<SampleWindow> {
        let size = self.size();
        if global_batch == 0 || !global_batch.is_multiple_of(size) {
            return Err(Error::invalid(
                "DataParallel::window",
                format!("a global batch divisible by the {size} ranks (equal shards keep the loss a global mean)"),
                global_batch,
            ));
        }
        let count = global_batch / size;
        Ok(SampleWindow {
            offset: self.rank() * count,
            count,
            global: global_batch,
        })
    }

    /// The window of a replica holding `local` samples of every rank's equal shard (global
    /// batch `local · size`).
    pub fn local_window(&self, local: usize) -> Result<SampleWindow> {
        self.window(local * self.size())
    }

    /// Sum the gradients of `params` over the ranks and divide by the rank count, in buckets.
    pub fn all_reduce_gradients(
        &self,
        params: &[(String, Tensor)],
        grads: &mut Gradients,
    ) -> Result<BucketReport> {
        all_reduce_gradients(self.comm.as_ref(), params, grads, self.bucket_bytes)
    }

    /// The backward pass of `loss` with the gradients of `params` averaged over the ranks:
    /// overlapped with the backward ([`backward_all_reduced`]) when [`overlap`](Self::overlap)
    /// is set, else `loss.backward()` followed by [`all_reduce_gradients`]. Same results either
    /// way (module docs of [`overlap`]).
    pub fn backward(
        &self,
        loss: &Tensor,
        params: &[(String, Tensor)],
    ) -> Result<(Gradients, BucketReport)> {
        if self.overlap {
            return backward_all_reduced(
                self.comm.as_ref(),
                loss,
                params,
                self.bucket_bytes,
                &self.order,
            );
        }
        let mut grads = loss.backward()?;
        let report = self.all_reduce_gradients(params, &mut grads)?;
        Ok((grads, report))
    }

    /// The mean over ranks of host values, in place.
    pub fn mean_in_place(&self, values: &mut [f32]) -> Result<()> {
        self.comm.all_reduce_sum(values)?;
        let inv = 1.0 / self.size() as f32;
        values.iter_mut().for_each(|v| *v *= inv);
        Ok(())
    }

    /// A new tensor of `t`'s shape holding the mean over ranks of `t` (one read back, one
    /// all-reduce, one upload; for small tensors such as the batch center and loss values).
    pub fn mean_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let mut v = t.to_vec()?;
        self.mean_in_place(&mut v)?;
        Tensor::from_slice(t.gpu(), &v, t.shape())
    }

    /// Whether `flag` is set on any rank (e.g. a stop request: every rank must stop at the
    /// same step, or the others wait for it forever).
    pub fn any(&self, flag: bool) -> Result<bool> {
        let mut v = [if flag { 1.0f32 } else { 0.0 }];
        self.comm.all_reduce_sum(&mut v)?;
        Ok(v[0] > 0.0)
    }

    /// Rank 0's bytes on every rank.
    pub fn broadcast_from_root(&self, bytes: &mut Vec<u8>) -> Result<()> {
        self.comm.broadcast_bytes(bytes, 0)
    }
}

/// A digest (FNV-1a over the f32 bits, in order) of tensors: equal on two replicas exactly when
/// every bit of every tensor is (up to hash collisions). Reads every tensor back.
pub fn digest(tensors: &[Tensor]) -> Result<u64> {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for t in tensors {
        for v in t.to_vec()? {
            for byte in v.to_bits().to_le_bytes() {
                h ^= byte as u64;
                h = h.wrapping_mul(0x0100_0000_01B3);
            }
        }
    }
    Ok(h)
}
