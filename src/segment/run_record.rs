//! What a PVT-UNet training run is told and what it records (`segment::train`): where it writes
//! and how it starts ([`RunOptions`]), the `metrics.jsonl` line of each epoch ([`EpochMetrics`]),
//! progress reports, the final report, and the run description stored in checkpoints and
//! `RUN/run.json` ([`RunInfo`]).

use std::path::PathBuf;

use super::augment::AugmentConfig;
use super::config::SegTrainConfig;
use super::plan::Plan;
use super::train_data::CtNormalization;
use crate::dist::DataParallel;
use crate::gpu::Precision;
use crate::models::{PvtUnet, PvtUnetConfig};

/// Where a run writes and how it starts.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The run folder (metrics, curves, checkpoints); None writes nothing (tests).
    pub out: Option<PathBuf>,
    /// Continue from `out/checkpoint_latest.safetensors`.
    pub resume: bool,
    /// Initialise the encoder from a teacher file (`PvtUnet::load_encoder`).
    pub init_from: Option<String>,
    /// Patch augmentation (default: nnU-Net's).
    pub augment: AugmentConfig,
    /// Stop after this many epochs of this invocation (the schedule still spans `epochs`; a
    /// later `resume` continues), e.g. to fit a time slot.
    pub stop_after: Option<usize>,
    /// This process's replica group (None: one device); `batch` is then the global batch.
    pub data_parallel: Option<DataParallel>,
}

/// One epoch's numbers (a line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    /// Validation Dice per foreground class 1..K (NaN → null when a class is absent from both
    /// the prediction and the reference of every case: JSON has no NaN).
    pub val_dice: Vec<Option<f64>>,
    pub mean_val_dice: f64,
    pub lr: f64,
    pub encoder_frozen: bool,
    pub seconds: f64,
    /// The precision the epoch trained (and validated) in: `f32` or `amp` (f32 in lines written
    /// before the field).
    #[serde(default)]
    pub precision: Precision,
    /// With loss scaling: the scale after the epoch's last step (it halves at each skipped step,
    /// so a run that keeps skipping shows here) and the steps skipped for an inf / NaN gradient
    /// since this process started training (a resumed run counts from its resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
}

/// What a step or epoch reports to the caller (progress display).
#[derive(Clone, Debug)]
pub enum Progress<'a> {
    Step {
        epoch: usize,
        iteration: usize,
        iterations: usize,
        loss: f32,
        steps_per_second: f64,
    },
    Epoch(&'a EpochMetrics),
}

/// The trained network and the run's history.
pub struct TrainReport {
    pub net: PvtUnet,
    pub history: Vec<EpochMetrics>,
    pub best_mean_dice: f64,
}

/// The run description stored in checkpoints and `RUN/run.json`: what `predict` needs to build
/// and feed the network.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub train: SegTrainConfig,
    pub classes: usize,
    pub class_names: Vec<String>,
    pub normalization: Option<CtNormalization>,
    /// The plan the training cases were preprocessed with (None: trained on the cases' own
    /// grids, as runs before plans did; their checkpoints lack the field).
    #[serde(default)]
    pub plan: Option<Plan>,
}

impl RunInfo {
    /// The network this run trains.
    pub fn model_config(&self) -> PvtUnetConfig {
        self.train
            .model
            .model_config(self.classes, self.train.drop_path_rate, self.train.seed)
    }
}
