//! PVT-UNet training (`cads segment train`): nnU-Net's loop on our GPU stack.
//!
//! Per step: a batch of augmented patches from the prefetcher (host threads,
//! `segment::augment`), the network's five outputs, the deep-supervised Dice + CE loss
//! (`segment::loss`), backward (with `loss_scale`: of the scaled loss, then the gradients
//! unscaled and checked, `optim::LossScaler`; a step with an inf / NaN gradient is skipped on the
//! device), gradient clipping at global norm 12 (nnU-Net's), the poly
//! learning rate `lr_t = lr₀·(1 − t/T)^0.9` (encoder groups × `encoder_lr_factor`), the optimizer
//! step (SGD Nesterov 0.99 by default, AdamW as an option). While `epoch <
//! freeze_encoder_epochs` the encoder runs without recording: no gradient, no update, no
//! momentum. With `precision` amp the forward, loss and backward run under
//! `Gpu::autocast(Precision::Mixed)` (the linear layers on f16 operands with f32 accumulation;
//! `loss_scale` is then usually on) and so does validation; the optimizer updates f32 weights.
//! The run records the precision that ran (f32 on a device without `SHADER_F16`), and a resumed
//! run may change it (noted; the loss scaler continues, starts afresh or is dropped).
//!
//! Per epoch: validation Dice per foreground class on the held-out cases (the same Gaussian
//! sliding window as `cads segment predict`, overlap 0.5, no mirroring; argmax; counts pooled
//! over the cases as nnU-Net's online "pseudo Dice"), a JSON line in
//! `RUN/metrics.jsonl`, the curves `RUN/curves.png`, the checkpoint `RUN/checkpoint_latest
//! .safetensors` and, when the mean foreground Dice improves, `RUN/checkpoint_best
//! .safetensors` (both written atomically by `checkpoint`). `--resume` restores the latest
//! checkpoint (network, optimizer, position, best Dice) and continues the same patch stream: sample
//! i of global step t is always drawn from `dist::sample_rng(seed, t, i)`.
//!
//! Data ([`SegData`], see `segment::train_data`): `cads segment train` preprocesses with the plan
//! (`plan.json`: spacing, CT normalisation, image and label resampling) through the on-disk cache
//! ([`load_planned_data`]); [`load_training_data`] reads cases on their own grids without a plan.
//! The last `validation_fraction` of the cases are held out; with a single case its last
//! `validation_fraction` of slices along D (a cranio-caudal slab) are. The plan is stored in the
//! run description ([`RunInfo::plan`]), so `cads segment predict` preprocesses the same way, and
//! a resumed run must use the same preprocessing (same plan key).
//!
//! Data parallel (`RunOptions::data_parallel`, `crate::dist`): every rank runs this with the
//! same config and data; `batch` is the global batch and each rank makes and trains on its
//! window of it (sample i of step t drawn from `dist::sample_rng(seed, t, i)`, so the shards
//! together are the one-device batch); drop path draws for the global rows; the gradients are
//! averaged over the ranks before clipping (in buckets reduced while the backward pass runs,
//! `dist::overlap`); the loss reported is the mean over the ranks. Batch Dice (a ratio of sums
//! over the global batch) all-reduces its per-class sums and backpropagates the gradient of the
//! global loss (`segment::global_batch_dice`). Rank 0 alone validates and writes the run folder,
//! and reads the checkpoint to resume; its state is broadcast to the others, so a checkpoint
//! resumes on any number of ranks.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::augment::{augmented_patch, TrainingCase};
use super::config::{OptimizerKind, SegTrainConfig};
use super::curves::curves_png;
use super::global_batch_dice::seg_loss_over_ranks;
use super::loss::{seg_loss, SegLossConfig};
use super::plan::Plan;
use super::sliding_window::{sliding_window, tensor_forward, SlidingWindowConfig};
pub use super::train_data::{
    load_planned_data, load_training_data, CacheUse, CtNormalization, SegData,
};
use crate::checkpoint::{Checkpoint, LoadedCheckpoint};
use crate::data::loader::Prefetcher;
use crate::data::preprocess::Patch;
use crate::dist::{sample_rng, DataParallel};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::infer::{argmax_classes, DiceCounts};
use crate::models::PvtUnet;
use crate::nn::drop_path::{with_sample_window, SampleWindow};
use crate::nn::Module;
use crate::optim::{
    clip_grad_norm, clip_grad_norm_unless_overflow, AdamW, AdamWConfig, LossScaler,
    LossScalerConfig, Optimizer, ParamGroup, PolyDecay, Sgd, SgdConfig,
};
use crate::tensor::Tensor;
use crate::util::Rng;

/// nnU-Net's gradient clipping: global L2 norm 12.
pub const CLIP_NORM: f64 = 12.0;

pub use super::run_record::{EpochMetrics, Progress, RunInfo, RunOptions, TrainReport};

fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// The optimizer with its groups: encoder groups first (indices in the returned list).
fn build_optimizer(
    net: &PvtUnet,
    cfg: &SegTrainConfig,
) -> Result<(Box<dyn Optimizer>, Vec<usize>)> {
    let lr = cfg.base_lr();
    let (enc, dec) = (net.encoder_parameters(), net.decoder_parameters());
    Ok(match cfg.optimizer {
        OptimizerKind::Sgd => (
            Box::new(Sgd::new(
                vec![ParamGroup::named(enc), ParamGroup::named(dec)],
                SgdConfig::nnunet(lr),
            )?),
            vec![0],
        ),
        OptimizerKind::AdamW => {
            let mut groups = ParamGroup::split_decay_named(&enc);
            groups.extend(ParamGroup::split_decay_named(&dec));
            (
                Box::new(AdamW::new(
                    groups,
                    AdamWConfig {
                        lr,
                        ..AdamWConfig::default()
                    },
                )?),
                vec![0, 1],
            )
        }
    })
}

/// The checkpoint name of the loss scaler (present when the run scales its loss).
const LOSS_SCALER: &str = "loss_scaler";

/// `ck` with the loss scaler's state added when the run has one.
fn checkpoint_with_scaler<'a>(
    ck: Checkpoint<'a>,
    scaler: &'a Option<LossScaler>,
) -> Checkpoint<'a> {
    match scaler {
        Some(s) => ck.loss_scaler(LOSS_SCALER, s),
        None => ck,
    }
}

/// Load the scaler's saved state, if the run scales and the checkpoint has one (a checkpoint of
/// a run without scaling starts the scaler afresh).
fn restore_scaler(ck: &LoadedCheckpoint, scaler: &mut Option<LossScaler>) -> Result<()> {
    if let Some(s) = scaler {
        if ck.loss_scaler_names().contains(&LOSS_SCALER) {
            s.load_state(&ck.loss_scaler(LOSS_SCALER)?)?;
        }
    }
    Ok(())
}

/// A batch: images `[B, D, H, W, 1]` flat and labels per voxel.
type Batch = (Vec<f32>, Vec<usize>);

/// Labels of every voxel of `image` predicted by `net`: `segment::sliding_window` with
/// nnU-Net's Gaussian weighting and overlap 0.5, no mirroring, then argmax.
pub fn predict_case(net: &PvtUnet, image: &Patch, patch: [usize; 3]) -> Result<Vec<usize>> {
    let k = net.config.classes;
    let gpu = net.heads[0].weight.gpu().clone();
    let run = |x: &Tensor| net.predict(x);
    let mut forward = tensor_forward(&gpu, k, &run);
    let logits = sliding_window(image, k, &SlidingWindowConfig::new(patch), &mut forward)?;
    argmax_classes(&logits.data, k)
}

/// Dice per foreground class over the held-out cases (pooled counts; None when a class is in
/// neither prediction nor reference of any case).
pub fn validate(
    net: &PvtUnet,
    cases: &[TrainingCase],
    patch: [usize; 3],
) -> Result<Vec<Option<f64>>> {
    let k = net.config.classes;
    let mut pooled = vec![DiceCounts::default(); k];
    for case in cases {
        let predicted = predict_case(net, &case.image, patch)?;
        let target: Vec<usize> = case.label.data.iter().map(|&v| v as usize).collect();
        for (c, p) in pooled.iter_mut().enumerate().skip(1) {
            p.add(DiceCounts::of(&predicted, &target, c)?);
        }
    }
    Ok(pooled[1..]
        .iter()
        .map(|p| (p.predicted + p.target > 0).then(|| p.value()))
        .collect())
}

fn write_line(path: &Path, line: &str, truncate: bool) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .truncate(truncate)
        .open(path)
        .map_err(io("segment::train", path))?;
    if !line.is_empty() {
        writeln!(f, "{line}").map_err(io("segment::train", path))?;
    }
    Ok(())
}

/// Train a PVT-UNet on `data` (see the module docs). `on_progress` sees every step and epoch.
pub fn train(
    gpu: &Gpu,
    cfg: &SegTrainConfig,
    data: &SegData,
    run: &RunOptions,
    mut on_progress: impl FnMut(Progress),
) -> Result<TrainReport> {
    const OP: &str = "segment::train";
    cfg.validate()?;
    // The precision that runs here is the one recorded (run.json, checkpoints, metrics): amp on
    // a device without SHADER_F16 runs, and is recorded as, f32.
    let cfg = &SegTrainConfig {
        precision: gpu.supported_precision(cfg.precision),
        ..cfg.clone()
    };
    if data.train.is_empty() {
        return Err(Error::invalid(OP, "at least one training case", 0));
    }
    let info = RunInfo {
        train: cfg.clone(),
        classes: data.classes,
        class_names: data.class_names.clone(),
        normalization: data.normalization,
        plan: data.plan.clone(),
    };
    let info_json =
        serde_json::to_string(&info).map_err(|e| Error::invalid(OP, "a serialisable config", e))?;
    let dp = run.data_parallel.clone();
    let root = dp.as_ref().is_none_or(DataParallel::is_root);
    let window = match &dp {
        Some(d) => d.window(cfg.batch)?,
        None => SampleWindow::whole(cfg.batch),
    };
    let net = PvtUnet::new(gpu, info.model_config())?;
    if let Some(teacher) = &run.init_from {
        net.load_encoder(teacher)?;
    }
    let (mut opt, encoder_groups) = build_optimizer(&net, cfg)?;
    let mut scaler = match cfg.loss_scale {
        true => Some(LossScaler::new(gpu, LossScalerConfig::default())?),
        false => None,
    };
    let params = net.parameter_tensors();
    let named_params = net.named_parameters();
    let schedule = PolyDecay::nnunet(cfg.base_lr(), cfg.total_steps())?;
    let outputs = if cfg.deep_supervision { 5 } else { 1 };
    let loss_cfg = SegLossConfig::nnunet(outputs, cfg.batch_dice)?;
    let mut model_rng = Rng::new(cfg.seed).fork(u64::MAX);
    let mut history: Vec<EpochMetrics> = Vec::new();
    let mut best = f64::NEG_INFINITY;
    let mut start_epoch = 0;

    let paths = run.out.as_ref().map(|dir| {
        (
            dir.join("checkpoint_latest.safetensors"),
            dir.join("checkpoint_best.safetensors"),
            dir.join("metrics.jsonl"),
            dir.join("curves.png"),
        )
    });
    if let (Some(dir), true) = (&run.out, root) {
        std::fs::create_dir_all(dir).map_err(io(OP, dir))?;
        let pretty = serde_json::to_string_pretty(&info)
            .map_err(|e| Error::invalid(OP, "a serialisable config", e))?;
        crate::nn::write_atomically(
            OP,
            &dir.join("run.json").display().to_string(),
            pretty.as_bytes(),
        )?;
    }
    if run.resume && root {
        let (latest, _, metrics, _) = paths
            .as_ref()
            .ok_or_else(|| Error::invalid(OP, "a run folder to resume from", "none"))?;
        let ck = LoadedCheckpoint::read(&latest.display().to_string())?;
        let saved: RunInfo = serde_json::from_str(ck.config().unwrap_or("")).map_err(|e| {
            Error::invalid(
                OP,
                "a segmentation checkpoint's run description",
                e.to_string(),
            )
        })?;
        if saved.train.model != cfg.model
            || saved.classes != data.classes
            || saved.train.patch != cfg.patch
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "a checkpoint of the same model, classes and patch ({:?}, {}, {:?})",
                    cfg.model, data.classes, cfg.patch
                ),
                format!(
                    "{:?}, {}, {:?}",
                    saved.train.model, saved.classes, saved.train.patch
                ),
            ));
        }
        let key = |p: &Option<Plan>| p.as_ref().map(Plan::preprocessing_key);
        if key(&saved.plan) != key(&data.plan) {
            return Err(Error::invalid(
                OP,
                format!(
                    "a checkpoint trained on the same preprocessing (plan key {:?})",
                    key(&data.plan)
                ),
                format!(
                    "plan key {:?} in {} (train with the run's own plan.json)",
                    key(&saved.plan),
                    latest.display()
                ),
            ));
        }
        // Precision may change on resume (autocast on or off between a checkpoint and its
        // continuation, as in PyTorch): the weights and optimizer state are f32 either way. The
        // loss scaler continues from its saved state, starts afresh at 2^16 when the checkpoint
        // has none, and is dropped when this run does not scale.
        if saved.train.precision != cfg.precision || saved.train.loss_scale != cfg.loss_scale {
            let on_off = |b: bool| if b { "on" } else { "off" };
            eprintln!(
                "resume: precision {} -> {}, loss scaling {} -> {}",
                saved.train.precision,
                cfg.precision,
                on_off(saved.train.loss_scale),
                on_off(cfg.loss_scale)
            );
        }
        if let (Some(_), true) = (&scaler, ck.loss_scaler_names().contains(&LOSS_SCALER)) {
            ck.loss_scaler(LOSS_SCALER)?.validate()?;
        }
        ck.restore(&[("net", &net)], &mut [("optimizer", opt.as_mut())])?;
        restore_scaler(&ck, &mut scaler)?;
        model_rng = ck.rng("model")?;
        start_epoch = ck.position().epoch as usize;
        best = ck.extra(gpu, "best_mean_dice")?.to_scalar()? as f64;
        let text = std::fs::read_to_string(metrics).map_err(io(OP, metrics))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let m: EpochMetrics = serde_json::from_str(line).map_err(|e| Error::BadFile {
                op: OP,
                path: metrics.display().to_string(),
                problem: e.to_string(),
            })?;
            if m.epoch < start_epoch {
                history.push(m);
            }
        }
    }
    if let (Some((_, _, metrics, _)), false, true) = (&paths, run.resume, root) {
        write_line(metrics, "", true)?;
    }
    if let Some(d) = &dp {
        // Every rank takes rank 0's state (fresh or resumed) through checkpoint bytes.
        let mut bytes = if d.is_root() {
            let best_t = Tensor::from_slice(gpu, &[best as f32], &[1])?;
            let ck = Checkpoint::new()
                .model("net", &net)
                .optimizer("optimizer", opt.as_ref())
                .position(
                    start_epoch as u64,
                    (start_epoch * cfg.iterations_per_epoch) as u64,
                )
                .rng("model", &model_rng)
                .config(&info_json)
                .extra("best_mean_dice", &best_t);
            checkpoint_with_scaler(ck, &scaler).to_bytes()?
        } else {
            Vec::new()
        };
        d.broadcast_from_root(&mut bytes)?;
        if !d.is_root() {
            let ck = LoadedCheckpoint::from_bytes(bytes, "rank 0's state (broadcast)")?;
            ck.restore(&[("net", &net)], &mut [("optimizer", opt.as_mut())])?;
            restore_scaler(&ck, &mut scaler)?;
            model_rng = ck.rng("model")?;
            start_epoch = ck.position().epoch as usize;
        }
    }

    let cases = Arc::new(data.train.clone());
    let (patch, batch, fg_p) = (cfg.patch, window.count, cfg.foreground_p);
    let augment = run.augment.clone();
    let first_step = start_epoch * cfg.iterations_per_epoch;
    let remaining = cfg.total_steps() as usize - first_step.min(cfg.total_steps() as usize);
    let seed = cfg.seed;
    let make = move |b: usize, _: &mut Rng| -> Result<Batch> {
        // Sample i of global step t depends on (seed, t, i) only, so a resumed run draws the
        // same patches and the ranks' windows together make the one-device batch.
        let step = (first_step + b) as u64;
        let mut images = Vec::with_capacity(window.count * patch.iter().product::<usize>());
        let mut labels = Vec::with_capacity(images.capacity());
        for i in window.offset..window.offset + window.count {
            let mut rng = sample_rng(seed, step, i);
            let case = &cases[rng.below(cases.len())];
            let (i, l) = augmented_patch(case, patch, fg_p, &augment, 0.0, &mut rng)?;
            images.extend_from_slice(&i.data);
            labels.extend(l.data.iter().map(|&v| v as usize));
        }
        Ok((images, labels))
    };
    let mut batches = Prefetcher::new(seed, Some(remaining), cfg.workers, 2 * cfg.workers, make);
    let [d, h, w] = cfg.patch;
    let mut step = first_step as u64;
    let end_epoch = match run.stop_after {
        Some(n) => (start_epoch + n).min(cfg.epochs),
        None => cfg.epochs,
    };
    for epoch in start_epoch..end_epoch {
        let started = Instant::now();
        let frozen = epoch < cfg.freeze_encoder_epochs;
        let mut loss_sum = 0.0;
        let mut lr = 0.0;
        for it in 0..cfg.iterations_per_epoch {
            let (images, labels) = batches.next().ok_or_else(|| {
                Error::invalid(OP, "a batch from the prefetcher", "the stream ended")
            })??;
            let x = Tensor::from_slice(gpu, &images, &[batch, d, h, w, 1])?;
            // Forward, loss and backward under the run's precision (amp: the linear layers on
            // f16 operands with f32 accumulation); unscale, clip and the optimizer step on the
            // f32 master weights run in f32 after it.
            let (loss, mut grads) = gpu.autocast(cfg.precision, || -> Result<_> {
                let outs =
                    with_sample_window(window, || net.forward(&x, true, frozen, &mut model_rng))?;
                let outs = &outs[..outputs];
                let ndhw = [batch, d, h, w];
                let loss = match &dp {
                    // Batch Dice is a ratio of global sums: all-reduced, with the gradient of the
                    // global loss (segment::global_batch_dice).
                    Some(dp) if cfg.batch_dice && dp.size() > 1 => {
                        seg_loss_over_ranks(outs, &labels, ndhw, &loss_cfg, dp.size(), |sums| {
                            dp.comm.all_reduce_sum(sums)
                        })?
                    }
                    _ => seg_loss(outs, &labels, ndhw, &loss_cfg)?,
                };
                let scaled = match &mut scaler {
                    Some(s) => s.scale(&loss)?,
                    None => loss.clone(),
                };
                let grads = match &dp {
                    // The mean over the ranks, before clipping: the clip sees the global gradient
                    // (reduced in buckets during the backward pass unless `overlap` is off).
                    Some(d) => d.backward(&scaled, &named_params)?.0,
                    None => scaled.backward()?,
                };
                Ok((loss, grads))
            })?;
            // Unscaled before clipping (the clip must see the true gradients).
            let overflow = match &mut scaler {
                Some(s) => Some(s.unscale_and_check(&params, &mut grads)?),
                None => None,
            };
            match &overflow {
                Some(check) => {
                    clip_grad_norm_unless_overflow(&params, &mut grads, CLIP_NORM, check)?;
                }
                None => {
                    clip_grad_norm(&params, &mut grads, CLIP_NORM)?;
                }
            }
            lr = schedule.at(step);
            for g in 0..opt.num_groups() {
                let factor = if encoder_groups.contains(&g) {
                    cfg.encoder_lr_factor
                } else {
                    1.0
                };
                opt.set_lr(g, lr * factor)?;
            }
            match (&overflow, &mut scaler) {
                (Some(check), Some(s)) => {
                    opt.step_unless_overflow(&grads, check)?;
                    s.update()?;
                }
                _ => opt.step(&grads)?,
            }
            let mut value = [loss.to_scalar()?];
            if let Some(d) = &dp {
                d.mean_in_place(&mut value)?;
            }
            let [value] = value;
            if !value.is_finite() {
                return Err(Error::invalid(
                    OP,
                    "a finite loss",
                    format!("{value} at epoch {epoch}, iteration {it}"),
                ));
            }
            loss_sum += value as f64;
            step += 1;
            if !root {
                continue;
            }
            on_progress(Progress::Step {
                epoch,
                iteration: it,
                iterations: cfg.iterations_per_epoch,
                loss: value,
                steps_per_second: (it + 1) as f64 / started.elapsed().as_secs_f64(),
            });
        }
        let val_dice = if data.validation.is_empty() || !root {
            Vec::new()
        } else {
            // Under the training policy, as PyTorch loops (nnU-Net's among them) validate inside
            // autocast: the Dice measures the network as it runs in this precision.
            gpu.autocast(cfg.precision, || {
                validate(&net, &data.validation, cfg.patch)
            })?
        };
        let present: Vec<f64> = val_dice.iter().flatten().copied().collect();
        let mean = if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        };
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / cfg.iterations_per_epoch as f64,
            val_dice,
            mean_val_dice: mean,
            lr,
            encoder_frozen: frozen,
            seconds: started.elapsed().as_secs_f64(),
            precision: cfg.precision,
            loss_scale: scaler
                .as_ref()
                .map(|s| s.current_scale().map(f64::from))
                .transpose()?,
            skipped_steps: scaler.as_ref().map(|s| s.skipped_steps()).transpose()?,
        };
        history.push(metrics.clone());
        let improved = mean > best;
        if improved {
            best = mean;
        }
        if let (Some((latest, best_path, metrics_path, curves)), true) = (&paths, root) {
            let line = serde_json::to_string(&metrics)
                .map_err(|e| Error::invalid(OP, "serialisable metrics", e))?;
            write_line(metrics_path, &line, false)?;
            let loss: Vec<f64> = history.iter().map(|m| m.train_loss).collect();
            let dice: Vec<Vec<f64>> = history
                .iter()
                .map(|m| m.val_dice.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
                .collect();
            crate::nn::write_atomically(
                OP,
                &curves.display().to_string(),
                &curves_png(&loss, &dice)?,
            )?;
            let best_t = Tensor::from_slice(gpu, &[best as f32], &[1])?;
            let ck = Checkpoint::new()
                .model("net", &net)
                .optimizer("optimizer", opt.as_ref())
                .position((epoch + 1) as u64, step)
                .rng("model", &model_rng)
                .config(&info_json)
                .extra("best_mean_dice", &best_t);
            let ck = checkpoint_with_scaler(ck, &scaler);
            ck.save(&latest.display().to_string())?;
            if improved {
                ck.save(&best_path.display().to_string())?;
            }
        }
        if root {
            on_progress(Progress::Epoch(&metrics));
        }
    }
    Ok(TrainReport {
        net,
        history,
        best_mean_dice: best,
    })
}
