//! The checkpoint file format, version 1: one safetensors file (little-endian f32 tensors and a
//! `__metadata__` map of strings). Everything a key or value means is written here once.
//!
//! Tensors:
//! - `model.{module}.{name}`: a module's named state (parameters and buffers) in PyTorch names and
//!   layouts, by the same `nn::state_file` serialiser as `nn::save_safetensors`, so
//!   `nn::load_safetensors(m, path, LoadOptions::strict().take_prefix("model.teacher."))` (or
//!   PyTorch after stripping the prefix) reads one module out of a checkpoint.
//! - `optim.{optimizer}.state.{param}.{slot}`: an optimizer slot (`exp_avg`, `exp_avg_sq`,
//!   `momentum_buffer`) in the parameter's cads shape.
//! - `extra.{name}`: a caller's extra tensor (e.g. the DINO center) in its own shape.
//!
//! Metadata (every value a string; lists are newline-separated, numbers in Rust's shortest
//! round-trip form, so an f64 reads back bit for bit):
//! - `format` = `cads.checkpoint`, `format_version` = `1`, `checksum` = `crc32:xxxxxxxx` over the
//!   rest of the metadata and every tensor's key, shape and bytes (see [`checksum`]);
//! - `epoch`, `iteration`: the schedule position;
//! - `models`, `optimizers`, `rngs`, `extras`: the names, one per line;
//! - `rng.{name}`: a generator's state (`util::Rng::state`), decimal u64;
//! - `config`: the run configuration as JSON text (absent when none was given);
//! - `optim.{o}.kind`, `optim.{o}.config.{key}` (fixed hyper-parameters), `optim.{o}.groups`
//!   (count), `optim.{o}.group.{g}.lr`, `.weight_decay`, `.params` (names, one per line),
//!   `optim.{o}.slots` (slot names in order), `optim.{o}.stateful` (parameters with state),
//!   `optim.{o}.step.{param}` (AdamW's per-parameter step count);
//! - `scalers` (names, absent when none, as in files written before loss scaling), and per
//!   scaler `scaler.{s}.scale` (an f32 value), `.growth_tracker`, `.growth_factor`,
//!   `.backoff_factor`, `.growth_interval` (`optim::LossScalerState`).
//!
//! Module, optimizer and scaler names may not contain `.` (they delimit dotted keys); no name may
//! contain a newline (lists are newline-separated).

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};

/// `format` of every cads checkpoint.
pub const FORMAT: &str = "cads.checkpoint";
/// The version this build writes; it reads every version up to this one.
pub const VERSION: u32 = 1;

pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_VERSION: &str = "format_version";
pub(crate) const KEY_CHECKSUM: &str = "checksum";

/// A list as one metadata value.
pub(crate) fn join(names: &[String]) -> String {
    names.join("\n")
}

/// The inverse of [`join`] (an empty value is an empty list).
pub(crate) fn split(value: &str) -> Vec<String> {
    if value.is_empty() {
        Vec::new()
    } else {
        value.split('\n').map(str::to_string).collect()
    }
}

/// Reject names that would make keys or lists ambiguous.
pub(crate) fn check_name(op: &'static str, what: &str, name: &str, dots: bool) -> Result<()> {
    let bad = name.is_empty() || name.contains('\n') || (!dots && name.contains('.'));
    if bad {
        return Err(Error::invalid(
            op,
            format!(
                "a non-empty {what} name without newlines{}",
                if dots { "" } else { " or dots" }
            ),
            format!("{name:?}"),
        ));
    }
    Ok(())
}

/// CRC-32 over the metadata (sorted, without `checksum`) and every tensor's key, shape and bytes
/// (sorted by key), each field length-prefixed so no two different files hash the same stream.
/// safetensors itself checks that offsets and the file length agree (a truncated file fails
/// there); this catches bytes changed in place.
pub(crate) fn checksum<'a>(
    metadata: &HashMap<String, String>,
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [u8])>,
) -> String {
    let mut crc = flate2::Crc::new();
    let mut field = |bytes: &[u8]| {
        crc.update(&(bytes.len() as u64).to_le_bytes());
        crc.update(bytes);
    };
    let sorted: BTreeMap<&String, &String> = metadata
        .iter()
        .filter(|(k, _)| k.as_str() != KEY_CHECKSUM)
        .collect();
    for (k, v) in sorted {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (key, shape, bytes) in tensors {
        field(key.as_bytes());
        let dims: Vec<u8> = shape
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        field(&dims);
        field(bytes);
    }
    format!("crc32:{:08x}", crc.sum())
}

/// Typed access to the metadata map of a file being read; every miss names the key and file.
pub(crate) struct Meta<'a> {
    pub map: &'a HashMap<String, String>,
    pub path: &'a str,
    pub op: &'static str,
}

impl Meta<'_> {
    pub fn bad(&self, problem: String) -> Error {
        Error::BadFile {
            op: self.op,
            path: self.path.to_string(),
            problem,
        }
    }

    pub fn get(&self, key: &str) -> Result<&str> {
        self.map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.bad(format!("metadata key '{key}' is missing")))
    }

    pub fn list(&self, key: &str) -> Result<Vec<String>> {
        Ok(split(self.get(key)?))
    }

    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.get(key)?;
        v.parse()
            .map_err(|e| self.bad(format!("metadata '{key}' = {v:?}: {e}")))
    }
}
