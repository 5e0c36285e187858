//! Typed settings of a PVT-UNet training run (`cads segment train`), with nnU-Net's defaults.
//!
//! One epoch is `iterations_per_epoch` optimizer steps on freshly drawn, augmented patches
//! (nnU-Net: 250), followed by a validation pass over the held-out cases. The learning rate
//! follows nnU-Net's poly decay over all `epochs · iterations_per_epoch` steps,
//! `lr_t = lr₀ · (1 − t/T)^0.9`; the encoder's group runs at `encoder_lr_factor · lr_t`.

use crate::error::{Error, Result};
use crate::gpu::Precision;
use crate::models::pvt::PvtConfig;
use crate::models::PvtUnetConfig;
use crate::pretrain::CadsConfig;

/// Which optimizer updates the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD, Nesterov momentum 0.99, weight decay 3e-5 (nnU-Net's default), lr₀ 1e-2.
    Sgd,
    /// AdamW (β 0.9/0.999, weight decay 1e-2 on weights, none on biases), lr₀ 1e-3.
    AdamW,
}

impl OptimizerKind {
    /// nnU-Net's initial learning rate for SGD; a usual AdamW one for fine-tuning transformers.
    pub fn default_lr(self) -> f64 {
        match self {
            OptimizerKind::Sgd => 1e-2,
            OptimizerKind::AdamW => 1e-3,
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<OptimizerKind> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adamw" => Ok(OptimizerKind::AdamW),
            other => Err(Error::invalid("OptimizerKind", "sgd or adamw", other)),
        }
    }
}

/// Which PVT-UNet to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelPreset {
    /// PVTv2-b1 encoder as CADS pretrains it (≈ 24 M encoder parameters), 32 final channels.
    B1,
    /// [`PvtUnetConfig::tiny`]: for tests and CPU (lavapipe) runs.
    Tiny,
    /// The encoder of `cads pretrain --preset tiny` ([`CadsConfig::tiny`]: dims 16/32/48/64, one
    /// block per stage) under the tiny decoder (8 final channels): the network a tiny CADS
    /// teacher fine-tunes into on a CPU adapter (the `tiny` encoder has other widths, so a tiny
    /// teacher does not load into it).
    #[serde(rename = "cads-tiny")]
    CadsTiny,
}

impl ModelPreset {
    /// The network for `classes` classes (background included) with this drop-path rate.
    pub fn model_config(self, classes: usize, drop_path_rate: f32, seed: u64) -> PvtUnetConfig {
        let mut cfg = match self {
            ModelPreset::B1 => PvtUnetConfig {
                classes,
                ..PvtUnetConfig::default()
            },
            ModelPreset::Tiny => PvtUnetConfig::tiny(classes),
            ModelPreset::CadsTiny => PvtUnetConfig {
                encoder: PvtConfig {
                    with_image_path: false,
                    ..CadsConfig::tiny().encoder
                },
                ..PvtUnetConfig::tiny(classes)
            },
        };
        cfg.encoder.drop_path_rate = drop_path_rate;
        cfg.encoder.seed = seed;
        cfg.seed = seed.wrapping_add(1);
        cfg
    }
}

impl std::str::FromStr for ModelPreset {
    type Err = Error;
    fn from_str(s: &str) -> Result<ModelPreset> {
        match s.to_ascii_lowercase().as_str() {
            "b1" => Ok(ModelPreset::B1),
            "tiny" => Ok(ModelPreset::Tiny),
            "cads-tiny" => Ok(ModelPreset::CadsTiny),
            other => Err(Error::invalid(
                "ModelPreset",
                "b1, tiny or cads-tiny",
                other,
            )),
        }
    }
}

/// Settings of one training run. Every field is written to `RUN/config.json` and stored in the
/// checkpoints, so a resumed run continues with the same numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegTrainConfig {
    pub model: ModelPreset,
    /// Patch `[D, H, W]` voxels; each a multiple of the network's total stride (16, 32, 32).
    pub patch: [usize; 3],
    /// Patches per step.
    pub batch: usize,
    pub epochs: usize,
    /// Optimizer steps per epoch (nnU-Net: 250).
    pub iterations_per_epoch: usize,
    pub optimizer: OptimizerKind,
    /// Initial learning rate lr₀ (None: the optimizer's default, [`OptimizerKind::default_lr`]).
    pub lr: Option<f64>,
    /// The encoder's learning rate relative to the decoder's (1 = the same; a pretrained encoder
    /// usually fine-tunes better slower, e.g. 0.1).
    pub encoder_lr_factor: f64,
    /// Epochs during which the encoder is frozen: it gets no gradient and no update (its forward
    /// runs without recording, so its backward costs nothing either).
    pub freeze_encoder_epochs: usize,
    /// Deep supervision: losses on the decoder's coarser outputs too (nnU-Net's default).
    pub deep_supervision: bool,
    /// Soft Dice over the whole batch at once (nnU-Net's "batch Dice") instead of per sample.
    pub batch_dice: bool,
    /// Probability that a patch is centred on a voxel of a (uniformly chosen) foreground class.
    pub foreground_p: f64,
    /// Fraction of the cases held out for validation (at least one case when there are two).
    pub validation_fraction: f64,
    /// Patch-data worker threads.
    pub workers: usize,
    /// Drop-path rate of the encoder during training.
    pub drop_path_rate: f32,
    pub seed: u64,
    /// Dynamic loss scaling (`optim::LossScaler` with torch GradScaler's defaults; a step with
    /// an inf / NaN gradient is skipped and the scale halves). For low-precision gradients; off
    /// in f32. Absent (off) in runs saved before it.
    #[serde(default)]
    pub loss_scale: bool,
    /// Arithmetic of the training step's forward and backward and of validation
    /// (`Gpu::autocast`): `f32`, or `amp` (the linear layers multiply f16 operands with f32
    /// accumulation where the device has `SHADER_F16`; the weights and the optimizer stay f32).
    /// `segment::train` records the precision that runs on its device
    /// (`Gpu::supported_precision`). May change on resume; absent (f32) in runs saved before it.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for SegTrainConfig {
    fn default() -> Self {
        SegTrainConfig {
            model: ModelPreset::B1,
            patch: [64, 160, 160],
            batch: 2,
            epochs: 100,
            iterations_per_epoch: 250,
            optimizer: OptimizerKind::Sgd,
            lr: None,
            encoder_lr_factor: 1.0,
            freeze_encoder_epochs: 0,
            deep_supervision: true,
            batch_dice: false,
            foreground_p: 1.0 / 3.0,
            validation_fraction: 0.2,
            workers: 2,
            drop_path_rate: 0.1,
            seed: 0,
            loss_scale: false,
            precision: Precision::F32,
        }
    }
}

impl SegTrainConfig {
    /// The initial learning rate (the configured one or the optimizer's default).
    pub fn base_lr(&self) -> f64 {
        self.lr.unwrap_or_else(|| self.optimizer.default_lr())
    }

    /// Total optimizer steps of the run (the poly schedule's horizon).
    pub fn total_steps(&self) -> u64 {
        (self.epochs * self.iterations_per_epoch) as u64
    }

    /// Reject settings no run can use, naming the field.
    pub fn validate(&self) -> Result<()> {
        let op = "SegTrainConfig";
        let total = [16, 32, 32];
        if self
            .patch
            .iter()
            .zip(total)
            .any(|(&p, t)| p == 0 || p % t != 0)
        {
            let nearest: Vec<usize> = self
                .patch
                .iter()
                .zip(total)
                .map(|(&p, t)| ((p + t / 2) / t).max(1) * t)
                .collect();
            return Err(Error::invalid(
                op,
                format!(
                    "patch D, H, W multiples of the total stride {total:?} (nearest: {nearest:?})"
                ),
                format!("{:?}", self.patch),
            ));
        }
        let positive = [
            ("batch", self.batch),
            ("epochs", self.epochs),
            ("iterations_per_epoch", self.iterations_per_epoch),
            ("workers", self.workers),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::invalid(op, format!("{name} >= 1"), v));
            }
        }
        let lr = self.base_lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::invalid(op, "a finite lr > 0", lr));
        }
        if !(self.encoder_lr_factor.is_finite() && self.encoder_lr_factor >= 0.0) {
            return Err(Error::invalid(
                op,
                "encoder_lr_factor finite and >= 0",
                self.encoder_lr_factor,
            ));
        }
        for (name, p) in [
            ("foreground_p", self.foreground_p),
            ("validation_fraction", self.validation_fraction),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::invalid(op, format!("{name} in [0, 1]"), p));
            }
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(Error::invalid(
                op,
                "drop_path_rate in [0, 1)",
                self.drop_path_rate,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_patch_names_nearest() {
        SegTrainConfig::default().validate().unwrap();
        let cfg = SegTrainConfig {
            patch: [60, 150, 170],
            ..SegTrainConfig::default()
        };
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("[64, 160, 160]"), "{msg}");
    }

    #[test]
    fn optimizer_parses() {
        assert_eq!("SGD".parse::<OptimizerKind>().unwrap(), OptimizerKind::Sgd);
        assert_eq!(
            "adamw".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::AdamW
        );
        assert!("adam".parse::<OptimizerKind>().is_err());
    }

    #[test]
    fn cads_tiny_is_the_tiny_pretraining_encoder_under_the_tiny_decoder() {
        let preset: ModelPreset = "cads-tiny".parse().unwrap();
        assert_eq!(preset, ModelPreset::CadsTiny);
        let cfg = preset.model_config(8, 0.1, 3);
        let pre = CadsConfig::tiny().encoder;
        // Every shape-bearing field equals the pretraining encoder's, so a tiny teacher loads
        // strictly; the 2D path is not built.
        assert_eq!(
            (
                cfg.encoder.stem_channels,
                cfg.encoder.embed_dims,
                cfg.encoder.heads
            ),
            (pre.stem_channels, pre.embed_dims, pre.heads)
        );
        assert_eq!(
            (
                cfg.encoder.mlp_ratios,
                cfg.encoder.depths,
                cfg.encoder.sr_ratios
            ),
            (pre.mlp_ratios, pre.depths, pre.sr_ratios)
        );
        assert!(!cfg.encoder.with_image_path);
        assert_eq!((cfg.classes, cfg.final_channels), (8, 8));
        assert_ne!(
            ModelPreset::Tiny.model_config(8, 0.1, 3).encoder.embed_dims,
            pre.embed_dims
        );
        let json = serde_json::to_string(&preset).unwrap();
        assert_eq!(json, "\"cads-tiny\"");
        assert_eq!(serde_json::from_str::<ModelPreset>(&json).unwrap(), preset);
    }
}
