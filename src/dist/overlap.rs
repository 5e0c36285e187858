//! The gradient all-reduce overlapped with the backward pass (PyTorch DDP's scheme).
//!
//! The buckets of `dist::buckets` are reduced while the tape still runs the rest of the backward:
//!
//! 1. **Which parameters take part.** Before the backward, each rank marks the parameters its
//!    graph consumes (`Tensor::consumes`) and the marks are summed over the ranks (one f32 per
//!    parameter, as the presence mask of the serial path): a parameter no rank's graph reaches
//!    has no gradient anywhere and stays without one (the optimizer skips it, e.g. a frozen
//!    encoder); every other one is reduced.
//! 2. **Buckets, the same on every rank.** The taking-part parameters, in the bucket order, are
//!    cut into buckets of at most `bucket_bytes` (as the serial path cuts them). The order must be
//!    identical on all ranks, since each all-reduce pairs the ranks' buffers element by element
//!    and every rank must issue the same all-reduces in the same sequence. It is, like DDP's
//!    bucket rebuild: in the first overlapped step of a parameter list, the parameters reversed
//!    (the backward visits the network roughly from its end); during that step rank 0 records the
//!    order in which its gradients became final, and at its end broadcasts it; every rank adopts
//!    that order for the later steps. A rank-local order would not do: a parameter that gets no
//!    gradient on one rank (its branch unused there) finalises at a different moment there.
//! 3. **During the backward** (`Tensor::backward_observed`): when the last gradient of a bucket is
//!    final, the main thread records one copy of the bucket's gradients into a staging buffer,
//!    submits it, requests the mapping and goes on with the next tape node at once. Buckets are
//!    handed over strictly in bucket order (one finished early waits for its predecessors).
//! 4. **The communication thread** takes the buckets in that order: it waits for the copy's
//!    submission only (not for the work recorded after it), sums the bucket over the ranks
//!    (`Communicator::all_reduce_sum_owned`), divides by the rank count and uploads each
//!    parameter's mean as a fresh tensor, while the device and the main thread run the rest of
//!    the backward. Each bucket carries one presence flag per member (1 where this rank has a
//!    gradient), summed with it: a member with no gradient on a rank counts as zero there, one
//!    with no gradient on any rank stays without one, exactly the serial path's semantics.
//! 5. **After the backward** the main thread waits for the communication thread and puts the
//!    means into the gradient store.
//!
//! The communicator is used by one thread at a time, in program order: the main thread for the
//! marks (before the communication thread starts) and the order broadcast (after it ended), the
//! communication thread for the buckets in between. (Under MPI every call is moreover made by the
//! backend's own service thread, `dist::mpi`.)
//!
//! Results are those of the serial path: the same per-element sums of the same ranks' values in
//! the same rank order (the local group sums in rank order; MPI sums two ranks as a + b either
//! way), only the grouping into buckets may differ.
//!
//! Limits: a bucket can only leave once all its members are final, so one parameter used early
//! in the forward pass (e.g. shared by both CADS branches) holds back its bucket until the end;
//! the means are uploaded while the backward runs, so device memory holds up to one extra copy of
//! the reduced gradients until the local ones are dropped at the end; and what is hidden is
//! bounded by the backward time after each bucket: the last bucket (the network's first layers)
//! is always exposed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use super::buckets::{split_into_buckets, BucketReport};
use super::Communicator;
use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{PendingValues, Tensor};

const OP: &str = "backward_all_reduced";

/// The order in which parameters are put into buckets (see the module docs, 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketOrder {
    /// The parameter ids it is for (another parameter list starts over).
    ids: Vec<u64>,
    /// Parameter indices, in the order their gradients became final on rank 0.
    order: Vec<usize>,
    /// Whether `order` came from rank 0's finalisation (else: the parameters reversed).
    learned: bool,
}

impl BucketOrder {
    /// Parameter indices in bucket order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
    /// Whether the order was learned from rank 0's backward pass.
    pub fn learned(&self) -> bool {
        self.learned
    }
}

/// The backward pass of `loss` with the gradients of `params` averaged over the ranks of `comm`,
/// reduced in buckets while the backward runs (module docs). `order` keeps the learned bucket
/// order between steps. With one rank this is `loss.backward()`.
pub fn backward_all_reduced(
    comm: &dyn Communicator,
    loss: &Tensor,
    params: &[(String, Tensor)],
    bucket_bytes: usize,
    order: &Mutex<Option<BucketOrder>>,
) -> Result<(Gradients, BucketReport)> {
    if bucket_bytes < 4 {
        return Err(Error::invalid(
            OP,
            "a bucket of at least 4 bytes",
            bucket_bytes,
        ));
    }
    if comm.size() == 1 {
        return Ok((loss.backward()?, BucketReport::default()));
    }
    let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.clone()).collect();
    let Some(first) = tensors.first() else {
        return Ok((loss.backward()?, BucketReport::default()));
    };
    let gpu = first.gpu().clone();

    // 1. Who takes part: the parameters some rank's graph consumes.
    let mut marks: Vec<f32> = loss
        .consumes(&tensors)
        .iter()
        .map(|&c| if c { 1.0 } else { 0.0 })
        .collect();
    comm.all_reduce_sum(&mut marks)?;

    // 2. The buckets, in the agreed order.
    let ids: Vec<u64> = tensors.iter().map(Tensor::id).collect();
    let current = {
        let mut cached = order.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some(o) if o.ids == ids => o.clone(),
            _ => {
                let fresh = BucketOrder {
                    ids: ids.clone(),
                    order: (0..ids.len()).rev().collect(),
                    learned: false,
                };
                *cached = Some(fresh.clone());
                fresh
            }
        }
    };
    let taking_part: Vec<usize> = current
        .order
        .iter()
        .copied()
        .filter(|&i| marks[i] > 0.0)
        .collect();
    let plan = Plan::new(
        split_into_buckets(&taking_part, |i| tensors[i].numel(), bucket_bytes),
        tensors.len(),
    );

    // 3.–4. The backward on this thread, the all-reduces on the communication thread.
    let (jobs, inbox) = channel();
    let failed = AtomicBool::new(false);
    let mut seen = Vec::with_capacity(tensors.len());
    let (backward, reduced) = std::thread::scope(|scope| {
        let comm_thread = scope.spawn(|| {
            let r = communicate(comm, &gpu, &tensors, &plan, inbox);
            if r.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            r
        });
        let mut launcher = Launcher::new(&plan, &tensors, params, jobs);
        let backward = loss.backward_observed(&tensors, |i, g| {
            seen.push(i);
            if failed.load(Ordering::SeqCst) {
                return Err(Error::Distributed {
                    op: OP,
                    rank: comm.rank(),
                    size: comm.size(),
                    message: "the gradient all-reduce failed during the backward pass".into(),
                });
            }
            launcher.final_gradient(i, g)
        });
        let backward = backward.and_then(|grads| launcher.all_sent().map(|()| grads));
        if let Err(e) = &backward {
            if !failed.load(Ordering::SeqCst) {
                // The other ranks wait in a bucket's all-reduce for this one (and so may our own
                // communication thread): end the job's waits before joining it.
                comm.abort(&format!("{OP}: {e}"));
            }
        }
        drop(launcher);
        let reduced = comm_thread.join().unwrap_or_else(|_| {
            Err(Error::Distributed {
                op: OP,
                rank: comm.rank(),
                size: comm.size(),
                message: "the communication thread panicked".into(),
            })
        });
        (backward, reduced)
    });
    // The communication error is the cause when there is one.
    let reduced = reduced?;
    let mut grads = backward?;

    // 5. The means replace the local gradients.
    let mut report = BucketReport {
        tensors: 0,
        buckets: plan.buckets.len(),
        bytes: 4 * tensors.len(),
    };
    for (i, mean) in reduced {
        grads.remove(&tensors[i]);
        report.bytes += 4 * (tensors[i].numel() + 1);
        if let Some(g) = mean {
            grads.accumulate(tensors[i].id(), g)?;
            report.tensors += 1;
        }
    }

    if !current.learned {
        learn_order(comm, order, ids, seen)?;
    }
    Ok((grads, report))
}

/// Rank 0's finalisation order of this step, on every rank, as the bucket order from now on.
fn learn_order(
    comm: &dyn Communicator,
    order: &Mutex<Option<BucketOrder>>,
    ids: Vec<u64>,
    seen: Vec<usize>,
) -> Result<()> {
    let mut bytes: Vec<u8> = seen
        .iter()
        .flat_map(|&i| (i as u32).to_le_bytes())
        .collect();
    comm.broadcast_bytes(&mut bytes, 0)?;
    let learned: Vec<usize> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let mut hit = vec![false; ids.len()];
    let permutation = bytes.len() == 4 * ids.len()
        && learned
            .iter()
            .all(|&i| i < hit.len() && !std::mem::replace(&mut hit[i], true));
    if !permutation {
        return Err(Error::Distributed {
            op: OP,
            rank: comm.rank(),
            size: comm.size(),
            message: format!(
                "rank 0's gradient order is not an order of this rank's {} parameters ({} bytes)",
                ids.len(),
                bytes.len()
            ),
        });
    }
    *order.lock().unwrap_or_else(|e| e.into_inner()) = Some(BucketOrder {
        ids,
        order: learned,
        learned: true,
    });
    Ok(())
}

/// The buckets of one step and where each parameter sits.
struct Plan {
    buckets: Vec<Vec<usize>>,
    /// Bucket of each parameter (None: no rank reduces it).
    bucket_of: Vec<Option<usize>>,
}

impl Plan {
    fn new(buckets: Vec<Vec<usize>>, params: usize) -> Plan {
        let mut bucket_of = vec![None; params];
        for (b, members) in buckets.iter().enumerate() {
            for &i in members {
                bucket_of[i] = Some(b);
            }
        }
        Plan { buckets, bucket_of }
    }
}

/// One bucket on its way to the communication thread.
struct Job {
    bucket: usize,
    /// The gradients this rank has, back to back (None: it has none of the bucket's).
    values: Option<PendingValues>,
    /// Per member: whether this rank has its gradient.
    present: Vec<bool>,
}

/// The main thread's side: collects final gradients, starts a bucket's read when it is complete,
/// and hands the buckets over in bucket order.
struct Launcher<'a> {
    plan: &'a Plan,
    tensors: &'a [Tensor],
    params: &'a [(String, Tensor)],
    /// Members of each bucket still to become final.
    missing: Vec<usize>,
    /// Final gradients waiting for the rest of their bucket (outer None: not final yet).
    finals: Vec<Option<Option<Tensor>>>,
    started: Vec<Option<Job>>,
    next: usize,
    jobs: Sender<Job>,
}

impl<'a> Launcher<'a> {
    fn new(
        plan: &'a Plan,
        tensors: &'a [Tensor],
        params: &'a [(String, Tensor)],
        jobs: Sender<Job>,
    ) -> Launcher<'a> {
        Launcher {
            plan,
            tensors,
            params,
            missing: plan.buckets.iter().map(Vec::len).collect(),
            finals: vec![None; tensors.len()],
            started: (0..plan.buckets.len()).map(|_| None).collect(),
            next: 0,
            jobs,
        }
    }

    /// The gradient of parameter `i` is final.
    fn final_gradient(&mut self, i: usize, g: Option<&Tensor>) -> Result<()> {
        let Some(b) = self.plan.bucket_of[i] else {
            // No rank's graph consumes it, so it has no gradient (the marks said so).
            return Ok(());
        };
        if let Some(g) = g {
            let (name, p) = &self.params[i];
            if g.shape() != p.shape() {
                return Err(Error::shape(
                    "backward_all_reduced (gradient of a parameter)",
                    format!("{name}: {:?}", p.shape()),
                    g.shape(),
                ));
            }
        }
        self.finals[i] = Some(g.cloned());
        self.missing[b] -= 1;
        if self.missing[b] == 0 {
            self.start(b)?;
        }
        Ok(())
    }

    /// Record bucket `b`'s copy to the host, then hand over every started bucket in order.
    fn start(&mut self, b: usize) -> Result<()> {
        let members = &self.plan.buckets[b];
        let mut present = Vec::with_capacity(members.len());
        let mut parts = Vec::with_capacity(members.len());
        for &i in members {
            let g = self.finals[i].take().flatten();
            present.push(g.is_some());
            parts.extend(g);
        }
        let values = if parts.is_empty() {
            None
        } else {
            Some(Tensor::to_vec_async_joined(
                &parts.iter().collect::<Vec<_>>(),
            )?)
        };
        self.started[b] = Some(Job {
            bucket: b,
            values,
            present,
        });
        while let Some(job) = self.started.get_mut(self.next).and_then(Option::take) {
            // A closed channel means the communication thread failed; its error is reported.
            let _ = self.jobs.send(job);
            self.next += 1;
        }
        Ok(())
    }

    /// Every bucket was handed over (each parameter taking part was reported final once).
    fn all_sent(&self) -> Result<()> {
        if self.next == self.plan.buckets.len() {
            return Ok(());
        }
        let stuck = self
            .missing
            .iter()
            .position(|&m| m > 0)
            .unwrap_or(self.next);
        Err(Error::Autograd {
            op: OP,
            message: format!(
                "bucket {stuck} of {} never completed ({} of {} parameters not reported final)",
                self.plan.buckets.len(),
                self.missing.iter().sum::<usize>(),
                self.tensors.len()
            ),
        })
    }
}

/// The communication thread: per bucket, in order, wait for its values, sum them over the ranks
/// with the presence flags, average and upload. Returns (parameter index, mean) for every member.
fn communicate(
    comm: &dyn Communicator,
    gpu: &Gpu,
    tensors: &[Tensor],
    plan: &Plan,
    inbox: Receiver<Job>,
) -> Result<Vec<(usize, Option<Tensor>)>> {
    let inv = 1.0 / comm.size() as f32;
    let mut out = Vec::new();
    for (expected, job) in inbox.iter().enumerate() {
        if job.bucket != expected {
            return Err(Error::invalid(
                OP,
                format!("bucket {expected} next"),
                job.bucket,
            ));
        }
        let members = &plan.buckets[job.bucket];
        let elements: usize = members.iter().map(|&i| tensors[i].numel()).sum();
        let read = match job.values {
            Some(v) => v.wait()?,
            None => Vec::new(),
        };
        // The member values (zeros where this rank has none), then one presence flag each.
        let mut buffer = if read.len() == elements {
            read
        } else {
            let mut full = Vec::with_capacity(elements + members.len());
            let mut at = 0;
            for (&i, &present) in members.iter().zip(&job.present) {
                let n = tensors[i].numel();
                if present {
                    let values = read.get(at..at + n).ok_or_else(|| {
                        Error::shape(OP, format!("{} read values", at + n), read.len())
                    })?;
                    full.extend_from_slice(values);
                    at += n;
                } else {
                    full.resize(full.len() + n, 0.0);
                }
            }
            full
        };
        buffer.extend(job.present.iter().map(|&p| if p { 1.0f32 } else { 0.0 }));
        let mut sum = comm.all_reduce_sum_owned(buffer)?;
        if sum.len() != elements + members.len() {
            return Err(Error::shape(
                OP,
                format!("{} reduced values", elements + members.len()),
                sum.len(),
            ));
        }
        let (values, flags) = sum.split_at_mut(elements);
        values.iter_mut().for_each(|v| *v *= inv);
        let mut offset = 0;
        for (&i, &flag) in members.iter().zip(flags.iter()) {
            let n = tensors[i].numel();
            let mean = if flag > 0.0 {
                let chunk = &values[offset..offset + n];
                Some(Tensor::from_slice(gpu, chunk, tensors[i].shape())?)
            } else {
                None
            };
            out.push((i, mean));
            offset += n;
        }
    }
    Ok(out)
}
