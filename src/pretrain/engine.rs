//! The CADS trainer ([`CadsTrainer`]) as the run's [`PretrainEngine`]: upload a host batch, one
//! step, an asynchronous read of the loss and monitors when asked; checkpoints of student, teacher, AdamW, the drop-path
//! generator, the DINO center and the loss scaler (`loss_scale`); the teacher backbone under the authors' `backbone.` keys.

use super::batch::CadsBatch;
use super::config::CadsConfig;
use super::resume::check_resume;
use super::run::{LossRead, PretrainEngine, StepReport};
use super::step::{CadsTrainer, StepInput, StepValues};
use crate::checkpoint::{Checkpoint, LoadedCheckpoint};
use crate::error::{Error, Result};
use crate::gpu::{Fence, Gpu};
use crate::nn::Module;
use crate::tensor::PendingValues;
use std::collections::VecDeque;
use std::path::Path;

/// The checkpoint names of the engine's parts (fixed: a checkpoint is read by name).
pub const STUDENT: &str = "student";
pub const TEACHER: &str = "teacher";
pub const OPTIMIZER: &str = "adamw";
pub const TRAINER_RNG: &str = "trainer";
pub const CENTER: &str = "center";
pub const LOSS_SCALER: &str = "loss_scaler";

pub struct CadsEngine {
    pub gpu: Gpu,
    pub trainer: CadsTrainer,
    /// Reads on their way to the host, oldest first: (iteration, loss and monitors).
    in_flight: VecDeque<(u64, PendingValues)>,
    /// The stream position after the previous step's work.
    previous_step: Option<Fence>,
}

impl CadsEngine {
    pub fn new(gpu: &Gpu, config: &CadsConfig, iters_per_epoch: u64) -> Result<CadsEngine> {
        Ok(CadsEngine {
            gpu: gpu.clone(),
            trainer: CadsTrainer::new(gpu, config, iters_per_epoch)?,
            in_flight: VecDeque::new(),
            previous_step: None,
        })
    }

    fn loss_read(&self, iteration: u64, values: &[f32]) -> Result<LossRead> {
        let v = StepValues::from_values(values, (self.trainer.config.head.out_dim as f64).ln())?;
        let mut extra = serde_json::Map::new();
        extra.insert(
            "stage_losses".into(),
            v.stage_losses.iter().map(|&x| x as f64).collect(),
        );
        extra.insert("entropy".into(), (v.teacher_entropy as f64).into());
        extra.insert("kl_uniform".into(), (v.teacher_kl_uniform as f64).into());
        extra.insert("feature_std".into(), (v.feature_std as f64).into());
        Ok(LossRead {
            iteration,
            loss: v.loss,
            extra,
            collapsed: v.collapsed,
        })
    }
}

impl PretrainEngine for CadsEngine {
    fn read_every(&self) -> u64 {
        self.trainer.config.read_every
    }

    /// Upload, record the step, queue the read, then wait for the end of the PREVIOUS step:
    /// the device always has this step queued while the host waits (so it never idles on the
    /// host), and the host never runs more than one step ahead (so uploads staged for the
    /// device stay bounded). The read of step k is collected after step k + 1 is recorded.
    fn step(&mut self, batch: &CadsBatch, read: bool) -> Result<StepReport> {
        let cfg = &self.trainer.config;
        let input = StepInput::upload(&self.gpu, batch, cfg.ct_view, cfg.drr_size)?;
        let iteration = self.trainer.iteration;
        let stats = self.trainer.step(&input)?;
        if read {
            self.in_flight
                .push_back((iteration, stats.values.to_vec_async()?));
        }
        let fence = self.gpu.fence()?;
        if let Some(previous) = self.previous_step.replace(fence) {
            previous.wait()?;
        }
        let mut reads = Vec::new();
        while let Some((_, pending)) = self.in_flight.front() {
            if !pending.ready()? {
                break;
            }
            let Some((it, pending)) = self.in_flight.pop_front() else {
                break;
            };
            reads.push(self.loss_read(it, &pending.wait()?)?);
        }
        let s = stats.schedule;
        let mut schedule = serde_json::Map::new();
        schedule.insert("wd".into(), s.weight_decay.into());
        schedule.insert("teacher_momentum".into(), s.teacher_momentum.into());
        schedule.insert("teacher_temp".into(), s.teacher_temp.into());
        // The precision that ran (f32 where amp was asked on a device without SHADER_F16).
        schedule.insert(
            "precision".into(),
            self.trainer.config.precision.name().into(),
        );
        // With loss scaling, the scale this step's loss was multiplied by (host state, no device
        // read): a run whose first steps overflow shows it halving from 2^16.
        if let Some(scaler) = &self.trainer.loss_scaler {
            schedule.insert("loss_scale".into(), scaler.last_used_scale().into());
        }
        Ok(StepReport {
            iteration,
            lr: s.lr,
            schedule,
            reads,
        })
    }

    fn finish_reads(&mut self) -> Result<Vec<LossRead>> {
        let mut reads = Vec::with_capacity(self.in_flight.len());
        while let Some((it, pending)) = self.in_flight.pop_front() {
            reads.push(self.loss_read(it, &pending.wait()?)?);
        }
        self.previous_step = None;
        Ok(reads)
    }

    fn iteration(&self) -> u64 {
        self.trainer.iteration
    }

    fn checkpoint(&self) -> Result<Checkpoint<'_>> {
        let t = &self.trainer;
        let ck = Checkpoint::new()
            .model(STUDENT, &t.model.student)
            .model(TEACHER, &t.model.teacher)
            .optimizer(OPTIMIZER, &t.optimizer)
            .rng(TRAINER_RNG, &t.rng)
            .extra(CENTER, &t.loss.center);
        Ok(match &t.loss_scaler {
            Some(scaler) => ck.loss_scaler(LOSS_SCALER, scaler),
            None => ck,
        })
    }

    fn restore(&mut self, ck: &LoadedCheckpoint) -> Result<()> {
        let center = ck.extra(&self.gpu, CENTER)?;
        if center.shape() != self.trainer.loss.center.shape() {
            return Err(Error::shape(
                "CadsEngine::restore (center)",
                self.trainer.loss.center.shape(),
                center.shape(),
            ));
        }
        let rng = ck.rng(TRAINER_RNG)?;
        // Read and checked before anything changes. The config check let `loss_scale` differ
        // only with a precision change: a scaler the checkpoint lacks then starts afresh, and a
        // saved one this run does not use is ignored.
        let scaler_state = match &self.trainer.loss_scaler {
            Some(_) if ck.loss_scaler_names().contains(&LOSS_SCALER) => {
                let state = ck.loss_scaler(LOSS_SCALER)?;
                state.validate()?;
                Some(state)
            }
            _ => None,
        };
        let t = &mut self.trainer;
        ck.restore(
            &[(STUDENT, &t.model.student), (TEACHER, &t.model.teacher)],
            &mut [(OPTIMIZER, &mut t.optimizer)],
        )?;
        t.loss.center = center;
        t.rng = rng;
        if let (Some(scaler), Some(state)) = (&mut t.loss_scaler, scaler_state) {
            scaler.load_state(&state)?;
        }
        t.iteration = ck.position().iteration;
        // Reads of steps before the restore belong to another state.
        self.in_flight.clear();
        self.previous_step = None;
        Ok(())
    }

    fn export_teacher_backbone(&self, path: &Path) -> Result<()> {
        export_backbone(&self.trainer.model.teacher, path)
    }

    fn config_json(&self) -> String {
        self.trainer
            .config
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    fn check_resume(
        &self,
        saved: &str,
        iteration: u64,
        extend_schedules: bool,
    ) -> Result<Option<String>> {
        let saved = CadsConfig::from_json(saved)?;
        check_resume(
            &saved,
            &self.trainer.config,
            self.trainer.schedules.iters_per_epoch,
            iteration,
            extend_schedules,
        )
    }
}

/// Write a module's `backbone.*` state (PyTorch names and layouts) to safetensors, atomically:
/// the teacher encoder as the authors' checkpoint names it, loadable strictly into a
/// `PvtEncoder` with `LoadOptions::strict().take_prefix("backbone.")`.
pub fn export_backbone(module: &dyn Module, path: &Path) -> Result<()> {
    let entries: Vec<_> = module
        .named_state()
        .into_iter()
        .filter(|e| e.name.starts_with("backbone."))
        .collect();
    if entries.is_empty() {
        return Err(Error::invalid(
            "export_backbone",
            "a module with backbone.* state",
            "none",
        ));
    }
    let bytes = crate::nn::state_file::entries_to_safetensors_bytes(&entries, None)?;
    crate::nn::state_file::write_atomically("export_backbone", &path.display().to_string(), &bytes)
}
