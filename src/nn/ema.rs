//! Teacher updates between two modules of the same architecture, matched by parameter NAME:
//!
//!   ema_update(teacher, student, m):  θ_t ← m·θ_t + (1 − m)·θ_s   for every name
//!   copy_state(dst, src):             θ_dst ← θ_src                for every name
//!
//! The DINO / CADS teacher starts as a copy of the student and then follows it by EMA after each
//! optimizer step (m cosine 0.996 → 1). Names and shapes are matched first; any difference is an
//! [`Error::NameMismatch`] listing the names, and nothing is written. The arithmetic is the
//! fused in-place GPU op `ops::ema` (no host round trip, no tape).
//!
//! What is averaged: the parameters, as DINO's `for param_q, param_k in zip(student.parameters(),
//! teacher.parameters())`; buffers are left as they are. What is copied: the whole named state,
//! parameters and buffers, as `teacher.load_state_dict(student.state_dict())`. Both check the
//! whole state (names and shapes), so two different architectures never pass.
//!
//! The authors pair teacher and student tensors by position instead; `ops::ema::ema_update_`
//! on two ordered lists does that.

use std::collections::{HashMap, HashSet};

use super::state::{Module, StateKind};
use crate::error::{Error, Result, Shape};
use crate::ops::ema::{copy_, ema_update_};
use crate::tensor::Tensor;

/// `(name, tensor)` of every state entry (parameters and buffers) of `module`.
fn state_pairs(module: &(impl Module + ?Sized)) -> Vec<(String, Tensor)> {
    module
        .named_state()
        .into_iter()
        .map(|e| (e.name, e.tensor))
        .collect()
}

/// Pair `targets` and `sources` by name, in the targets' order.
///
/// Both lists must hold the same names (each once) with equal shapes; otherwise the error lists
/// the names missing from `sources`, the names `targets` lacks, and the shape differences.
pub fn pair_by_name(
    op: &'static str,
    targets: &[(String, Tensor)],
    sources: &[(String, Tensor)],
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    for (which, list) in [("target", targets), ("source", sources)] {
        let mut seen = HashSet::new();
        for (name, _) in list {
            if !seen.insert(name.as_str()) {
                return Err(Error::invalid(
                    op,
                    format!("each {which} name once"),
                    format!("'{name}' twice"),
                ));
            }
        }
    }
    let by_name: HashMap<&str, &Tensor> = sources.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let target_names: HashSet<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    let mut missing = Vec::new();
    let mut shapes = Vec::new();
    let (mut ts, mut ss) = (Vec::new(), Vec::new());
    for (name, t) in targets {
        match by_name.get(name.as_str()) {
            None => missing.push(name.clone()),
            Some(s) if s.shape() != t.shape() => {
                shapes.push((name.clone(), Shape::from(t.shape()), Shape::from(s.shape())))
            }
            Some(s) => {
                ts.push(t.clone());
                ss.push((*s).clone());
            }
        }
    }
    let unexpected: Vec<String> = sources
        .iter()
        .filter(|(n, _)| !target_names.contains(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && shapes.is_empty()) {
        return Err(Error::NameMismatch {
            op,
            missing,
            unexpected,
            shapes,
        });
    }
    Ok((ts, ss))
}

/// `teacher ← m·teacher + (1 − m)·student` for every named tensor, in place on the GPU.
pub fn ema_update_named(
    teacher: &[(String, Tensor)],
    student: &[(String, Tensor)],
    momentum: f64,
) -> Result<()> {
    let (t, s) = pair_by_name("ema_update", teacher, student)?;
    ema_update_(&t, &s, momentum)
}

/// `dst ← src` for every named tensor, in place on the GPU.
pub fn copy_named(dst: &[(String, Tensor)], src: &[(String, Tensor)]) -> Result<()> {
    let (d, s) = pair_by_name("copy_state", dst, src)?;
    copy_(&d, &s)
}

/// The teacher update: `teacher ← m·teacher + (1 − m)·student` for every parameter, matched by
/// name (the whole state must match); buffers are left unchanged. `m` ∈ [0, 1].
pub fn ema_update(
    teacher: &(impl Module + ?Sized),
    student: &(impl Module + ?Sized),
    momentum: f64,
) -> Result<()> {
    let state = teacher.named_state();
    let (t, s) = pair_by_name("ema_update", &state_pairs(teacher), &state_pairs(student))?;
    // `pair_by_name` keeps the teacher's order, so `state[i]` describes `t[i]`.
    let (t, s): (Vec<Tensor>, Vec<Tensor>) = state
        .iter()
        .zip(t.into_iter().zip(s))
        .filter(|(e, _)| e.kind == StateKind::Parameter)
        .map(|(_, pair)| pair)
        .unzip();
    ema_update_(&t, &s, momentum)
}

/// Copy the whole named state (parameters and buffers) of `src` into `dst`, e.g. the teacher's
/// initial weights.
pub fn copy_state(dst: &(impl Module + ?Sized), src: &(impl Module + ?Sized)) -> Result<()> {
    copy_named(&state_pairs(dst), &state_pairs(src))
}
