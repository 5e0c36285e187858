//! Loading PyTorch weights (converted to safetensors, e.g. by scripts/convert_cads_checkpoint.py)
//! into the encoder by name, with the layout conversion to cads's layouts:
//! Linear `[out, in]` → `[in, out]`; Conv3d `[Cout, Cin/g, kD, kH, kW]` → `[kD, kH, kW, Cin/g,
//! Cout]`; Conv2d `[Cout, Cin/g, kH, kW]` → `[1, kH, kW, Cin/g, Cout]`; 1-D tensors as they are.
//! Keys may carry the teacher's `backbone.` prefix. f32, f16 and bf16 files are accepted.

use std::collections::HashMap;

use super::PvtEncoder;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Encoder parameters written from the file.
    pub loaded: Vec<String>,
    /// Encoder parameters the file does not have (left as they were).
    pub missing: Vec<String>,
    /// File tensors the encoder has no parameter for (e.g. DINO head weights).
    pub unexpected: Vec<String>,
}

/// The PyTorch shape of a cads parameter and the conversion of PyTorch data to cads layout.
fn pytorch_shape(ours: &[usize]) -> Vec<usize> {
    match *ours {
        [i, o] => vec![o, i],
        [1, kh, kw, ci, co] => vec![co, ci, kh, kw],
        [kd, kh, kw, ci, co] => vec![co, ci, kd, kh, kw],
        _ => ours.to_vec(),
    }
}

fn to_cads_layout(ours: &[usize], data: &[f32]) -> Vec<f32> {
    match *ours {
        [i, o] => {
            let mut out = vec![0.0; i * o];
            for r in 0..o {
                for c in 0..i {
                    out[c * o + r] = data[r * i + c];
                }
            }
            out
        }
        [kd, kh, kw, ci, co] => {
            let taps = kd * kh * kw;
            let mut out = vec![0.0; data.len()];
            for o in 0..co {
                for c in 0..ci {
                    for t in 0..taps {
                        out[(t * ci + c) * co + o] = data[(o * ci + c) * taps + t];
                    }
                }
            }
            out
        }
        _ => data.to_vec(),
    }
}

fn as_f32(
    op: &'static str,
    path: &str,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Vec<f32>> {
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
        other => {
            return Err(Error::BadFile {
                op,
                path: path.to_string(),
                problem: format!("tensor {name}: dtype {other:?}, expected F32, F16 or BF16"),
            });
        }
    })
}

impl PvtEncoder {
    /// Load a safetensors file by parameter name (see the module docs for layouts).
    pub fn load_safetensors(&self, path: &str) -> Result<LoadReport> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            op: "PvtEncoder::load_safetensors",
            path: path.to_string(),
            source,
        })?;
        self.load_safetensors_bytes(&bytes, path)
    }

    /// As [`PvtEncoder::load_safetensors`] from bytes in memory (`path` names them in errors).
    /// Every shape is checked before anything is written, so a bad file changes no weight.
    pub fn load_safetensors_bytes(&self, bytes: &[u8], path: &str) -> Result<LoadReport> {
        let op = "PvtEncoder::load_safetensors";
        let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::BadFile {
            op,
            path: path.to_string(),
            problem: e.to_string(),
        })?;
        let ours: HashMap<String, Tensor> = self.named_parameters(None).into_iter().collect();
        let mut report = LoadReport::default();
        let mut writes: Vec<(Tensor, Vec<f32>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut names = file.names();
        names.sort();
        for raw in names {
            let name = raw.strip_prefix("module.").unwrap_or(raw);
            let name = name.strip_prefix("backbone.").unwrap_or(name);
            let Some(param) = ours.get(name) else {
                report.unexpected.push(raw.to_string());
                continue;
            };
            let view = file.tensor(raw).map_err(|e| Error::BadFile {
                op,
                path: path.to_string(),
                problem: e.to_string(),
            })?;
            let want = pytorch_shape(param.shape());
            if view.shape() != want.as_slice() {
                return Err(Error::ShapeMismatch {
                    op,
                    expected: format!("{name}: {want:?} (PyTorch layout)"),
                    got: format!("{:?} in {path}", view.shape()),
                });
            }
            let data = as_f32(op, path, name, &view)?;
            writes.push((param.clone(), to_cads_layout(param.shape(), &data)));
            seen.insert(name.to_string());
            report.loaded.push(name.to_string());
        }
        for (tensor, data) in writes {
            tensor.write(&data)?;
        }
        let mut missing: Vec<String> = ours
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        missing.sort();
        report.missing = missing;
        Ok(report)
    }
}
