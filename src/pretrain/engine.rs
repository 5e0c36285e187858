//! The CADS trainer ([`CadsTrainer`]) as the run's [`PretrainEngine`]: upload a host batch, one
//! step, one read of the loss and monitors; checkpoints of student, teacher, AdamW, the drop-path
//! generator and the DINO center; the teacher backbone under the authors' `backbone.` keys.

use super::batch::CadsBatch;
use super::config::CadsConfig;
use super::run::{PretrainEngine, StepReport};
use super::step::{CadsTrainer, StepInput};
use crate::checkpoint::{Checkpoint, LoadedCheckpoint};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Module;
use std::path::Path;

/// The checkpoint names of the engine's parts (fixed: a checkpoint is read by name).
pub const STUDENT: &str = "student";
pub const TEACHER: &str = "teacher";
pub const OPTIMIZER: &str = "adamw";
pub const TRAINER_RNG: &str = "trainer";
pub const CENTER: &str = "center";

pub struct CadsEngine {
    pub gpu: Gpu,
    pub trainer: CadsTrainer,
    /// Read the loss back every this many steps (1: every step). Reading synchronises the host
    /// with the GPU; the steps between are queued without waiting.
    pub read_every: u64,
    last: StepReport,
}

impl CadsEngine {
    pub fn new(gpu: &Gpu, config: &CadsConfig, iters_per_epoch: u64) -> Result<CadsEngine> {
        Ok(CadsEngine {
            gpu: gpu.clone(),
            trainer: CadsTrainer::new(gpu, config, iters_per_epoch)?,
            read_every: 1,
            last: StepReport::default(),
        })
    }
}

impl PretrainEngine for CadsEngine {
    fn step(&mut self, batch: &CadsBatch) -> Result<StepReport> {
        let cfg = &self.trainer.config;
        let input = StepInput::upload(&self.gpu, batch, cfg.ct_view, cfg.drr_size)?;
        let stats = self.trainer.step(&input)?;
        let s = stats.schedule;
        if !self
            .trainer
            .iteration
            .is_multiple_of(self.read_every.max(1))
            && self.last.loss.is_finite()
        {
            // Between reads the last read values stand (marked stale in the metrics).
            let mut r = self.last.clone();
            r.lr = s.lr;
            r.extra.insert("stale".into(), true.into());
            return Ok(r);
        }
        let v = stats.read()?;
        let mut extra = serde_json::Map::new();
        extra.insert(
            "stage_losses".into(),
            v.stage_losses.iter().map(|&x| x as f64).collect(),
        );
        extra.insert("entropy".into(), (v.teacher_entropy as f64).into());
        extra.insert("kl_uniform".into(), (v.teacher_kl_uniform as f64).into());
        extra.insert("feature_std".into(), (v.feature_std as f64).into());
        extra.insert("wd".into(), s.weight_decay.into());
        extra.insert("teacher_momentum".into(), s.teacher_momentum.into());
        extra.insert("teacher_temp".into(), s.teacher_temp.into());
        self.last = StepReport {
            loss: v.loss,
            lr: s.lr,
            extra,
            collapsed: v.collapsed,
        };
        Ok(self.last.clone())
    }

    fn iteration(&self) -> u64 {
        self.trainer.iteration
    }

    fn checkpoint(&self) -> Result<Checkpoint<'_>> {
        let t = &self.trainer;
        Ok(Checkpoint::new()
            .model(STUDENT, &t.model.student)
            .model(TEACHER, &t.model.teacher)
            .optimizer(OPTIMIZER, &t.optimizer)
            .rng(TRAINER_RNG, &t.rng)
            .extra(CENTER, &t.loss.center))
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
        let t = &mut self.trainer;
        ck.restore(
            &[(STUDENT, &t.model.student), (TEACHER, &t.model.teacher)],
            &mut [(OPTIMIZER, &mut t.optimizer)],
        )?;
        t.loss.center = center;
        t.rng = rng;
        t.iteration = ck.position().iteration;
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
