//! Reading a checkpoint: [`LoadedCheckpoint::read`] checks the file (format, version, CRC-32,
//! metadata) without touching any module; [`LoadedCheckpoint::restore`] loads every module and
//! optimizer all or nothing. Format: src/checkpoint/format.rs.

use std::collections::{BTreeMap, HashSet};

use super::format::{self, Meta, FORMAT, KEY_CHECKSUM, KEY_FORMAT, KEY_VERSION, VERSION};
use super::Position;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::state_file::{load_entries_bytes, LoadOptions};
use crate::nn::{Module, StateEntry};
use crate::optim::{
    GroupState, LossScalerState, Optimizer, OptimizerState, ParamState, PreparedImport,
};
use crate::tensor::Tensor;
use crate::util::Rng;

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
    scalers: BTreeMap<String, LossScalerState>,
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
            .field("scalers", &self.scalers)
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
        let mut scalers = BTreeMap::new();
        if map.contains_key("scalers") {
            for name in meta.list("scalers")? {
                let parsed = read_scaler(&meta, &name)?;
                scalers.insert(name, parsed);
            }
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
            scalers,
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

    /// The loss scalers' names (none in files written before loss scaling).
    pub fn loss_scaler_names(&self) -> Vec<&str> {
        self.scalers.keys().map(String::as_str).collect()
    }

    /// The state of loss scaler `name`, for `optim::LossScaler::load_state`.
    pub fn loss_scaler(&self, name: &str) -> Result<LossScalerState> {
        self.scalers.get(name).copied().ok_or_else(|| {
            Error::invalid(
                "LoadedCheckpoint::loss_scaler",
                format!(
                    "one of the saved loss scalers {:?}",
                    self.loss_scaler_names()
                ),
                format!("'{name}'"),
            )
        })
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

/// Parse the state of loss scaler `name` (format.rs); the values are checked when loaded.
fn read_scaler(meta: &Meta, name: &str) -> Result<LossScalerState> {
    let p = format!("scaler.{name}");
    let key = format!("{p}.scale");
    let scale: f64 = meta.parse(&key)?;
    if (scale as f32) as f64 != scale {
        return Err(meta.bad(format!("metadata '{key}' = {scale}: not an f32 value")));
    }
    Ok(LossScalerState {
        scale: scale as f32,
        growth_tracker: meta.parse(&format!("{p}.growth_tracker"))?,
        growth_factor: meta.parse(&format!("{p}.growth_factor"))?,
        backoff_factor: meta.parse(&format!("{p}.backoff_factor"))?,
        growth_interval: meta.parse(&format!("{p}.growth_interval"))?,
    })
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
