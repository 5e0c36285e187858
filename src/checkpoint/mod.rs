//! Checkpoints that resume a run exactly: the models (several named modules, e.g. `student` and
//! `teacher`), the optimizers' state by parameter name, the loss scalers' state (scale and
//! growth tracker, `optim::LossScaler`), the schedule position (epoch,
//! iteration), the random generators' states, the run configuration (JSON text) and the caller's
//! extra tensors (e.g. the DINO center), in one versioned safetensors file
//! (format: src/checkpoint/format.rs).
//!
//! Guarantees:
//! - **Atomic writes.** The file is written to `path.tmp` in the same directory, `sync_all`ed,
//!   renamed over `path`, and the directory synced (`nn::state_file::write_atomically_with`):
//!   a crash at any point leaves the previous checkpoint readable under `path`.
//! - **Exact resume.** Tensors are stored as f32 bit patterns, hyper-parameters and generator
//!   states as exact decimal text; a run restored into modules and optimizers built anew takes the
//!   same next steps, bit for bit on the same adapter (tests/checkpoint.rs).
//! - **All or nothing.** [`LoadedCheckpoint::read`] rejects a file that is not a cads checkpoint,
//!   comes from a newer format version, is truncated or fails its CRC-32; [`LoadedCheckpoint::
//!   restore`] checks every module (names, shapes: the strict `nn` load) and every optimizer
//!   (kind, hyper-parameters, groups, names, shapes) and copies every tensor before it writes the
//!   first one, so a checkpoint of another model changes nothing.
//!
//! ```no_run
//! use cads::checkpoint::{Checkpoint, LoadedCheckpoint};
//! # fn demo(student: &dyn cads::nn::Module, teacher: &dyn cads::nn::Module,
//! #         opt: &mut dyn cads::optim::Optimizer, rng: &mut cads::util::Rng) -> cads::Result<()> {
//! Checkpoint::new()
//!     .model("student", student)
//!     .model("teacher", teacher)
//!     .optimizer("adamw", opt)
//!     .position(3, 1200)
//!     .rng("data", rng)
//!     .config(r#"{"epochs": 150}"#)
//!     .save("run/checkpoint.safetensors")?;
//! // Later, in a fresh process, with modules and optimizer built from the same config:
//! let ck = LoadedCheckpoint::read("run/checkpoint.safetensors")?;
//! ck.restore(&[("student", student), ("teacher", teacher)], &mut [("adamw", opt)])?;
//! *rng = ck.rng("data")?;
//! let start = ck.position();
//! # Ok(()) }
//! ```

mod format;
mod load;

pub use format::{FORMAT, VERSION};
pub use load::LoadedCheckpoint;

use std::collections::{HashMap, HashSet};

use format::{check_name, join, KEY_CHECKSUM, KEY_FORMAT, KEY_VERSION};

use crate::error::{Error, Result};
use crate::nn::state_file::{self, entries_to_safetensors_bytes};
use crate::nn::{Layout, Module, StateEntry};
use crate::optim::{LossScaler, LossScalerState, Optimizer, OptimizerState};
use crate::tensor::Tensor;
use crate::util::Rng;

/// Where in the schedule a run stands: the next epoch and iteration to run (or the last ones
/// done; the caller decides and keeps to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub epoch: u64,
    pub iteration: u64,
}

/// What to save, borrowed from the running training loop; [`Checkpoint::save`] writes it.
#[derive(Default)]
pub struct Checkpoint<'a> {
    models: Vec<(String, &'a dyn Module)>,
    optimizers: Vec<(String, &'a dyn Optimizer)>,
    scalers: Vec<(String, &'a LossScaler)>,
    position: Position,
    rngs: Vec<(String, u64)>,
    config: Option<String>,
    extras: Vec<(String, Tensor)>,
}

impl<'a> Checkpoint<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A module's named state (parameters and buffers) under `name` (no dots).
    pub fn model(mut self, name: &str, module: &'a dyn Module) -> Self {
        self.models.push((name.to_string(), module));
        self
    }

    /// An optimizer's state by parameter name, under `name` (no dots).
    pub fn optimizer(mut self, name: &str, optimizer: &'a dyn Optimizer) -> Self {
        self.optimizers.push((name.to_string(), optimizer));
        self
    }

    /// A loss scaler's state (scale, growth tracker, factors) under `name` (no dots); read back
    /// with [`LoadedCheckpoint::loss_scaler`] and `LossScaler::load_state`.
    pub fn loss_scaler(mut self, name: &str, scaler: &'a LossScaler) -> Self {
        self.scalers.push((name.to_string(), scaler));
        self
    }

    /// The schedule position.
    pub fn position(mut self, epoch: u64, iteration: u64) -> Self {
        self.position = Position { epoch, iteration };
        self
    }

    /// A random generator's current state.
    pub fn rng(mut self, name: &str, rng: &Rng) -> Self {
        self.rngs.push((name.to_string(), rng.state()));
        self
    }

    /// The run configuration as JSON text (checked to parse when saving).
    pub fn config(mut self, json: &str) -> Self {
        self.config = Some(json.to_string());
        self
    }

    /// An extra f32 tensor of the caller's (e.g. the DINO center), saved in its own shape.
    pub fn extra(mut self, name: &str, tensor: &Tensor) -> Self {
        self.extras.push((name.to_string(), tensor.clone()));
        self
    }

    /// The whole checkpoint as the bytes of one safetensors file (reads every tensor back).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        const OP: &str = "Checkpoint::save";
        let models: Vec<String> = self.models.iter().map(|(n, _)| n.clone()).collect();
        let optimizers: Vec<String> = self.optimizers.iter().map(|(n, _)| n.clone()).collect();
        let rngs: Vec<String> = self.rngs.iter().map(|(n, _)| n.clone()).collect();
        let extras: Vec<String> = self.extras.iter().map(|(n, _)| n.clone()).collect();
        let scalers: Vec<String> = self.scalers.iter().map(|(n, _)| n.clone()).collect();
        for (what, names, dots) in [
            ("model", &models, false),
            ("optimizer", &optimizers, false),
            ("loss scaler", &scalers, false),
            ("rng", &rngs, true),
            ("extra", &extras, true),
        ] {
            let mut seen = HashSet::new();
            for n in names {
                check_name(OP, what, n, dots)?;
                if !seen.insert(n) {
                    return Err(Error::invalid(
                        OP,
                        format!("each {what} name once"),
                        format!("'{n}' twice"),
                    ));
                }
            }
        }
        let mut meta = HashMap::new();
        let mut put = |k: String, v: String| meta.insert(k, v);
        put(KEY_FORMAT.into(), FORMAT.into());
        put(KEY_VERSION.into(), VERSION.to_string());
        put("epoch".into(), self.position.epoch.to_string());
        put("iteration".into(), self.position.iteration.to_string());
        put("models".into(), join(&models));
        put("optimizers".into(), join(&optimizers));
        put("rngs".into(), join(&rngs));
        put("extras".into(), join(&extras));
        for (name, state) in &self.rngs {
            put(format!("rng.{name}"), state.to_string());
        }
        // Written only when there are scalers, so files without one keep the keys of before.
        if !scalers.is_empty() {
            put("scalers".into(), join(&scalers));
        }
        for (name, scaler) in &self.scalers {
            for (key, value) in scaler_entries(&scaler.state()?) {
                put(format!("scaler.{name}.{key}"), value);
            }
        }
        if let Some(config) = &self.config {
            serde_json::from_str::<serde_json::Value>(config).map_err(|e| {
                Error::invalid(OP, "a run config in JSON", format!("text that fails: {e}"))
            })?;
            put("config".into(), config.clone());
        }

        // Everything is a state entry for the one nn serialiser: module state in its PyTorch
        // layout under `model.{name}.`, optimizer slots and extras as they are (Layout::Plain).
        let mut entries: Vec<StateEntry> = Vec::new();
        for (name, module) in &self.models {
            entries.extend(module.named_state().into_iter().map(|mut e| {
                e.name = format!("model.{name}.{}", e.name);
                e
            }));
        }
        for (name, optimizer) in &self.optimizers {
            let state = optimizer.export_state()?;
            write_optimizer(OP, name, &state, &mut meta, &mut entries)?;
        }
        for (name, t) in &self.extras {
            entries.push(StateEntry::buffer("extra.", name, t, Layout::Plain));
        }
        // The checksum covers the bytes as serialised, so serialise, hash, and serialise again
        // from the first buffer's views with the checksum added (the tensor bytes do not depend
        // on the metadata; peak memory stays two copies of the data, as for any in-memory save).
        let first = entries_to_safetensors_bytes(&entries, Some(meta.clone()))?;
        drop(entries);
        let file = safetensors::SafeTensors::deserialize(&first)
            .map_err(|e| Error::invalid(OP, "a serialisable checkpoint", e))?;
        let tensors = file.tensors();
        let sum = format::checksum(
            &meta,
            tensors
                .iter()
                .map(|(k, v)| (k.as_str(), v.shape(), v.data())),
        );
        meta.insert(KEY_CHECKSUM.into(), sum);
        safetensors::serialize(tensors, Some(meta))
            .map_err(|e| Error::invalid(OP, "a serialisable checkpoint", e))
    }

    /// Write the checkpoint to `path` atomically (temp file, sync, rename, directory sync).
    pub fn save(&self, path: &str) -> Result<()> {
        let bytes = self.to_bytes()?;
        state_file::write_atomically_with("Checkpoint::save", path, |w| w.write_all(&bytes))
    }
}

/// A scaler's state as metadata values (format.rs); numbers in shortest round-trip text.
fn scaler_entries(s: &LossScalerState) -> [(&'static str, String); 5] {
    [
        ("scale", (s.scale as f64).to_string()),
        ("growth_tracker", s.growth_tracker.to_string()),
        ("growth_factor", s.growth_factor.to_string()),
        ("backoff_factor", s.backoff_factor.to_string()),
        ("growth_interval", s.growth_interval.to_string()),
    ]
}

/// Flatten one optimizer's exported state into metadata and state entries (format.rs).
fn write_optimizer(
    op: &'static str,
    name: &str,
    state: &OptimizerState,
    meta: &mut HashMap<String, String>,
    entries: &mut Vec<StateEntry>,
) -> Result<()> {
    let p = format!("optim.{name}");
    meta.insert(format!("{p}.kind"), state.kind.clone());
    for (k, v) in &state.config {
        meta.insert(format!("{p}.config.{k}"), v.to_string());
    }
    meta.insert(format!("{p}.groups"), state.groups.len().to_string());
    for (g, group) in state.groups.iter().enumerate() {
        for n in &group.names {
            check_name(op, "parameter", n, true)?;
        }
        meta.insert(format!("{p}.group.{g}.lr"), group.lr.to_string());
        meta.insert(
            format!("{p}.group.{g}.weight_decay"),
            group.weight_decay.to_string(),
        );
        meta.insert(format!("{p}.group.{g}.params"), join(&group.names));
    }
    let slots: Vec<String> = state
        .params
        .first()
        .map(|ps| ps.slots.iter().map(|(s, _)| s.clone()).collect())
        .unwrap_or_default();
    meta.insert(format!("{p}.slots"), join(&slots));
    let stateful: Vec<String> = state.params.iter().map(|ps| ps.name.clone()).collect();
    meta.insert(format!("{p}.stateful"), join(&stateful));
    for ps in &state.params {
        let names: Vec<&String> = ps.slots.iter().map(|(s, _)| s).collect();
        if names
            .iter()
            .map(|s| s.as_str())
            .ne(slots.iter().map(String::as_str))
        {
            return Err(Error::invalid(
                op,
                format!("slots {slots:?} for every parameter of optimizer '{name}'"),
                format!("{names:?} for '{}'", ps.name),
            ));
        }
        if let Some(step) = ps.step {
            meta.insert(format!("{p}.step.{}", ps.name), step.to_string());
        }
        for (slot, t) in &ps.slots {
            let key = format!("{}.{slot}", ps.name);
            entries.push(StateEntry::buffer(
                &format!("{p}.state."),
                &key,
                t,
                Layout::Plain,
            ));
        }
    }
    Ok(())
}
