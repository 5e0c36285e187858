//! Save and load any [`Module`]'s named state as safetensors, with PyTorch names and layouts, so
//! a file written here loads in PyTorch (`safetensors.torch.load_file` + `load_state_dict`) and a
//! PyTorch state dict converted by `scripts/convert_cads_checkpoint.py` loads here.
//!
//! - Save: f32, every entry converted to its PyTorch layout; written to `path.tmp`, synced and
//!   renamed, so a crash never leaves a truncated file under the real name.
//! - Load: f32, f16 and bf16 accepted. **Strict by default**: the file's keys (after the
//!   caller's prefix filters) must be exactly the module's names, else [`Error::StateKeys`]
//!   lists the missing and unexpected keys. Every key, dtype and shape is checked before any
//!   tensor is written, so an error changes no weight.
//! - Partial loads are explicit ([`LoadOptions`]): take only keys under a prefix (stripping it),
//!   skip keys under other prefixes, allow some module names to be missing, tolerate unknown
//!   keys. The [`LoadReport`] separates what was expected and skipped from what is unknown.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::state::{Module, StateEntry};
use crate::error::{Error, Result};

/// Which file keys a load considers, and what it tolerates. `LoadOptions::default()` is strict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Only file keys starting with this are considered, with it stripped (e.g. `backbone.`);
    /// the others are skipped (expected: they belong to another part of the checkpoint).
    pub take_prefix: Option<String>,
    /// File keys (after `take_prefix`) starting with any of these are skipped (e.g. `head.`).
    pub skip_prefixes: Vec<String>,
    /// File keys containing any of these are skipped (e.g. `_2D`: the image path's tensors,
    /// for an encoder built without it).
    pub skip_containing: Vec<String>,
    /// Module names starting with any of these may be absent from the file (left as they are).
    /// `""` allows every name to be missing.
    pub allow_missing: Vec<String>,
    /// File keys the module has no name for are reported instead of failing the load.
    pub allow_unknown: bool,
}

impl LoadOptions {
    /// Exactly the module's names, nothing more, nothing less.
    pub fn strict() -> LoadOptions {
        LoadOptions::default()
    }

    /// Consider only keys under `prefix`, stripped (e.g. `backbone.` of a teacher checkpoint).
    pub fn take_prefix(mut self, prefix: &str) -> LoadOptions {
        self.take_prefix = Some(prefix.to_string());
        self
    }

    /// Skip file keys under `prefix` (after `take_prefix`).
    pub fn skip_prefix(mut self, prefix: &str) -> LoadOptions {
        self.skip_prefixes.push(prefix.to_string());
        self
    }

    /// Skip file keys containing `part`.
    pub fn skip_containing(mut self, part: &str) -> LoadOptions {
        self.skip_containing.push(part.to_string());
        self
    }

    /// Let module names under `prefix` be missing from the file (`""`: any name).
    pub fn allow_missing(mut self, prefix: &str) -> LoadOptions {
        self.allow_missing.push(prefix.to_string());
        self
    }

    /// Report file keys the module does not have instead of failing.
    pub fn allow_unknown(mut self) -> LoadOptions {
        self.allow_unknown = true;
        self
    }
}

/// What a load did. `skipped` and `missing` were expected (the caller's filters said so);
/// `unknown` are file keys the module has no name for (only non-empty with `allow_unknown`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Module names written from the file.
    pub loaded: Vec<String>,
    /// File keys the prefix filters excluded (expected and skipped).
    pub skipped: Vec<String>,
    /// Module names the file lacks that the caller allowed to be missing (left unchanged).
    pub missing: Vec<String>,
    /// File keys (as in the file) the module does not have.
    pub unknown: Vec<String>,
}

/// Serialise `module`'s state in PyTorch names and layouts (f32) to safetensors bytes.
pub fn to_safetensors_bytes(module: &(impl Module + ?Sized)) -> Result<Vec<u8>> {
    entries_to_safetensors_bytes(&module.named_state(), None)
}

/// Serialise any list of state entries (e.g. several modules under their own prefixes, as a
/// checkpoint gathers them), with optional string metadata in the safetensors header.
pub fn entries_to_safetensors_bytes(
    entries: &[StateEntry],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let op = "save_safetensors";
    let mut seen = HashSet::new();
    let mut blobs: Vec<(&str, Vec<usize>, Vec<u8>)> = Vec::new();
    for entry in entries {
        if !seen.insert(entry.name.as_str()) {
            return Err(Error::invalid(
                op,
                "unique state names",
                format!("{} listed twice", entry.name),
            ));
        }
        let shape = entry.pytorch_shape()?;
        let data = entry
            .layout
            .to_pytorch(entry.tensor.shape(), &entry.tensor.to_vec()?)?;
        blobs.push((&entry.name, shape, bytemuck::cast_slice(&data).to_vec()));
    }
    let views = blobs
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::invalid(op, format!("a valid tensor {name}"), e))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| Error::invalid(op, "serialisable state", e))
}

/// Write `module`'s state to `path` (temp file `path.tmp`, fsync, rename).
pub fn save_safetensors(module: &(impl Module + ?Sized), path: &str) -> Result<()> {
    let bytes = to_safetensors_bytes(module)?;
    write_atomically("save_safetensors", path, &bytes)
}

/// Write `bytes` to `path` so that `path` is either the old file or the whole new one
/// ([`crate::util::file::write_atomically`]).
pub fn write_atomically(op: &'static str, path: &str, bytes: &[u8]) -> Result<()> {
    crate::util::file::write_atomically(op, path, bytes)
}

/// Write `path` through `write` so that `path` is either the old file or the whole new one: a
/// temporary file in the same directory, synced and renamed; never a rename over a device or
/// other non-regular file ([`crate::util::file::write_atomically_with`]).
pub fn write_atomically_with(
    op: &'static str,
    path: &str,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    crate::util::file::write_atomically_with(op, path, write)
}

/// Load `path` into `module` (see the module docs; `LoadOptions::strict()` for a strict load).
pub fn load_safetensors(
    module: &(impl Module + ?Sized),
    path: &str,
    options: &LoadOptions,
) -> Result<LoadReport> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        op: "load_safetensors",
        path: path.to_string(),
        source,
    })?;
    load_safetensors_bytes(module, &bytes, path, options)
}

/// As [`load_safetensors`] from bytes in memory (`path` names them in errors).
pub fn load_safetensors_bytes(
    module: &(impl Module + ?Sized),
    bytes: &[u8],
    path: &str,
    options: &LoadOptions,
) -> Result<LoadReport> {
    load_entries_bytes(&module.named_state(), bytes, path, options)
}

/// Load safetensors bytes into any list of state entries (the module-free core of
/// [`load_safetensors_bytes`]; e.g. a checkpoint's several modules under their prefixes).
pub fn load_entries_bytes(
    state: &[StateEntry],
    bytes: &[u8],
    path: &str,
    options: &LoadOptions,
) -> Result<LoadReport> {
    let op = "load_safetensors";
    let bad = |problem: String| Error::BadFile {
        op,
        path: path.to_string(),
        problem,
    };
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let ours: HashMap<&str, &StateEntry> = state.iter().map(|e| (e.name.as_str(), e)).collect();
    if ours.len() != state.len() {
        return Err(Error::invalid(
            op,
            "a module with unique state names",
            "a name listed twice",
        ));
    }
    let mut report = LoadReport::default();
    // (module name, file key) of every key to load.
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let mut unexpected = Vec::new();
    let mut file_keys: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    file_keys.sort();
    for key in file_keys {
        let name = match &options.take_prefix {
            Some(p) => match key.strip_prefix(p.as_str()) {
                Some(rest) => rest,
                None => {
                    report.skipped.push(key);
                    continue;
                }
            },
            None => key.as_str(),
        };
        if options.skip_prefixes.iter().any(|p| name.starts_with(p))
            || options.skip_containing.iter().any(|p| name.contains(p))
        {
            report.skipped.push(key);
            continue;
        }
        match ours.get(name) {
            Some(entry) => pairs.push((entry.name.as_str(), key)),
            None => unexpected.push(key),
        }
    }
    let seen: HashSet<&str> = pairs.iter().map(|(n, _)| *n).collect();
    let mut missing_bad = Vec::new();
    for entry in state {
        if seen.contains(entry.name.as_str()) {
            continue;
        }
        if options
            .allow_missing
            .iter()
            .any(|p| entry.name.starts_with(p))
        {
            report.missing.push(entry.name.clone());
        } else {
            missing_bad.push(entry.name.clone());
        }
    }
    if !missing_bad.is_empty() || (!unexpected.is_empty() && !options.allow_unknown) {
        return Err(Error::StateKeys {
            op,
            path: path.to_string(),
            expected: state.len(),
            missing: missing_bad,
            unexpected: if options.allow_unknown {
                Vec::new()
            } else {
                unexpected
            },
        });
    }
    report.unknown = unexpected;

    // Check and convert everything before the first write.
    let mut writes = Vec::with_capacity(pairs.len());
    for (name, key) in pairs {
        let entry = ours[name];
        let view = file.tensor(&key).map_err(|e| bad(format!("{key}: {e}")))?;
        let want = entry.pytorch_shape()?;
        if view.shape() != want.as_slice() {
            return Err(Error::ShapeMismatch {
                op,
                expected: format!("{key}: {want:?} (PyTorch {:?} layout)", entry.layout),
                got: format!("{:?} in {path}", view.shape()),
            });
        }
        let data = as_f32(&view).map_err(|p| bad(format!("{key}: {p}")))?;
        let data = entry.layout.from_pytorch(entry.tensor.shape(), &data)?;
        writes.push((entry.tensor.clone(), data));
        report.loaded.push(name.to_string());
    }
    for (tensor, data) in writes {
        tensor.write(&data)?;
    }
    Ok(report)
}

/// A safetensors tensor as f32 (from f32, f16 or bf16, little-endian).
fn as_f32(view: &safetensors::tensor::TensorView<'_>) -> std::result::Result<Vec<f32>, String> {
    use safetensors::Dtype;
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?}, expected F32, F16 or BF16")),
    })
}
