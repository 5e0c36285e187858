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

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bench, Case, Sample, Work};
use crate::autograd::Gradients;
use crate::dist::{DataParallel, LocalGroup};
use crate::error::{Error, Result};
use crate::models::PvtUnet;
use crate::nn::Module;
use crate::pretrain::{CadsConfig, CadsStudent};
use crate::segment::config::ModelPreset;
use crate::tensor::Tensor;

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
