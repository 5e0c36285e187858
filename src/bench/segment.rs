//! `segment_step`: one PVT-UNet training step (PVTv2-b1 encoder, 2 classes, batch 2): forward
//! with its five deep-supervision outputs, the Dice + CE loss (`segment::loss`), backward, and
//! the SGD Nesterov update, with the buffer pool's peak bytes during the step.
//!
//! - `vol16x64x64_n2`: lavapipe-sized, timed like every case (warm-up, median).
//! - `vol64x160x160_n2`: nnU-Net's patch; ONE step, no warm-up (pipeline compilation included).
//!   The decoder's full-resolution tensors are the largest (`[2, 64, 160, 160, 32]` f32 =
//!   419 430 400 B per activation, and the stem level's concatenation `[2, 32, 80, 80, 128]` as
//!   much); where that passes the device's storage-binding limit (lavapipe: 128 MiB =
//!   134 217 728 B) the case returns the typed `TooLarge` error before allocating anything, which
//!   `cads bench` prints as a `"status":"too_large"` line with both sizes (not a failure).
//!   Fitting it would take every op of the decoder (convs, InstanceNorm, concat, the loss)
//!   splitting its tensors over several bindings; a batch of 1 (210 MB) would not fit either.
//!
//! FLOPs: the encoder's count of `bench::pvt` plus the decoder's transposed convs (one tap per
//! output voxel, kernel = stride), block convs (27 taps), final level and 1×1×1 heads; a step
//! counts 3 × forward. Labels are random classes, fixed per input.

use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::error::{Error, Result};
use crate::models::{PvtUnet, PvtUnetConfig};
use crate::nn::Module;
use crate::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use crate::segment::loss::{seg_loss, SegLossConfig};
use crate::tensor::Tensor;
use crate::util::Rng;

const N: usize = 2;
const CLASSES: usize = 2;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "segment_step",
            case: "vol16x64x64_n2",
            run: |b| timed(b, [16, 64, 64]),
        },
        Case {
            op: "segment_step",
            case: "vol64x160x160_n2",
            run: |b| once(b, [64, 160, 160]),
        },
    ]
}

fn config() -> PvtUnetConfig {
    PvtUnetConfig {
        classes: CLASSES,
        ..PvtUnetConfig::default()
    }
}

/// Forward FLOPs of one sample.
fn forward_flops(cfg: &PvtUnetConfig, dhw: [usize; 3]) -> f64 {
    let vol = |s: [usize; 3]| (dhw[0] / s[0] * dhw[1] / s[1] * dhw[2] / s[2]) as f64;
    let e = cfg.encoder.embed_dims.map(|c| c as f64);
    let skip = [cfg.encoder.stem_channels as f64, e[0], e[1], e[2]];
    let below = [skip[1], skip[2], skip[3], e[3]];
    let strides = PvtUnet::output_strides();
    let (f, k) = (cfg.final_channels as f64, cfg.classes as f64);
    let mut flops = super::pvt::forward_flops(&cfg.encoder, dhw);
    for l in 0..4 {
        let v = vol(strides[l + 1]);
        let c = skip[l];
        flops += 2.0 * v * below[l] * c // transposed conv
            + 2.0 * v * 27.0 * (2.0 * c * c + c * c) // block
            + 2.0 * v * c * k; // head
    }
    let v = vol([1, 1, 1]);
    flops + 2.0 * v * skip[0] * f + 2.0 * v * 27.0 * 2.0 * f * f + 2.0 * v * f * k
}

type Inputs = (Tensor, Vec<usize>);

fn make_inputs(gpu: &crate::Gpu, rng: &mut Rng, dhw: [usize; 3]) -> Result<Inputs> {
    let x = random(gpu, rng, &[N, dhw[0], dhw[1], dhw[2], 1])?;
    let labels = (0..N * dhw.iter().product::<usize>())
        .map(|_| rng.below(CLASSES))
        .collect();
    Ok((x, labels))
}

struct Step {
    net: PvtUnet,
    opt: Sgd,
    loss: SegLossConfig,
    rng: Rng,
}

impl Step {
    fn new(b: &Bench) -> Result<Step> {
        let net = PvtUnet::new(b.gpu(), config())?;
        let opt = Sgd::new(
            vec![ParamGroup::named(net.named_parameters())],
            SgdConfig::nnunet(1e-2),
        )?;
        Ok(Step {
            net,
            opt,
            loss: SegLossConfig::nnunet(5, false)?,
            rng: Rng::new(7),
        })
    }

    fn run(&mut self, (x, labels): &Inputs) -> Result<()> {
        let s = x.shape();
        let outs = self.net.forward(x, true, false, &mut self.rng)?;
        let loss = seg_loss(&outs, labels, [s[0], s[1], s[2], s[3]], &self.loss)?;
        let grads = loss.backward()?;
        self.opt.step(&grads)
    }
}

fn timed(b: &Bench, dhw: [usize; 3]) -> Result<Sample> {
    let cfg = config();
    let mut step = Step::new(b)?;
    let make = |gpu: &crate::Gpu, r: &mut Rng| make_inputs(gpu, r, dhw);
    let ms = b.time_with_grad(make, |i| step.run(i))?;
    let peak = b.peak_bytes(make, |i| step.run(i))?;
    drop(step);
    b.gpu().trim_pool();
    Ok(Sample::whole_step(
        ms,
        Work::Flops(3.0 * N as f64 * forward_flops(&cfg, dhw)),
        peak,
    ))
}

fn once(b: &Bench, dhw: [usize; 3]) -> Result<Sample> {
    let cfg = config();
    // The largest tensors: the final block's activations and the stem level's concatenation.
    let full = N * dhw.iter().product::<usize>();
    let bytes =
        4 * (full * cfg.final_channels).max(full / 8 * 2 * cfg.encoder.stem_channels) as u64;
    let limit = b.gpu().max_binding_bytes();
    if bytes > limit {
        return Err(Error::TooLarge {
            op: "bench segment_step",
            bytes,
            limit,
            which: "max_storage_buffer_binding_size",
        });
    }
    let mut step = Step::new(b)?;
    let (ms, peak) = b.once_with_grad(|gpu, r| make_inputs(gpu, r, dhw), |i| step.run(i))?;
    drop(step);
    b.gpu().trim_pool();
    Ok(Sample::whole_step(
        ms,
        Work::Flops(3.0 * N as f64 * forward_flops(&cfg, dhw)),
        peak,
    ))
}
