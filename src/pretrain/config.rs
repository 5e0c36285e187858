//! Every number of the CADS recipe (../shared/CADS.md) as a typed field, with presets
//! [`CadsConfig::cads`] (the paper, read from the authors' code) and [`CadsConfig::tiny`] (a
//! reduced encoder and K for tests and the demo). Serialisable to JSON (serde), so a run stores
//! the exact config it used next to its checkpoints.
//!
//! Units: epochs and iterations are counts (an iteration = one optimizer step on one global
//! batch); temperatures are dimensionless softmax divisors; lr is per unit gradient of the
//! mean loss; sizes are voxels / pixels.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::Precision;
use crate::models::dino_head::DinoHeadConfig;
use crate::models::pvt::PvtConfig;

/// The whole pretraining recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CadsConfig {
    /// Student and teacher encoder (PVTv2-b1 with its 2D path; drop path 0.1 linear over the
    /// blocks). The teacher is built from the same config.
    pub encoder: PvtConfig,
    /// DINO head sizes (hidden 2048, bottleneck 256, K = 60000 outputs).
    pub head: DinoHeadConfig,

    /// Student temperature τs: P_s = softmax(s / τs).
    pub student_temp: f64,
    /// Teacher temperature τt at epoch 0 (linear ramp, numpy `linspace` per epoch).
    pub teacher_temp_start: f64,
    /// Teacher temperature τt from the end of the ramp on.
    pub teacher_temp_end: f64,
    /// Length of the τt ramp in epochs: τt(e) = linspace(start, end, this)[e], then `end`.
    pub teacher_temp_warmup_epochs: u64,
    /// Center momentum: c ← m·c + (1 − m)·mean(teacher logits of x1, x2).
    pub center_momentum: f64,
    /// Teacher EMA momentum at iteration 0; cosine to 1 over all iterations.
    pub teacher_momentum_base: f64,
    /// Teacher encoder runs with drop path (the authors build it with 0.1 and never call
    /// `eval()`, so their teacher forward is stochastic). `false`: deterministic teacher.
    pub teacher_drop_path: bool,

    /// Peak learning rate at `lr_reference_batch`; the run uses base_lr × batch / reference.
    pub base_lr: f64,
    /// The global batch `base_lr` is quoted at (192 = 4 GPUs × 48).
    pub lr_reference_batch: usize,
    /// Final learning rate of the cosine.
    pub min_lr: f64,
    /// Linear warm-up of the learning rate from 0, in epochs.
    pub warmup_epochs: u64,
    /// Weight decay at iteration 0 (cosine to `weight_decay_end`), on tensors of rank ≥ 2 only
    /// (biases and LayerNorm weights are not decayed).
    pub weight_decay_start: f64,
    pub weight_decay_end: f64,
    /// Per-tensor gradient clipping: g ← g·min(1, clip / (‖g‖ + 1e-6)). 0 disables.
    pub clip_grad: f64,
    /// The heads' `last_layer` gets no update (no gradient, no weight decay) while
    /// epoch < this.
    pub freeze_last_layer_epochs: u64,
    /// AdamW (β₁, β₂) and ε (torch defaults).
    pub adam_betas: (f64, f64),
    pub adam_eps: f64,

    /// Training length in epochs.
    pub epochs: u64,
    /// Global batch (samples per step; each sample gives x1, x2 and xD).
    pub batch_size: usize,
    /// CT view fed to the encoder after uniform sampling, (D, H, W) voxels.
    pub ct_view: [usize; 3],
    /// DRR view side in pixels (square).
    pub drr_size: usize,
    /// Seed of the weights (student init; the teacher copies it) and of drop path.
    pub seed: u64,

    /// Read the loss and monitors back every this many steps (1: every step). A read is
    /// asynchronous (the values of step k are collected while step k + 1 runs); the steps between
    /// reads are logged with the last read values, marked `stale`. Execution only: the
    /// trained weights do not depend on it, and a run may resume with another value.
    #[serde(default = "CadsConfig::read_every_of_old_runs")]
    pub read_every: u64,
    /// Activation checkpointing of the student's encoder blocks (`PvtEncoder::checkpoint_blocks`):
    /// less memory, one more forward of every block per step, the same gradients. Execution
    /// only, like `read_every`.
    #[serde(default)]
    pub checkpoint_blocks: bool,
    /// Dynamic loss scaling (`optim::LossScaler` with torch GradScaler's defaults: 2^16, ×2
    /// every 2000 clean steps, ×0.5 and the step skipped on an inf / NaN gradient). For
    /// low-precision gradients; off in f32, where scaling by a power of two changes no weight
    /// unless a gradient overflows. Part of the recipe (a skipped step is a different run).
    #[serde(default)]
    pub loss_scale: bool,
    /// Arithmetic of the step's forward and backward (`Gpu::autocast`): `f32`, or `amp` (the
    /// linear layers multiply f16 operands with f32 accumulation where the device has
    /// `SHADER_F16`; master weights, AdamW, the EMA and the center stay f32). A trainer records
    /// the precision that runs on its device (`Gpu::supported_precision`). May change on resume
    /// (src/pretrain/resume.rs); absent (f32) in configs saved before it.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for CadsConfig {
    fn default() -> Self {
        CadsConfig::cads()
    }
}

impl CadsConfig {
    /// The paper's recipe (../shared/CADS.md, every number from the authors' code).
    pub fn cads() -> CadsConfig {
        CadsConfig {
            encoder: PvtConfig::default(),
            head: DinoHeadConfig::default(),
            student_temp: 0.1,
            teacher_temp_start: 0.04,
            teacher_temp_end: 0.07,
            teacher_temp_warmup_epochs: 50,
            center_momentum: 0.9,
            teacher_momentum_base: 0.996,
            teacher_drop_path: true,
            base_lr: 5.625e-4,
            lr_reference_batch: 192,
            min_lr: 2e-6,
            warmup_epochs: 10,
            weight_decay_start: 0.04,
            weight_decay_end: 0.4,
            clip_grad: 0.3,
            freeze_last_layer_epochs: 3,
            adam_betas: (0.9, 0.999),
            adam_eps: 1e-8,
            epochs: 150,
            batch_size: 192,
            ct_view: [16, 48, 48],
            drr_size: 96,
            seed: 0,
            // A step of the paper's recipe is long (batch 192); a read every 10 steps keeps the
            // curve dense while the host almost never waits on the device.
            read_every: 10,
            checkpoint_blocks: false,
            loss_scale: false,
            precision: Precision::F32,
        }
    }

    /// Configs saved before `read_every` existed read the loss every step.
    fn read_every_of_old_runs() -> u64 {
        1
    }

    /// A small recipe for tests and the demo: encoder dims 16/32/48/64 (one block per stage),
    /// head 128 → 128 → 64 → K = 256, batch 2, 10 epochs with a 1-epoch lr warm-up, τt ramp
    /// over 5 epochs and the last layer frozen for 1. The losses, schedules and step are the
    /// paper's; sizes and lengths shrink, and the peak lr 5e-4 is quoted at batch 2 (the
    /// paper's linear scaling would give 5.9e-6 at batch 2, too small to move in a demo).
    pub fn tiny() -> CadsConfig {
        CadsConfig {
            encoder: PvtConfig {
                in_channels: 1,
                stem_channels: 16,
                embed_dims: [16, 32, 48, 64],
                heads: [1, 2, 3, 4],
                mlp_ratios: [2, 2, 2, 2],
                depths: [1, 1, 1, 1],
                sr_ratios: [8, 4, 2, 1],
                drop_path_rate: 0.1,
                with_image_path: true,
                seed: 0,
            },
            head: DinoHeadConfig {
                hidden_dim: 128,
                bottleneck_dim: 64,
                out_dim: 256,
            },
            teacher_temp_warmup_epochs: 5,
            warmup_epochs: 1,
            freeze_last_layer_epochs: 1,
            base_lr: 5e-4,
            lr_reference_batch: 2,
            epochs: 10,
            batch_size: 2,
            // Every step: the tests and the demo print each loss.
            read_every: 1,
            ..CadsConfig::cads()
        }
    }

    /// A preset by name: `cads` or `tiny`.
    pub fn preset(name: &str) -> Result<CadsConfig> {
        match name {
            "cads" => Ok(CadsConfig::cads()),
            "tiny" => Ok(CadsConfig::tiny()),
            other => Err(Error::invalid(
                "CadsConfig::preset",
                "'cads' or 'tiny'",
                other,
            )),
        }
    }

    /// The peak learning rate of this batch (linear scaling rule).
    pub fn peak_lr(&self) -> f64 {
        self.base_lr * self.batch_size as f64 / self.lr_reference_batch as f64
    }

    /// Check every field; errors name the field and the value.
    pub fn validate(&self) -> Result<()> {
        let op = "CadsConfig";
        self.encoder.validate()?;
        self.head.validate()?;
        let positive = [
            ("student_temp", self.student_temp),
            ("teacher_temp_start", self.teacher_temp_start),
            ("teacher_temp_end", self.teacher_temp_end),
            ("base_lr", self.base_lr),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(op, format!("{name} finite and > 0"), v));
            }
        }
        let non_negative = [
            ("min_lr", self.min_lr),
            ("weight_decay_start", self.weight_decay_start),
            ("weight_decay_end", self.weight_decay_end),
            ("clip_grad", self.clip_grad),
            ("adam_eps", self.adam_eps),
        ];
        for (name, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(op, format!("{name} finite and >= 0"), v));
            }
        }
        let unit = [
            ("center_momentum", self.center_momentum),
            ("teacher_momentum_base", self.teacher_momentum_base),
            ("adam_betas.0", self.adam_betas.0),
            ("adam_betas.1", self.adam_betas.1),
        ];
        for (name, v) in unit {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(Error::invalid(op, format!("{name} in [0, 1]"), v));
            }
        }
        if self.epochs == 0
            || self.batch_size == 0
            || self.lr_reference_batch == 0
            || self.read_every == 0
        {
            return Err(Error::invalid(
                op,
                "epochs, batch_size, lr_reference_batch and read_every >= 1",
                format!(
                    "epochs {}, batch {}, reference batch {}, read_every {}",
                    self.epochs, self.batch_size, self.lr_reference_batch, self.read_every
                ),
            ));
        }
        if self.warmup_epochs > self.epochs {
            return Err(Error::invalid(
                op,
                format!("warmup_epochs <= epochs ({})", self.epochs),
                self.warmup_epochs,
            ));
        }
        if !self.encoder.with_image_path {
            return Err(Error::invalid(
                op,
                "an encoder with the image path (the DRR view)",
                "with_image_path = false",
            ));
        }
        Ok(())
    }

    /// The config as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::invalid("CadsConfig::to_json", "a serialisable config", e))
    }

    /// A config from JSON (every field required but `read_every`, `checkpoint_blocks`,
    /// `loss_scale` and `precision`, absent from configs saved before them), validated.
    pub fn from_json(text: &str) -> Result<CadsConfig> {
        let config: CadsConfig = serde_json::from_str(text)
            .map_err(|e| Error::invalid("CadsConfig::from_json", "a CadsConfig JSON object", e))?;
        config.validate()?;
        Ok(config)
    }
}
