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
//! [`checkpoint`] (activation checkpointing) records a whole function as one node that recomputes
//! it, under a small tape of its own, when the backward pass reaches it.

mod checkpoint;
pub use checkpoint::checkpoint;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// One recorded operation.
pub struct Node {
    seq: u64,
    op: &'static str,
    output_id: u64,
    output_shape: Vec<usize>,
    state: Mutex<Option<(Vec<Tensor>, BackwardFn)>>,
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
            inputs.iter().map(|t| (*t).clone()).collect(),
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
    /// Add `g` to the gradient of tensor id `id` (insert if absent).
    pub fn accumulate(&mut self, id: u64, g: Tensor) -> Result<()> {
        match self.map.remove(&id) {
            None => {
                self.map.insert(id, g);
            }
            Some(prev) => {
                if prev.shape() != g.shape() {
                    return Err(Error::Autograd {
                        op: "accumulate",
                        message: format!(
                            "gradient shapes {:?} and {:?} differ",
                            prev.shape(),
                            g.shape()
                        ),
                    });
                }
                let sum = crate::tensor::add_unrecorded("accumulate", &prev, &g)?;
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
        self.backward_with(&ones)
    }

    /// Backward from this tensor with upstream gradient `grad` (same shape). Returns the
    /// gradients of every leaf that requires them. The graph is consumed: a second backward
    /// through the same nodes is an error.
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        if grad.shape() != self.shape() {
            return Err(Error::shape("backward_with", self.shape(), grad.shape()));
        }
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
            for node in nodes {
                let Some(g) = grads.map.remove(&node.output_id) else {
                    continue; // nothing flowed into this node
                };
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
                let input_grads = backward(&g)?;
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
                    if !x.requires_grad() {
                        continue;
                    }
                    if gx.shape() != x.shape() {
                        return Err(Error::Autograd {
                            op: node.op,
                            message: format!(
                                "gradient of shape {:?} for an input of shape {:?}",
                                gx.shape(),
                                x.shape()
                            ),
                        });
                    }
                    grads.accumulate(x.id(), gx)?;
                }
            }
            Ok(grads)
        })
    }
}

/// Every node reachable from `root`, in reverse recording order.
fn collect_nodes(root: &Tensor) -> Vec<Arc<Node>> {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.clone()];
    let mut nodes = Vec::new();
    while let Some(t) = stack.pop() {
        let Some(node) = t.inner.node.clone() else {
            continue;
        };
        if !seen.insert(node.seq) {
            continue;
        }
        if let Some((inputs, _)) = node
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            stack.extend(inputs.iter().cloned());
        }
        nodes.push(node);
    }
    nodes.sort_by_key(|n| std::cmp::Reverse(n.seq));
    nodes
}
