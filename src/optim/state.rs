//! Optimizer state keyed by parameter NAME, for checkpoints and for moving a run between
//! optimizers built anew (torch's `optimizer.state_dict()`, but keyed by name instead of by
//! position, so a checkpoint resumes into a model whose parameters are listed in another order).
//!
//! What an [`OptimizerState`] holds:
//! - the optimizer kind and its fixed hyper-parameters (β's, ε, momentum, ...), which an import
//!   requires to be equal: resuming AdamW moments under other β's is not the same run;
//! - per group, the parameter names and the hyper-parameters a schedule changes during a run
//!   (lr, weight decay);
//! - per parameter that has taken a step: its named slots (`exp_avg`, `exp_avg_sq` for AdamW,
//!   `momentum_buffer` for SGD) and AdamW's per-parameter step count.
//!
//! Import is all-or-nothing: every check (kind, config, group count, the names of each group,
//! slots, shapes, device, step counts, lr/wd ranges) passes and every slot is copied into a fresh
//! tensor before the optimizer changes at all.

use std::collections::{HashMap, HashSet};

use super::{check_lr, check_weight_decay, Groups};
use crate::error::{Error, Result, Shape};
use crate::tensor::Tensor;

/// One optimizer's complete state, by parameter name.
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// `"AdamW"` or `"SGD"`.
    pub kind: String,
    /// Hyper-parameters fixed at construction, e.g. `("beta1", 0.9)`.
    pub config: Vec<(String, f64)>,
    pub groups: Vec<GroupState>,
    /// Parameters that have taken at least one step (others have no state yet).
    pub params: Vec<ParamState>,
}

/// The names and current hyper-parameters of one parameter group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupState {
    pub names: Vec<String>,
    pub lr: f64,
    pub weight_decay: f64,
}

/// The state of one parameter.
#[derive(Clone, Debug)]
pub struct ParamState {
    pub name: String,
    /// AdamW's step count t (≥ 1); `None` for SGD, which keeps none.
    pub step: Option<u64>,
    /// `(slot, tensor)` with the parameter's shape, e.g. `("exp_avg", m)`.
    pub slots: Vec<(String, Tensor)>,
}

/// A copy of `t` that later in-place updates of `t` do not reach.
pub(crate) fn snapshot(op: &'static str, t: &Tensor) -> Result<Tensor> {
    let copy = Tensor::uninit(t.gpu(), op, t.shape())?;
    copy.assign(t)?;
    Ok(copy)
}

/// The group part of an export.
pub(crate) fn export_groups(groups: &Groups) -> Vec<GroupState> {
    groups
        .iter()
        .map(|g| GroupState {
            names: g.names.clone(),
            lr: g.lr,
            weight_decay: g.weight_decay,
        })
        .collect()
}

/// What an optimizer expects of an imported state.
pub(crate) struct Expect<'a> {
    pub op: &'static str,
    pub kind: &'static str,
    pub config: &'a [(String, f64)],
    /// Slot names every parameter state carries, in this order.
    pub slots: &'static [&'static str],
    /// Whether a step count ≥ 1 is required (AdamW) or must be absent (SGD).
    pub step: bool,
}

/// Per group, per parameter (in the optimizer's order): the step count and fresh copies of the
/// slots (in `Expect::slots` order), or `None` for a parameter without state.
pub(crate) type Slots = Vec<Vec<Option<(Option<u64>, Vec<Tensor>)>>>;

/// An import that passed every check, its tensors already copied: committing it cannot fail
/// halfway. Made by [`super::Optimizer::prepare_import`], consumed by `commit_import` of the
/// same optimizer (a checkpoint prepares every optimizer before committing any).
pub struct PreparedImport {
    pub(crate) kind: &'static str,
    pub(crate) slots: Slots,
    /// (lr, weight decay) per group, already validated.
    pub(crate) hyper: Vec<(f64, f64)>,
}

impl std::fmt::Debug for PreparedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PreparedImport({}, {} groups)",
            self.kind,
            self.hyper.len()
        )
    }
}

/// Check `state` against the optimizer's groups and `expect`; copy its slots into fresh tensors.
/// Nothing of the optimizer is touched.
pub(crate) fn prepare_import(
    groups: &Groups,
    expect: &Expect,
    state: &OptimizerState,
) -> Result<PreparedImport> {
    let op = expect.op;
    if state.kind != expect.kind {
        return Err(Error::invalid(
            op,
            format!("the state of a {} optimizer", expect.kind),
            format!("the state of a {} optimizer", state.kind),
        ));
    }
    // Compared as sets of (key, exact bits): a checkpoint lists them in its own order.
    let bits = |c: &[(String, f64)]| -> std::collections::BTreeMap<String, u64> {
        c.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect()
    };
    if bits(&state.config) != bits(expect.config) {
        return Err(Error::invalid(
            op,
            format!("the optimizer's fixed hyper-parameters {:?}", expect.config),
            format!("{:?}", state.config),
        ));
    }
    if state.groups.len() != groups.len() {
        return Err(Error::invalid(
            op,
            format!("{} parameter groups", groups.len()),
            state.groups.len(),
        ));
    }
    // Group structure: the same set of names in every group, group by group.
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    for (g, gs) in groups.iter().zip(&state.groups) {
        check_lr(op, gs.lr)?;
        check_weight_decay(op, gs.weight_decay)?;
        let theirs: HashSet<&str> = gs.names.iter().map(String::as_str).collect();
        if theirs.len() != gs.names.len() {
            return Err(Error::invalid(
                op,
                "each parameter name once per group",
                format!("{:?}", gs.names),
            ));
        }
        let ours: HashSet<&str> = g.names.iter().map(String::as_str).collect();
        missing.extend(
            g.names
                .iter()
                .filter(|n| !theirs.contains(n.as_str()))
                .cloned(),
        );
        unexpected.extend(
            gs.names
                .iter()
                .filter(|n| !ours.contains(n.as_str()))
                .cloned(),
        );
    }
    // Parameter states: each names a parameter of ours, once, with exactly the expected slots.
    let mut by_name: HashMap<&str, &ParamState> = HashMap::new();
    let param_of: HashMap<&str, &Tensor> = groups
        .iter()
        .flat_map(|g| g.names.iter().map(String::as_str).zip(&g.params))
        .collect();
    let mut shapes = Vec::new();
    for ps in &state.params {
        if by_name.insert(ps.name.as_str(), ps).is_some() {
            return Err(Error::invalid(
                op,
                "one state per parameter",
                format!("two for '{}'", ps.name),
            ));
        }
        let Some(param) = param_of.get(ps.name.as_str()) else {
            unexpected.push(ps.name.clone());
            continue;
        };
        let slots: Vec<&str> = ps.slots.iter().map(|(s, _)| s.as_str()).collect();
        if slots != expect.slots {
            return Err(Error::invalid(
                op,
                format!("slots {:?} for '{}'", expect.slots, ps.name),
                format!("{slots:?}"),
            ));
        }
        match (expect.step, ps.step) {
            (true, Some(t)) if t >= 1 => {}
            (false, None) => {}
            (_, got) => {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{} for '{}'",
                        if expect.step {
                            "a step count >= 1"
                        } else {
                            "no step count"
                        },
                        ps.name
                    ),
                    format!("{got:?}"),
                ))
            }
        }
        for (slot, t) in &ps.slots {
            if t.shape() != param.shape() {
                shapes.push((
                    format!("{}.{slot}", ps.name),
                    Shape::from(param.shape()),
                    Shape::from(t.shape()),
                ));
            } else {
                param.check_same_gpu(op, t)?;
            }
        }
    }
    if !(missing.is_empty() && unexpected.is_empty() && shapes.is_empty()) {
        return Err(Error::NameMismatch {
            op,
            missing,
            unexpected,
            shapes,
        });
    }
    // Everything checks: copy the slots into tensors the optimizer will own.
    let mut out = Vec::with_capacity(groups.len());
    for g in groups.iter() {
        let mut per = Vec::with_capacity(g.params.len());
        for name in &g.names {
            per.push(match by_name.get(name.as_str()) {
                None => None,
                Some(ps) => {
                    let copies = ps
                        .slots
                        .iter()
                        .map(|(_, t)| snapshot(op, t))
                        .collect::<Result<Vec<_>>>()?;
                    Some((ps.step, copies))
                }
            });
        }
        out.push(per);
    }
    Ok(PreparedImport {
        kind: expect.kind,
        slots: out,
        hyper: state
            .groups
            .iter()
            .map(|g| (g.lr, g.weight_decay))
            .collect(),
    })
}

/// Check that `prepared` was made for an optimizer of this kind and group structure, set every
/// group's lr and weight decay, and hand back the slots for the optimizer to swap in.
pub(crate) fn commit_import(
    op: &'static str,
    kind: &'static str,
    groups: &mut Groups,
    prepared: PreparedImport,
) -> Result<Slots> {
    let fits = prepared.kind == kind
        && prepared.slots.len() == groups.len()
        && groups
            .iter()
            .zip(&prepared.slots)
            .all(|(g, s)| g.params.len() == s.len());
    if !fits {
        return Err(Error::invalid(
            op,
            format!("an import prepared by this {kind} optimizer"),
            format!("one prepared by a {} optimizer", prepared.kind),
        ));
    }
    for (g, &(lr, weight_decay)) in prepared.hyper.iter().enumerate() {
        groups.set_lr(g, lr)?;
        groups.set_weight_decay(g, weight_decay)?;
    }
    Ok(prepared.slots)
}
