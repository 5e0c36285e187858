//! Checkpoints that resume a run exactly: the models (several named modules, e.g. `student` and
//! `teacher`), the optimizers' state by parameter name, the schedule position (epoch,
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

pub use format::{FORMAT, VERSION};

use std::collections::{BTreeMap, HashMap, HashSet};

use format::{check_name, join, Meta, KEY_CHECKSUM, KEY_FORMAT, KEY_VERSION};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::state_file::{self, entries_to_safetensors_bytes, load_entries_bytes, LoadOptions};
use crate::nn::{Layout, Module, StateEntry};
use crate::optim::{GroupState, Optimizer, OptimizerState, ParamState, PreparedImport};
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
        for (what, names, dots) in [
            ("model", &models, false),
            ("optimizer", &optimizers, false),
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
        if let Some(config) = &self.config {
            crate::data::json::parse(config).map_err(|e| {
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

/// One optimizer's metadata, parsed when the file is read (its tensors stay in the file).
#[derive(Clone, Debug)]
struct OptimizerMeta {
    kind: String,
    config: Vec<(String, f64)>,
    groups: Vec<GroupState>,
    slots: Vec<String>,
    /// `(parameter, step)` of every parameter with state.
    stateful: Vec<(String, Option<u64>)>,
}

/// A checkpoint file read into memory and checked (format, version, checksum, metadata).
pub struct LoadedCheckpoint {
    path: String,
    bytes: Vec<u8>,
    version: u32,
    position: Position,
    models: Vec<String>,
    optimizers: BTreeMap<String, OptimizerMeta>,
    rngs: BTreeMap<String, u64>,
    extras: Vec<String>,
    config: Option<String>,
}

impl std::fmt::Debug for LoadedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCheckpoint")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("position", &self.position)
            .field("models", &self.models)
            .field("optimizers", &self.optimizers.keys().collect::<Vec<_>>())
            .field("rngs", &self.rngs.keys().collect::<Vec<_>>())
            .field("extras", &self.extras)
            .finish()
    }
}

const READ: &str = "LoadedCheckpoint::read";

impl LoadedCheckpoint {
    /// Read and check `path`. Nothing is written anywhere.
    pub fn read(path: &str) -> Result<LoadedCheckpoint> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            op: READ,
            path: path.to_string(),
            source,
        })?;
        LoadedCheckpoint::from_bytes(bytes, path)
    }

    /// Check checkpoint bytes already in memory (`path` names them in errors).
    pub fn from_bytes(bytes: Vec<u8>, path: &str) -> Result<LoadedCheckpoint> {
        let bad = |problem: String| Error::BadFile {
            op: READ,
            path: path.to_string(),
            problem,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let map = header.metadata().clone().unwrap_or_default();
        let meta = Meta {
            map: &map,
            path,
            op: READ,
        };
        if map.get(KEY_FORMAT).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "not a cads checkpoint (metadata '{KEY_FORMAT}' is {:?}, expected {FORMAT:?})",
                map.get(KEY_FORMAT)
            )));
        }
        let version: u32 = meta.parse(KEY_VERSION)?;
        if version == 0 || version > VERSION {
            return Err(bad(format!(
                "checkpoint format version {version}; this build reads versions 1 to {VERSION}"
            )));
        }
        let tensors = file.tensors();
        for (key, view) in &tensors {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!(
                    "{key}: dtype {:?}, expected F32",
                    view.dtype()
                )));
            }
        }
        let sum = format::checksum(
            &map,
            tensors
                .iter()
                .map(|(k, v)| (k.as_str(), v.shape(), v.data())),
        );
        let stored = meta.get(KEY_CHECKSUM)?;
        if stored != sum {
            return Err(bad(format!(
                "checksum {stored} stored, {sum} computed: the file is corrupt"
            )));
        }

        let position = Position {
            epoch: meta.parse("epoch")?,
            iteration: meta.parse("iteration")?,
        };
        let mut rngs = BTreeMap::new();
        for name in meta.list("rngs")? {
            let state = meta.parse(&format!("rng.{name}"))?;
            rngs.insert(name, state);
        }
        let mut optimizers = BTreeMap::new();
        for name in meta.list("optimizers")? {
            let parsed = read_optimizer(&meta, &name)?;
            optimizers.insert(name, parsed);
        }
        let models = meta.list("models")?;
        let extras = meta.list("extras")?;
        let keys: HashSet<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
        for e in &extras {
            if !keys.contains(format!("extra.{e}").as_str()) {
                return Err(bad(format!("extra '{e}' is listed but has no tensor")));
            }
        }
        let config = map.get("config").cloned();
        drop(tensors);
        Ok(LoadedCheckpoint {
            path: path.to_string(),
            bytes,
            version,
            position,
            models,
            optimizers,
            rngs,
            extras,
            config,
        })
    }

    /// The format version the file was written with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The schedule position saved.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The run configuration (JSON text), if one was saved.
    pub fn config(&self) -> Option<&str> {
        self.config.as_deref()
    }

    /// The module names, in the order they were saved.
    pub fn model_names(&self) -> &[String] {
        &self.models
    }

    /// The optimizer names.
    pub fn optimizer_names(&self) -> Vec<&str> {
        self.optimizers.keys().map(String::as_str).collect()
    }

    /// The extra tensors' names.
    pub fn extra_names(&self) -> &[String] {
        &self.extras
    }

    /// A generator that continues the saved stream `name`.
    pub fn rng(&self, name: &str) -> Result<Rng> {
        self.rngs
            .get(name)
            .map(|&s| Rng::from_state(s))
            .ok_or_else(|| {
                Error::invalid(
                    "LoadedCheckpoint::rng",
                    format!("one of the saved generators {:?}", self.rngs.keys()),
                    format!("'{name}'"),
                )
            })
    }

    fn file(&self) -> Result<safetensors::SafeTensors<'_>> {
        // Checked in `from_bytes`; parsing the header again is cheap and keeps no borrow.
        safetensors::SafeTensors::deserialize(&self.bytes).map_err(|e| Error::BadFile {
            op: READ,
            path: self.path.clone(),
            problem: e.to_string(),
        })
    }

    /// Host copy of one stored tensor: (shape, values).
    fn host_tensor(&self, op: &'static str, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let file = self.file()?;
        let view = file.tensor(key).map_err(|e| Error::BadFile {
            op,
            path: self.path.clone(),
            problem: format!("{key}: {e}"),
        })?;
        // Every tensor was checked to be F32 when the file was read.
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((view.shape().to_vec(), data))
    }

    /// The extra tensor `name` on `gpu`, in its saved shape.
    pub fn extra(&self, gpu: &Gpu, name: &str) -> Result<Tensor> {
        const OP: &str = "LoadedCheckpoint::extra";
        if !self.extras.iter().any(|e| e == name) {
            return Err(Error::invalid(
                OP,
                format!("one of the saved extras {:?}", self.extras),
                format!("'{name}'"),
            ));
        }
        let (shape, data) = self.host_tensor(OP, &format!("extra.{name}"))?;
        Tensor::from_slice(gpu, &data, &shape)
    }

    /// The state of optimizer `name` with its tensors on `gpu` (for inspection, or to import
    /// into an optimizer by hand; [`LoadedCheckpoint::restore`] does this for you).
    pub fn optimizer_state(&self, gpu: &Gpu, name: &str) -> Result<OptimizerState> {
        const OP: &str = "LoadedCheckpoint::optimizer_state";
        let m = self.optimizers.get(name).ok_or_else(|| {
            Error::invalid(
                OP,
                format!("one of the saved optimizers {:?}", self.optimizer_names()),
                format!("'{name}'"),
            )
        })?;
        let mut params = Vec::with_capacity(m.stateful.len());
        for (param, step) in &m.stateful {
            let mut slots = Vec::with_capacity(m.slots.len());
            for slot in &m.slots {
                let (shape, data) =
                    self.host_tensor(OP, &format!("optim.{name}.state.{param}.{slot}"))?;
                slots.push((slot.clone(), Tensor::from_slice(gpu, &data, &shape)?));
            }
            params.push(ParamState {
                name: param.clone(),
                step: *step,
                slots,
            });
        }
        Ok(OptimizerState {
            kind: m.kind.clone(),
            config: m.config.clone(),
            groups: m.groups.clone(),
            params,
        })
    }

    /// Load every module and optimizer of the checkpoint, all or nothing.
    ///
    /// `models` and `optimizers` must name exactly the checkpoint's modules and optimizers (a
    /// resume that forgot the teacher fails instead of training from its init). Each module load
    /// is strict (`nn::state_file`: names, shapes); each optimizer import is checked
    /// (`Optimizer::prepare_import`). Only when all pass is anything written. To read one module
    /// out of a checkpoint (e.g. the teacher to initialise a segmentation encoder), use
    /// `nn::load_safetensors` with `LoadOptions::strict().take_prefix("model.teacher.")`.
    pub fn restore(
        &self,
        models: &[(&str, &dyn Module)],
        optimizers: &mut [(&str, &mut dyn Optimizer)],
    ) -> Result<()> {
        const OP: &str = "LoadedCheckpoint::restore";
        let given: Vec<String> = models.iter().map(|(n, _)| format!("model.{n}")).collect();
        let saved: Vec<String> = self.models.iter().map(|n| format!("model.{n}")).collect();
        let given_opt: Vec<String> = optimizers
            .iter()
            .map(|(n, _)| format!("optim.{n}"))
            .collect();
        let saved_opt: Vec<String> = self
            .optimizers
            .keys()
            .map(|n| format!("optim.{n}"))
            .collect();
        let missing: Vec<String> = given
            .iter()
            .chain(&given_opt)
            .filter(|n| !saved.contains(n) && !saved_opt.contains(n))
            .cloned()
            .collect();
        let unexpected: Vec<String> = saved
            .iter()
            .chain(&saved_opt)
            .filter(|n| !given.contains(n) && !given_opt.contains(n))
            .cloned()
            .collect();
        let duplicated = given.len() != given.iter().collect::<HashSet<_>>().len()
            || given_opt.len() != given_opt.iter().collect::<HashSet<_>>().len();
        if duplicated {
            return Err(Error::invalid(
                OP,
                "each module and optimizer once",
                format!("{given:?} {given_opt:?}"),
            ));
        }
        if !(missing.is_empty() && unexpected.is_empty()) {
            return Err(Error::NameMismatch {
                op: OP,
                missing,
                unexpected,
                shapes: Vec::new(),
            });
        }

        // Optimizers first: checked and copied, nothing changed yet.
        let mut imports: Vec<PreparedImport> = Vec::with_capacity(optimizers.len());
        for (name, optimizer) in optimizers.iter() {
            let params = optimizer.params();
            let state = match params.first() {
                Some(p) => self.optimizer_state(p.gpu(), name)?,
                None => self.optimizer_state_without_tensors(name)?,
            };
            imports.push(optimizer.prepare_import(&state)?);
        }
        // Then every module in one strict load (the nn loader checks every name, shape and
        // dtype of all of them before its first write); the optimizer and extra keys are the
        // checkpoint's other parts, skipped.
        let mut entries: Vec<StateEntry> = Vec::new();
        for (name, module) in models {
            entries.extend(module.named_state().into_iter().map(|mut e| {
                e.name = format!("model.{name}.{}", e.name);
                e
            }));
        }
        let options = LoadOptions::strict()
            .skip_prefix("optim.")
            .skip_prefix("extra.");
        load_entries_bytes(&entries, &self.bytes, &self.path, &options)?;
        // Only now the optimizers: their commit cannot fail on anything a file holds.
        for ((_, optimizer), import) in optimizers.iter_mut().zip(imports) {
            optimizer.commit_import(import)?;
        }
        Ok(())
    }

    /// An optimizer with no parameters has no tensors to upload (and no device to put them on).
    fn optimizer_state_without_tensors(&self, name: &str) -> Result<OptimizerState> {
        const OP: &str = "LoadedCheckpoint::restore";
        let m = self
            .optimizers
            .get(name)
            .ok_or_else(|| Error::invalid(OP, "a saved optimizer", format!("'{name}'")))?;
        if !m.stateful.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("an optimizer with the parameters of '{name}'"),
                "one without parameters",
            ));
        }
        Ok(OptimizerState {
            kind: m.kind.clone(),
            config: m.config.clone(),
            groups: m.groups.clone(),
            params: Vec::new(),
        })
    }
}

/// Parse the metadata of optimizer `name` (format.rs).
fn read_optimizer(meta: &Meta, name: &str) -> Result<OptimizerMeta> {
    let p = format!("optim.{name}");
    let kind = meta.get(&format!("{p}.kind"))?.to_string();
    let prefix = format!("{p}.config.");
    let mut config: Vec<(String, f64)> = Vec::new();
    let mut keys: Vec<&String> = meta.map.keys().filter(|k| k.starts_with(&prefix)).collect();
    keys.sort();
    for k in keys {
        config.push((k[prefix.len()..].to_string(), meta.parse(k)?));
    }
    let n: usize = meta.parse(&format!("{p}.groups"))?;
    let mut groups = Vec::with_capacity(n.min(1024));
    for g in 0..n {
        groups.push(GroupState {
            names: meta.list(&format!("{p}.group.{g}.params"))?,
            lr: meta.parse(&format!("{p}.group.{g}.lr"))?,
            weight_decay: meta.parse(&format!("{p}.group.{g}.weight_decay"))?,
        });
    }
    let slots = meta.list(&format!("{p}.slots"))?;
    let mut stateful = Vec::new();
    for param in meta.list(&format!("{p}.stateful"))? {
        let key = format!("{p}.step.{param}");
        let step = match meta.map.get(&key) {
            Some(_) => Some(meta.parse(&key)?),
            None => None,
        };
        stateful.push((param, step));
    }
    Ok(OptimizerMeta {
        kind,
        config,
        groups,
        slots,
        stateful,
    })
}
