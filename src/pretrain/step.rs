//! One CADS training step and its schedules (../shared/CADS.md, "One step"), in the authors'
//! order (`train_one_epoch` of their `main_CADS_ssl.py`):
//!
//! 1. lr and weight decay of iteration `it` (wd on the regularised group 0 only);
//! 2. teacher forward on (x1, x2) as one batch, under `no_grad` (stochastic when the teacher
//!    keeps drop path, as theirs);
//! 3. student forward on (x1, x2) as one volume batch and xD as an image batch;
//! 4. the loss (src/pretrain/loss.rs) with τt of the epoch;
//! 5. backward (of the loss × the loss scale with `loss_scale`, then the gradients unscaled and
//!    checked for inf / NaN in one pass, `optim::LossScaler`); steps 2–5 run under
//!    `gpu.autocast(config.precision)` (with `amp` the linear layers multiply f16 operands with
//!    f32 accumulation, src/gpu/autocast.rs), everything from 6 on in f32 on the f32 master
//!    weights, as PyTorch's autocast + GradScaler loop;
//! 6. per-tensor gradient clipping (0.3), on unscaled gradients;
//! 7. while epoch < freeze_last_layer_epochs, drop the gradients of every `last_layer` tensor,
//!    so AdamW skips them entirely (no update, no weight decay, no step count);
//! 8. AdamW step (with `loss_scale`, skipped on the device when a gradient overflowed; the scale
//!    then backs off);
//! 9. EMA of the teacher (backbone and stage-4 head, by name) with momentum m(it);
//! 10. the center update c ← 0.9c + 0.1·mean(t) (theirs runs inside the loss; it only feeds
//!     the next step, so the place is immaterial).
//!
//! Data parallel (`data_parallel` set, `crate::dist`): each replica runs this step on its shard
//! of the global batch; drop path draws for the global rows (`nn::drop_path::with_sample_window`);
//! the gradients are averaged over the replicas (before clipping; in buckets reduced while the
//! backward pass runs, `dist::overlap`); the center update, the reported loss values and the
//! collapse monitors are those of the global batch (`pretrain::replica_stats`: row means averaged
//! over the replicas; KL(P̄_t ‖ u) and the feature std from the global P̄_t, feature mean and
//! variance). Every replica then takes the same AdamW and EMA steps.
//!
//! Nothing is read back to the host (on one device): the returned [`StepStats`] holds the loss and monitors as
//! one small GPU tensor, read by [`StepStats::read`] when the caller logs.
//!
//! Schedules are pure functions of the global iteration `it` = epoch·iters_per_epoch + i
//! ([`CadsSchedules::at`]): lr = DINO cosine_scheduler(peak, min_lr, warm-up epochs) with
//! peak = base_lr·batch/192; wd = cosine 0.04 → 0.4; m = cosine 0.996 → 1; τt per epoch =
//! linspace(0.04, 0.07, 50)[epoch] then 0.07.

use crate::dist::DataParallel;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::pvt::Modality;
use crate::nn::drop_path::{with_sample_window, SampleWindow};
use crate::nn::Module;
use crate::optim::{
    clip_norms_per_tensor_on_gpu, AdamW, AdamWConfig, LinearRamp, LossScaler, LossScalerConfig,
    Optimizer, ParamGroup, WarmupCosine,
};
use crate::tensor::Tensor;
use crate::util::Rng;

use super::batch::CadsBatch;
use super::config::CadsConfig;
use super::loss::{CadsLoss, LOSS_VALUES};
use super::model::{CadsModel, CadsStudent};
use super::replica_stats::global_step_stats;

/// The scheduled values of one iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleValues {
    pub iteration: u64,
    pub epoch: u64,
    pub lr: f64,
    /// Weight decay of the regularised group (the other group keeps 0).
    pub weight_decay: f64,
    /// EMA momentum of the teacher update after this step.
    pub teacher_momentum: f64,
    pub teacher_temp: f64,
    /// Whether the heads' last layers are frozen in this step.
    pub last_layer_frozen: bool,
}

/// Every schedule of a run of `config.epochs` × `iters_per_epoch` iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CadsSchedules {
    pub iters_per_epoch: u64,
    pub lr: WarmupCosine,
    pub weight_decay: WarmupCosine,
    pub teacher_momentum: WarmupCosine,
    pub teacher_temp: LinearRamp,
    pub freeze_last_layer_epochs: u64,
}

impl CadsSchedules {
    pub fn new(config: &CadsConfig, iters_per_epoch: u64) -> Result<Self> {
        if iters_per_epoch == 0 {
            return Err(Error::invalid(
                "CadsSchedules::new",
                "iters_per_epoch >= 1",
                0,
            ));
        }
        let total = config.epochs * iters_per_epoch;
        Ok(CadsSchedules {
            iters_per_epoch,
            lr: WarmupCosine::dino(
                config.peak_lr(),
                config.min_lr,
                config.epochs,
                iters_per_epoch,
                config.warmup_epochs,
                0.0,
            )?,
            weight_decay: WarmupCosine::dino(
                config.weight_decay_start,
                config.weight_decay_end,
                config.epochs,
                iters_per_epoch,
                0,
                0.0,
            )?,
            teacher_momentum: WarmupCosine::ema_momentum(config.teacher_momentum_base, total)?,
            teacher_temp: LinearRamp::new(
                config.teacher_temp_start,
                config.teacher_temp_end,
                config.teacher_temp_warmup_epochs,
            )?,
            freeze_last_layer_epochs: config.freeze_last_layer_epochs,
        })
    }

    /// The values at global iteration `it` (past the end, the last values).
    pub fn at(&self, iteration: u64) -> ScheduleValues {
        let epoch = iteration / self.iters_per_epoch;
        ScheduleValues {
            iteration,
            epoch,
            lr: self.lr.at(iteration),
            weight_decay: self.weight_decay.at(iteration),
            teacher_momentum: self.teacher_momentum.at(iteration),
            teacher_temp: self.teacher_temp.at(epoch),
            last_layer_frozen: epoch < self.freeze_last_layer_epochs,
        }
    }
}

/// The three views of a batch on the GPU: x1 and x2 `[B, D, H, W, 1]`, xD `[B, H, W, 1]`.
pub struct StepInput {
    pub x1: Tensor,
    pub x2: Tensor,
    pub drr: Tensor,
}

impl StepInput {
    /// Upload a host batch (`pretrain::make_cads_batch`) with CT views `ct_view` (D, H, W) and
    /// DRRs `drr_size`² (channel 1, so the flat host order is the channels-last order).
    pub fn upload(
        gpu: &Gpu,
        batch: &CadsBatch,
        ct_view: [usize; 3],
        drr_size: usize,
    ) -> Result<Self> {
        let b = batch.batch;
        let [d, h, w] = ct_view;
        Ok(StepInput {
            x1: Tensor::from_slice(gpu, &batch.x1, &[b, d, h, w, 1])?,
            x2: Tensor::from_slice(gpu, &batch.x2, &[b, d, h, w, 1])?,
            drr: Tensor::from_slice(gpu, &batch.drr, &[b, drr_size, drr_size, 1])?,
        })
    }

    fn check(&self) -> Result<usize> {
        let op = "CadsTrainer::step";
        let b = self.x1.shape().first().copied().unwrap_or(0);
        if self.x1.rank() != 5 || self.x1.shape() != self.x2.shape() || b == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "x1 and x2 of one shape [B, D, H, W, 1], got x1 {:?}",
                    self.x1.shape()
                ),
                self.x2.shape(),
            ));
        }
        if self.drr.rank() != 4 || self.drr.shape()[0] != b {
            return Err(Error::shape(
                op,
                format!("drr [{b}, H, W, 1]"),
                self.drr.shape(),
            ));
        }
        Ok(b)
    }
}

/// What one step reports. Host values are known at once; the loss and monitors live in
/// `values` on the GPU until [`StepStats::read`].
#[derive(Clone, Debug)]
pub struct StepStats {
    pub schedule: ScheduleValues,
    /// `[LOSS_VALUES]`: L, L_1..L_4, H(P_t), KL(P̄_t ‖ u), feature std.
    pub values: Tensor,
    /// Per-tensor gradient norms before clipping (student parameters with a gradient, in
    /// order), on the GPU; `None` when clipping is off.
    pub grad_norms: Option<Tensor>,
    /// log K (the entropy of the uniform distribution), for the collapse test.
    pub log_k: f64,
}

/// The loss and monitors of one step, read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepValues {
    pub loss: f32,
    /// L_1..L_4 (stage 1..4 heads).
    pub stage_losses: [f32; 4],
    /// Mean entropy of the teacher's output distribution, nats.
    pub teacher_entropy: f32,
    /// KL(mean teacher distribution ‖ uniform), nats.
    pub teacher_kl_uniform: f32,
    /// Std of the teacher's pooled stage-4 features across the batch (mean over channels).
    pub feature_std: f32,
    /// The teacher has collapsed: uniform (entropy > 0.98 log K), one prototype for every input
    /// (KL > 0.98 log K), a constant feature (std < 1e-6), or a non-finite loss.
    pub collapsed: bool,
}

impl StepStats {
    /// One host read of the loss and monitors (waits for the device).
    pub fn read(&self) -> Result<StepValues> {
        StepValues::from_values(&self.values.to_vec()?, self.log_k)
    }
}

impl StepValues {
    /// Interpret the `[LOSS_VALUES]` read of [`StepStats::values`]; `log_k` = ln K.
    pub fn from_values(v: &[f32], log_k: f64) -> Result<StepValues> {
        if v.len() != LOSS_VALUES {
            return Err(Error::shape("StepValues", [LOSS_VALUES], [v.len()]));
        }
        let log_k = log_k as f32;
        let collapsed =
            !v[0].is_finite() || v[5] > 0.98 * log_k || v[6] > 0.98 * log_k || v[7] < 1e-6;
        Ok(StepValues {
            loss: v[0],
            stage_losses: [v[1], v[2], v[3], v[4]],
            teacher_entropy: v[5],
            teacher_kl_uniform: v[6],
            feature_std: v[7],
            collapsed,
        })
    }
}

/// Student, teacher, loss state, optimizer and schedules of one run.
pub struct CadsTrainer {
    pub config: CadsConfig,
    pub model: CadsModel,
    pub loss: CadsLoss,
    pub optimizer: AdamW,
    pub schedules: CadsSchedules,
    /// Student parameters by name, in the optimizer's order of discovery (for clipping and the
    /// last-layer freeze).
    pub params: Vec<(String, Tensor)>,
    /// Drop-path draws (student and, when stochastic, teacher).
    pub rng: Rng,
    /// The next global iteration.
    pub iteration: u64,
    /// This trainer's replica group (None: one device).
    pub data_parallel: Option<DataParallel>,
    /// Dynamic loss scaling (`config.loss_scale`).
    pub loss_scaler: Option<LossScaler>,
}

impl CadsTrainer {
    /// A fresh run: student seeded from `config`, teacher copied from it, zero center, AdamW
    /// on the two decay groups.
    pub fn new(gpu: &Gpu, config: &CadsConfig, iters_per_epoch: u64) -> Result<Self> {
        let model = CadsModel::new(gpu, config)?;
        Self::from_model(gpu, config, model, iters_per_epoch)
    }

    /// A run around an existing model (e.g. loaded from a checkpoint).
    pub fn from_model(
        gpu: &Gpu,
        config: &CadsConfig,
        model: CadsModel,
        iters_per_epoch: u64,
    ) -> Result<Self> {
        config.validate()?;
        let loss = CadsLoss::new(
            gpu,
            config.head.out_dim,
            config.student_temp,
            config.center_momentum,
        )?;
        let params = model.student.named_parameters();
        let schedules = CadsSchedules::new(config, iters_per_epoch)?;
        // The precision that runs here is the one recorded (checkpoints, metrics): amp on a
        // device without SHADER_F16 runs, and is recorded as, f32.
        let config = &CadsConfig {
            precision: gpu.supported_precision(config.precision),
            ..config.clone()
        };
        let first = schedules.at(0);
        let optimizer = AdamW::new(
            ParamGroup::split_decay_named(&params),
            AdamWConfig {
                lr: first.lr,
                betas: config.adam_betas,
                eps: config.adam_eps,
                weight_decay: first.weight_decay,
            },
        )?;
        Ok(CadsTrainer {
            config: config.clone(),
            model,
            loss,
            optimizer,
            schedules,
            params,
            rng: Rng::new(config.seed ^ 0x0D50_9A7B),
            iteration: 0,
            data_parallel: None,
            loss_scaler: match config.loss_scale {
                true => Some(LossScaler::new(gpu, LossScalerConfig::default())?),
                false => None,
            },
        })
    }

    /// One training step at `self.iteration` (then incremented).
    pub fn step(&mut self, input: &StepInput) -> Result<StepStats> {
        let b = input.check()?;
        let gpu = input.x1.gpu().clone();
        let s = self.schedules.at(self.iteration);
        self.optimizer.set_lr_all(s.lr)?;
        self.optimizer.set_weight_decay(0, s.weight_decay)?;

        // This replica's rows of the global batch (all of it on one device).
        let window = match &self.data_parallel {
            Some(dp) => dp.local_window(b)?,
            None => SampleWindow::whole(b),
        };

        // Forward and backward under the run's precision (f32, or amp: the linear layers on f16
        // operands with f32 accumulation); everything after (unscale, clip, AdamW on the f32
        // master weights, EMA, center) is f32 whatever the policy.
        let precision = self.config.precision;
        let (teacher, out, mut grads) = gpu.autocast(precision, || -> Result<_> {
            // Teacher on (x1, x2), 2B rows, never recorded.
            let x12 = gpu.no_grad(|| Tensor::concat(&[&input.x1, &input.x2], 0))?;
            let teacher_training = self.config.teacher_drop_path;
            let (model, rng) = (&self.model, &mut self.rng);
            let teacher = with_sample_window(window, || {
                gpu.no_grad(|| model.teacher.forward(&x12, teacher_training, rng))
            })?;

            // Student on (x1, x2) as one batch and xD as another: 3B rows per stage.
            let student = with_sample_window(window, || {
                model.student.forward(
                    &[(&x12, Modality::Volume), (&input.drr, Modality::Image)],
                    true,
                    rng,
                )
            })?;
            let out =
                self.loss
                    .forward(&student, &teacher.logits, &teacher.features, s.teacher_temp)?;
            debug_assert_eq!(student.logits[0].shape()[0], 3 * b);

            let total = match &mut self.loss_scaler {
                Some(scaler) => scaler.scale(&out.total)?,
                None => out.total.clone(),
            };
            let grads = match &self.data_parallel {
                // Mean over the replicas before clipping: the clip sees the global gradient.
                // The buckets are reduced while the backward pass runs (unless `overlap` is off).
                Some(dp) => dp.backward(&total, &self.params)?.0,
                None => total.backward()?,
            };
            Ok((teacher, out, grads))
        })?;
        let tensors: Vec<Tensor> = self.params.iter().map(|(_, t)| t.clone()).collect();
        // Unscaled before clipping; on an overflow the clip computes garbage that the skipped
        // step never reads.
        let overflow = match &mut self.loss_scaler {
            Some(scaler) => Some(scaler.unscale_and_check(&tensors, &mut grads)?),
            None => None,
        };
        // Per-tensor clipping: the norms now, the scaling inside AdamW's update (bit for bit
        // the clipped copies' step, without writing them).
        let clip = if self.config.clip_grad > 0.0 {
            clip_norms_per_tensor_on_gpu(&tensors, &grads, self.config.clip_grad)?
        } else {
            None
        };
        let grad_norms = clip.as_ref().map(|c| c.norms().clone());
        if s.last_layer_frozen {
            for (name, t) in &self.params {
                if CadsStudent::is_last_layer(name) {
                    grads.remove(t);
                }
            }
        }
        let check = overflow.as_ref();
        match &clip {
            Some(clip) => self.optimizer.step_clipped(&grads, check, clip)?,
            None => match check {
                Some(check) => self.optimizer.step_unless_overflow(&grads, check)?,
                None => self.optimizer.step(&grads)?,
            },
        }
        if let (Some(_), Some(scaler)) = (check, &mut self.loss_scaler) {
            scaler.update()?;
        }
        drop(grads);
        self.model
            .teacher
            .ema_from(&self.model.student, s.teacher_momentum)?;
        let values = match &self.data_parallel {
            None => {
                self.loss.update_center(&teacher.logits)?;
                out.values
            }
            Some(dp) => {
                // The global batch mean of the teacher logits (equal shards: the mean of the
                // replicas' means), and the loss values and monitors of the global batch.
                let global = global_step_stats(
                    dp,
                    &teacher.logits,
                    &out.teacher_probs,
                    &teacher.features,
                    &out.values,
                )?;
                self.loss.update_center_with_mean(&global.batch_center)?;
                global.values
            }
        };
        self.iteration += 1;
        Ok(StepStats {
            schedule: s,
            values,
            grad_norms,
            log_k: (self.config.head.out_dim as f64).ln(),
        })
    }
}
