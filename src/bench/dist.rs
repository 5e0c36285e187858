//! The gradient all-reduce of data-parallel training (`dist::all_reduce_gradients`) for the
//! parameters of the b1 models, on two in-process replicas (`dist::LocalGroup`): per rank, the
//! gradients flattened into 25 MiB buckets on the device, read back, summed across the two
//! ranks in shared memory, averaged and uploaded. Prints the wall-clock ms of one all-reduce
//! (the slower rank; median over repetitions) and the bytes one rank contributes (4 per
//! parameter, plus the presence mask). Both replicas share the bench's `Gpu` (one adapter here).
//!
//! - `b1_student_local2`: the CADS student of the paper's preset (PVTv2-b1, four DINO heads of
//!   K = 60000): the per-step cost of pretraining, whose center (4·K bytes) and loss values add
//!   under 1 MB.
//! - `b1_pvt_unet_local2`: PVT-UNet b1 with 2 classes: the per-step cost of segmentation.
//!
//! Over MPI the bytes are the same; the time adds the network (docs/distributed.md).
//!
//! `allreduce_exposed`: what the gradient all-reduce ADDS to a real backward pass at b1 size,
//! reduced after the backward (`*_serial`, `dist::buckets`) or overlapped with it (`*_overlap`,
//! `dist::overlap`), on two in-process replicas with a `Gpu` each, or on the ranks of the MPI job
//! `cads bench` runs in (`mpirun -np 2 cads bench --filter allreduce_exposed`). Per repetition
//! each rank runs an untimed forward, waits for the device and the other ranks, then times
//! (wall clock, until the device is idle) a backward pass alone and, after another forward, the
//! backward pass with the all-reduce, gradients uploaded. `ms` = the median over repetitions of
//! (step − backward alone), each the slower rank's: the communication the backward did not hide
//! (negative when noise exceeds it); `backward_ms` = the backward alone. One warm-up repetition
//! (pipelines; the overlapped path learns its bucket order there). The `variant` names the
//! ranks: `local2` (threads) or `mpi2`. The loss is the sum of the outputs (the network's
//! backward is what runs while buckets leave; the loss's own backward comes first).
//!
//! - `b1_pvt_unet_*`: PVT-UNet b1, 2 classes, one `[16, 64, 64]` patch per rank.
//! - `b1_student_*`: the CADS student of the paper's preset on one CT view pair and one DRR per
//!   rank (the CADS step's 3D and 2D rows), 2 repetitions (on lavapipe a backward takes tens of
//!   seconds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::autograd::Gradients;
use crate::dist::{DataParallel, LocalGroup};
use crate::error::{Error, Result};
use crate::gpu::{AdapterChoice, Gpu};
use crate::models::pvt::Modality;
use crate::models::PvtUnet;
use crate::nn::Module;
use crate::ops;
use crate::pretrain::{CadsConfig, CadsStudent};
use crate::segment::config::ModelPreset;
use crate::tensor::Tensor;
use crate::util::Rng;

const REPS: usize = 3;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "allreduce_grads",
            case: "b1_student_local2",
            run: |b| {
                let student = CadsStudent::new(b.gpu(), &CadsConfig::cads())?;
                all_reduce(b, student.named_parameters())
            },
        },
        Case {
            op: "allreduce_grads",
            case: "b1_pvt_unet_local2",
            run: |b| {
                let config = ModelPreset::B1.model_config(2, 0.1, 0);
                let net = PvtUnet::new(b.gpu(), config)?;
                all_reduce(b, net.named_parameters())
            },
        },
        Case {
            op: "allreduce_exposed",
            case: "b1_pvt_unet_serial",
            run: |b| exposed(b, Net::Unet, false),
        },
        Case {
            op: "allreduce_exposed",
            case: "b1_pvt_unet_overlap",
            run: |b| exposed(b, Net::Unet, true),
        },
        Case {
            op: "allreduce_exposed",
            case: "b1_student_serial",
            run: |b| exposed(b, Net::Student, false),
        },
        Case {
            op: "allreduce_exposed",
            case: "b1_student_overlap",
            run: |b| exposed(b, Net::Student, true),
        },
    ]
}

/// Gradients of every parameter, filled with `value` on the device.
fn gradients(params: &[(String, Tensor)], value: f32) -> Result<Gradients> {
    let mut grads = Gradients::default();
    for (_, p) in params {
        grads.accumulate(p.id(), Tensor::full(p.gpu(), p.shape(), value)?)?;
    }
    Ok(grads)
}

fn all_reduce(b: &Bench, params: Vec<(String, Tensor)>) -> Result<Sample> {
    let op = "bench allreduce_grads";
    let results = LocalGroup::run(2, Duration::from_secs(600), |comm| {
        let rank = crate::dist::Communicator::rank(&comm);
        let dp = DataParallel::new(Arc::new(comm));
        let mut times = Vec::new();
        let mut bytes = 0;
        // One warm-up, then REPS timed all-reduces, each on fresh gradients.
        for rep in 0..=REPS {
            let mut grads = gradients(&params, (rank + 1) as f32)?;
            b.gpu().synchronize()?;
            dp.comm.barrier()?;
            let t0 = Instant::now();
            let report = dp.all_reduce_gradients(&params, &mut grads)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            // The mean of 1 and 2 on every rank: the all-reduce did its job.
            let (_, first) = &params[0];
            let got = grads
                .get(first)
                .ok_or_else(|| Error::invalid(op, "a reduced gradient", "none"))?
                .to_vec()?;
            if got.iter().any(|&v| v != 1.5) {
                return Err(Error::invalid(op, "gradients averaged to 1.5", got[0]));
            }
            if rep > 0 {
                times.push(ms);
            }
            bytes = report.bytes;
        }
        Ok((times, bytes))
    })?;
    let mut slowest = [0.0f64; REPS];
    let mut bytes = 0;
    for r in results {
        let (times, b) = r?;
        for (s, t) in slowest.iter_mut().zip(times) {
            *s = s.max(t);
        }
        bytes = b;
    }
    slowest.sort_by(f64::total_cmp);
    let ms = slowest[REPS / 2];
    Ok(Sample {
        bytes: Some(bytes as u64),
        wall_clock: true,
        // Bytes moved per rank: read back and uploaded once each.
        ..Sample::new(ms, Work::Bytes(2.0 * bytes as f64))
    })
}

/// The network of an `allreduce_exposed` case.
#[derive(Clone, Copy)]
enum Net {
    Unet,
    Student,
}

/// One replica's network and a way to make a loss from a fresh forward.
enum Replica {
    Unet(PvtUnet),
    Student(CadsStudent),
}

impl Replica {
    fn new(gpu: &Gpu, net: Net) -> Result<Replica> {
        Ok(match net {
            Net::Unet => Replica::Unet(PvtUnet::new(gpu, ModelPreset::B1.model_config(2, 0.1, 0))?),
            Net::Student => Replica::Student(CadsStudent::new(gpu, &CadsConfig::cads())?),
        })
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        match self {
            Replica::Unet(n) => n.named_parameters(),
            Replica::Student(s) => s.named_parameters(),
        }
    }

    /// A forward on fresh random inputs, summed to a scalar.
    fn loss(&self, gpu: &Gpu, rng: &mut Rng) -> Result<Tensor> {
        let outputs = match self {
            Replica::Unet(n) => {
                n.forward(&random(gpu, rng, &[1, 16, 64, 64, 1])?, true, false, rng)?
            }
            Replica::Student(s) => {
                let c = CadsConfig::cads();
                let [d, h, w] = c.ct_view;
                let views = random(gpu, rng, &[2, d, h, w, 1])?;
                let drr = random(gpu, rng, &[1, c.drr_size, c.drr_size, 1])?;
                let groups = [(&views, Modality::Volume), (&drr, Modality::Image)];
                s.forward(&groups, true, rng)?.logits.to_vec()
            }
        };
        let mut total: Option<Tensor> = None;
        for o in &outputs {
            let s = ops::sum_all(o)?;
            total = Some(match total {
                None => s,
                Some(t) => ops::add(&t, &s)?,
            });
        }
        total.ok_or_else(|| Error::invalid("bench allreduce_exposed", "network outputs", 0))
    }
}

/// Per timed repetition on one rank: (backward alone, backward with the all-reduce), ms.
type RankTimes = Vec<(f64, f64)>;

fn exposed(b: &Bench, net: Net, overlap: bool) -> Result<Sample> {
    let reps = match net {
        Net::Unet => 3,
        Net::Student => 2,
    };
    let (variant, times, bytes) = match b.job() {
        Some(job) if job.size() > 1 => {
            let (mine, bytes) = exposed_rank(b.gpu(), job, net, overlap, reps)?;
            // Every rank's times on every rank: each adds its own into its slots of a zeroed
            // vector, the sum is the table.
            let (size, rank) = (job.size(), job.rank());
            let mut table = vec![0.0f32; size * reps * 2];
            for (k, (bwd, step)) in mine.iter().enumerate() {
                table[(rank * reps + k) * 2] = *bwd as f32;
                table[(rank * reps + k) * 2 + 1] = *step as f32;
            }
            job.comm.all_reduce_sum(&mut table)?;
            let all = (0..size)
                .map(|r| {
                    (0..reps)
                        .map(|k| {
                            let at = (r * reps + k) * 2;
                            (table[at] as f64, table[at + 1] as f64)
                        })
                        .collect()
                })
                .collect();
            (format!("{}{size}", job.comm.backend()), all, bytes)
        }
        _ => {
            // Rank 0 on the bench's device, rank 1 on a device of its own (the next adapter
            // of the same kind, or a second device on the one adapter).
            let second = Gpu::with_choice(&AdapterChoice {
                index: Some(1),
                ..AdapterChoice::from_env()
            })?;
            let gpus = [b.gpu().clone(), second];
            let results = LocalGroup::run(2, Duration::from_secs(1800), |comm| {
                let rank = crate::dist::Communicator::rank(&comm);
                let job = DataParallel::new(Arc::new(comm));
                exposed_rank(&gpus[rank], &job, net, overlap, reps)
            })?;
            let mut all = Vec::new();
            let mut bytes = 0;
            for r in results {
                let (t, b) = r?;
                all.push(t);
                bytes = b;
            }
            ("local2".to_string(), all, bytes)
        }
    };
    // Per repetition the slower rank's times; the medians over repetitions.
    let slowest = |pick: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        (0..reps)
            .map(|k| {
                times
                    .iter()
                    .map(|t: &RankTimes| pick(&t[k]))
                    .fold(0.0, f64::max)
            })
            .collect()
    };
    let (bwd, step) = (slowest(|t| t.0), slowest(|t| t.1));
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let added: Vec<f64> = step.iter().zip(&bwd).map(|(s, b)| s - b).collect();
    Ok(Sample {
        variant: Some(variant),
        bytes: Some(bytes as u64),
        backward_ms: Some(median(bwd)),
        wall_clock: true,
        ..Sample::new(median(added), Work::Bytes(2.0 * bytes as f64))
    })
}

/// One rank's repetitions (after one warm-up) and the bytes it contributes per step.
fn exposed_rank(
    gpu: &Gpu,
    job: &DataParallel,
    net: Net,
    overlap: bool,
    reps: usize,
) -> Result<(RankTimes, usize)> {
    let replica = Replica::new(gpu, net)?;
    let params = replica.params();
    let mut job = job.clone();
    job.overlap = overlap;
    let mut rng = Rng::new(0xD157 + job.rank() as u64);
    let mut times = Vec::new();
    let mut bytes = 0;
    for rep in 0..=reps {
        let mut timed = [0.0f64; 2];
        for (k, reduce) in [false, true].into_iter().enumerate() {
            let loss = replica.loss(gpu, &mut rng)?;
            gpu.synchronize()?;
            job.comm.barrier()?;
            let t0 = Instant::now();
            let grads = if reduce {
                let (grads, report) = job.backward(&loss, &params)?;
                bytes = report.bytes;
                grads
            } else {
                loss.backward()?
            };
            gpu.synchronize()?;
            timed[k] = t0.elapsed().as_secs_f64() * 1e3;
            drop(grads);
        }
        if rep > 0 {
            times.push((timed[0], timed[1]));
        }
    }
    drop(replica);
    gpu.trim_pool();
    Ok((times, bytes))
}
