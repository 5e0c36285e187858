//! The autograd tape.
//!
//! `autograd` and `tensor` are ONE layer (see the crate docs, Layers): eager autograd couples the
//! tensor (which carries its node) and the tape (which holds tensors). Neither imports `ops`:
//! gradient contributions are summed with the tensor layer's own unrecorded `add`.
//!
//! Every op whose inputs need gradients (and that runs while recording is on) attaches a [`Node`]
//! to its result: the inputs, a sequence number taken in recording order, and a backward closure
//! that maps the output gradient to fresh input gradients (`None` where an input needs none).
//! The tape is the set of nodes reachable from the tensor `backward` starts at; it is walked in
//! reverse recording order, which is a valid reverse topological order because a node's inputs
//! were always recorded before it.
//!
//! Gradients are accumulated in ONE place, the [`Gradients`] store: kernels never `+=`, so
//! fan-out (a tensor used twice, residuals, U-Net skips) sums correctly by construction.
//! Backward runs with recording off (no higher-order gradients), and each node's closure and
//! inputs are released as soon as it has run, so intermediate buffers return to the pool during
//! the backward pass rather than after it.
//!
//! A node does NOT keep its inputs' buffers: it keeps a `TapeInput` per input (id, shape,
//! element type, whether it wants a gradient, its own node), which is all the walk and the
//! routing of gradients need. The values a backward needs are exactly what its closure captured
//! (a matmul's operands, a GELU's input; an add captures nothing), so a forward tensor that no
//! backward reads goes back to the pool as soon as the forward has used it. This is what makes
//! mixed precision save memory: a cast's f32 input is not held by the cast's node, only the f16
//! copy the matmul captured is.
//!
//! The gradient of a tensor has the tensor's element type (f16 for an f16 tensor): checked for
//! every gradient a backward returns, and summed in that type.
//!
//! [`Tensor::backward_observed`] runs the same sweep and reports each watched leaf's gradient as
//! soon as it is final (its last consumer has run; `observe.rs`), so data-parallel training can
//! all-reduce early gradients while the rest of the backward pass still runs.
//!
//! [`checkpoint`] (activation checkpointing) records a whole function as one node that recomputes
//! it, under a small tape of its own, when the backward pass reaches it.

mod checkpoint;
mod observe;
pub use checkpoint::checkpoint;
use observe::Watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// What a node keeps of one input: its identity and type, never its buffer (module docs).
struct TapeInput {
    id: u64,
    shape: Vec<usize>,
    dtype: DType,
    requires_grad: bool,
    node: Option<Arc<Node>>,
}

impl TapeInput {
    fn of(t: &Tensor) -> TapeInput {
        TapeInput {
            id: t.id(),
            shape: t.shape().to_vec(),
            dtype: t.dtype(),
            requires_grad: t.requires_grad(),
            node: t.inner.node.clone(),
        }
    }
}

/// One recorded operation.
pub struct Node {
    seq: u64,
    op: &'static str,
    output_id: u64,
    output_shape: Vec<usize>,
    state: Mutex<Option<(Vec<TapeInput>, BackwardFn)>>,
}

impl Node {
    pub fn op(&self) -> &'static str {
        self.op
    }
}

/// Attach a backward rule to `out` if recording is on and any input needs gradients; otherwise
/// return `out` unchanged. `backward` receives d(loss)/d(out) and returns one entry per input.
pub fn record(
    out: Tensor,
    op: &'static str,
    inputs: &[&Tensor],
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    if !out.gpu().grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
        return out;
    }
    let node = Arc::new(Node {
        seq: out.gpu().next_id(),
        op,
        output_id: out.id(),
        output_shape: out.shape().to_vec(),
        state: Mutex::new(Some((
            inputs.iter().map(|t| TapeInput::of(t)).collect(),
            Box::new(backward),
        ))),
    });
    out.with_node(node)
}

/// Gradients by tensor id: the one place where contributions are summed.
#[derive(Default)]
pub struct Gradients {
    map: HashMap<u64, Tensor>,
}

impl std::fmt::Debug for Gradients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gradients({} tensors)", self.map.len())
    }
}

impl Gradients {
    /// d(loss)/d(t), if any gradient reached `t`.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    /// Take the gradient of `t` out of the store.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
    /// Add `g` to the gradient of tensor id `id` (insert if absent). Both in one element
    /// type; f16 gradients are summed in f32 and rounded once.
    pub fn accumulate(&mut self, id: u64, g: Tensor) -> Result<()> {
        match self.map.remove(&id) {
            None => {
                self.map.insert(id, g);
            }
            Some(prev) => {
                if prev.shape() != g.shape() || prev.dtype() != g.dtype() {
                    return Err(Error::Autograd {
                        op: "accumulate",
                        message: format!(
                            "gradients {:?} {} and {:?} {} differ",
                            prev.shape(),
                            prev.dtype(),
                            g.shape(),
                            g.dtype()
                        ),
                    });
                }
                let sum = match g.dtype() {
                    DType::F32 => crate::tensor::add_unrecorded("accumulate", &prev, &g)?,
                    DType::F16 => crate::tensor::add_half_unrecorded("accumulate", &prev, &g)?,
                };
                self.map.insert(id, sum);
            }
        }
        Ok(())
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Tensor {
    /// Backward from a scalar (one-element) tensor, with upstream gradient 1.
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(Error::Autograd {
                op: "backward",
                message: format!(
                    "backward() without an upstream gradient needs a one-element tensor, got shape {:?}; use backward_with",
                    self.shape()
                ),
            });
        }
        let ones = Tensor::full(self.gpu(), self.shape(), 1.0)?;
        let ones = match self.dtype() {
            DType::F32 => ones,
            dtype => crate::tensor::cast_unrecorded("backward", &ones, dtype)?,
        };
        self.backward_with(&ones)
    }

    /// Backward from this tensor with upstream gradient `grad` (same shape). Returns the
    /// gradients of every leaf that requires them. The graph is consumed: a second backward
    /// through the same nodes is an error.
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        self.sweep(grad, None)
    }

    /// [`backward`](Self::backward), telling `on_final(i, gradient)` as soon as the gradient of
    /// `watched[i]` (a leaf, e.g. a parameter) can no longer change: right after the last node
    /// that consumes it, or before the first node for a leaf no node consumes (see
    /// `autograd::observe`). Each watched leaf is reported exactly once, in the order the
    /// gradients become final; `None` when no gradient reached it. The returned gradients are
    /// bit for bit those of `backward`. An error from `on_final` ends the backward with it.
    pub fn backward_observed(
        &self,
        watched: &[Tensor],
        mut on_final: impl FnMut(usize, Option<&Tensor>) -> Result<()>,
    ) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(Error::Autograd {
                op: "backward_observed",
                message: format!(
                    "backward needs a one-element tensor, got shape {:?}",
                    self.shape()
                ),
            });
        }
        let ones = Tensor::full(self.gpu(), self.shape(), 1.0)?;
        self.sweep(&ones, Some((watched, &mut on_final)))
    }

    /// Which of `leaves` the graph behind this tensor consumes, i.e. which a backward from here
    /// can give a gradient (it will, unless every path to the leaf passes none). Walks the graph
    /// without running or consuming it.
    pub fn consumes(&self, leaves: &[Tensor]) -> Vec<bool> {
        let mut used = std::collections::HashSet::new();
        if self.inner.node.is_none() && self.requires_grad() {
            used.insert(self.id());
        }
        for node in collect_nodes(self) {
            let state = node.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((inputs, _)) = state.as_ref() {
                used.extend(inputs.iter().filter(|x| x.requires_grad).map(|x| x.id));
            }
        }
        leaves.iter().map(|t| used.contains(&t.id())).collect()
    }

    /// The reverse sweep from `self` with upstream `grad`, optionally observed.
    fn sweep(&self, grad: &Tensor, observe: Option<Observer<'_, '_>>) -> Result<Gradients> {
        if grad.shape() != self.shape() {
            return Err(Error::shape("backward_with", self.shape(), grad.shape()));
        }
        grad.expect_dtype("backward_with", self.dtype())?;
        if !self.requires_grad() {
            return Err(Error::Autograd {
                op: "backward",
                message: "tensor does not require grad (no parameter or recorded op leads to it)"
                    .into(),
            });
        }
        let gpu = self.gpu().clone();
        gpu.no_grad(|| {
            let nodes = collect_nodes(self);
            let mut grads = Gradients::default();
            grads.accumulate(self.id(), grad.clone())?;
            let mut watch = match observe {
                Some((watched, on_final)) => Some(Watch::new(watched, &nodes, on_final)?),
                None => None,
            };
            if let Some(w) = &mut watch {
                w.start(&grads)?;
            }
            for (k, node) in nodes.iter().enumerate() {
                // Nothing flowed into a node whose output has no gradient: it is skipped.
                if let Some(g) = grads.map.remove(&node.output_id) {
                    run_node(node, &g, &mut grads)?;
                }
                if let Some(w) = &mut watch {
                    w.node_done(k, &grads)?;
                }
            }
            if let Some(w) = watch {
                w.finish()?;
            }
            Ok(grads)
        })
    }
}

/// What an observed sweep watches and whom it tells.
type Observer<'w, 'f> = (
    &'w [Tensor],
    &'f mut dyn FnMut(usize, Option<&Tensor>) -> Result<()>,
);

/// Run one node's backward on its output gradient `g` and add the input gradients to `grads`.
fn run_node(node: &Node, g: &Tensor, grads: &mut Gradients) -> Result<()> {
    let (inputs, backward) = node
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| Error::Autograd {
            op: node.op,
            message: "graph already consumed by an earlier backward".into(),
        })?;
    debug_assert_eq!(g.shape(), node.output_shape.as_slice());
    let input_grads = backward(g)?;
    if input_grads.len() != inputs.len() {
        return Err(Error::Autograd {
            op: node.op,
            message: format!(
                "backward returned {} gradients for {} inputs",
                input_grads.len(),
                inputs.len()
            ),
        });
    }
    for (x, gx) in inputs.iter().zip(input_grads) {
        let Some(gx) = gx else { continue };
        if !x.requires_grad {
            continue;
        }
        if gx.shape() != x.shape.as_slice() || gx.dtype() != x.dtype {
            return Err(Error::Autograd {
                op: node.op,
                message: format!(
                    "gradient {:?} {} for an input {:?} {}",
                    gx.shape(),
                    gx.dtype(),
                    x.shape,
                    x.dtype
                ),
            });
        }
        grads.accumulate(x.id, gx)?;
    }
    Ok(())
}

/// Every node reachable from `root`, in reverse recording order.
fn collect_nodes(root: &Tensor) -> Vec<Arc<Node>> {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<Arc<Node>> = root.inner.node.iter().cloned().collect();
    let mut nodes = Vec::new();
    while let Some(node) = stack.pop() {
        if !seen.insert(node.seq) {
            continue;
        }
        if let Some((inputs, _)) = node
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            stack.extend(inputs.iter().filter_map(|x| x.node.clone()));
        }
        nodes.push(node);
    }
    nodes.sort_by_key(|n| std::cmp::Reverse(n.seq));
    nodes
}
