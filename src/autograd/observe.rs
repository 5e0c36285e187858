//! Knowing, during the backward pass, when a leaf's gradient is final.
//!
//! The tape walks its nodes in reverse recording order and adds every contribution to an input's
//! gradient when the node that consumes the input runs (the [`Gradients`] store). A leaf's
//! gradient can therefore change only while some node that has it as an input is still to come:
//! once the LAST of its consumers has been processed (run, or skipped because no gradient flowed
//! into it), nothing will ever be added to it again. So, before the sweep,
//!
//! ```text
//!   remaining(leaf) = Σ over the nodes n of the tape: (# times leaf is an input of n that needs a gradient)
//! ```
//!
//! and after each node, `remaining` of its watched inputs drops by their occurrences; at zero the
//! leaf is final and the observer is told at once, with the gradient (or `None` when no
//! contribution reached it). This is what data-parallel training needs to start the all-reduce of
//! early layers' gradients while the backward pass of the others still runs (PyTorch DDP's
//! autograd hooks; `dist::overlap`).
//!
//! Every watched tensor is reported exactly once:
//! - before the first node, in the order given, each one no node consumes (`remaining` = 0): a
//!   tensor outside the graph (`None`), or the root itself when it is watched (its upstream
//!   gradient);
//! - then during the sweep, right after the node that was its last consumer, in that node's input
//!   order.
//!
//! Observing changes nothing in what is computed: the same nodes run in the same order on the same
//! gradients, so the returned gradients are bit for bit those of `backward_with`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Gradients, Node};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The countdown of the watched leaves over one sweep.
pub(super) struct Watch<'w, 'f> {
    watched: &'w [Tensor],
    /// Consumers (input occurrences) still to be processed, per watched leaf.
    remaining: Vec<usize>,
    /// Per node of the sweep (same order): the watched indices among its inputs, repeats kept.
    per_node: Vec<Vec<usize>>,
    reported: Vec<bool>,
    on_final: &'f mut dyn FnMut(usize, Option<&Tensor>) -> Result<()>,
}

impl<'w, 'f> Watch<'w, 'f> {
    /// Count the consumers of every watched leaf among `nodes` (the sweep's nodes, in its order).
    /// Watched tensors must be leaves (a tensor with a tape node is consumed by the sweep, its
    /// gradient never kept) and each listed once.
    pub(super) fn new(
        watched: &'w [Tensor],
        nodes: &[Arc<Node>],
        on_final: &'f mut dyn FnMut(usize, Option<&Tensor>) -> Result<()>,
    ) -> Result<Watch<'w, 'f>> {
        let op = "backward_observed";
        let mut index: HashMap<u64, usize> = HashMap::with_capacity(watched.len());
        for (i, t) in watched.iter().enumerate() {
            if t.inner.node.is_some() {
                return Err(Error::invalid(
                    op,
                    "watched tensors that are leaves (parameters)",
                    format!("watched tensor {i} (shape {:?}) has a tape node", t.shape()),
                ));
            }
            if index.insert(t.id(), i).is_some() {
                return Err(Error::invalid(
                    op,
                    "each watched tensor once",
                    format!("tensor id {} listed twice", t.id()),
                ));
            }
        }
        let mut remaining = vec![0usize; watched.len()];
        let per_node = nodes
            .iter()
            .map(|node| {
                let state = node.state.lock().unwrap_or_else(|e| e.into_inner());
                let Some((inputs, _)) = state.as_ref() else {
                    return Vec::new();
                };
                inputs
                    .iter()
                    .filter(|x| x.requires_grad)
                    .filter_map(|x| index.get(&x.id).copied())
                    .inspect(|&i| remaining[i] += 1)
                    .collect()
            })
            .collect();
        Ok(Watch {
            watched,
            remaining,
            per_node,
            reported: vec![false; watched.len()],
            on_final,
        })
    }

    fn report(&mut self, i: usize, grads: &Gradients) -> Result<()> {
        if std::mem::replace(&mut self.reported[i], true) {
            return Ok(());
        }
        (self.on_final)(i, grads.get(&self.watched[i]))
    }

    /// Before the first node: the leaves no node consumes are final already.
    pub(super) fn start(&mut self, grads: &Gradients) -> Result<()> {
        for i in 0..self.watched.len() {
            if self.remaining[i] == 0 {
                self.report(i, grads)?;
            }
        }
        Ok(())
    }

    /// After node `k` of the sweep was processed (run or skipped).
    pub(super) fn node_done(&mut self, k: usize, grads: &Gradients) -> Result<()> {
        let inputs = std::mem::take(&mut self.per_node[k]);
        for &i in &inputs {
            self.remaining[i] -= 1;
        }
        for &i in &inputs {
            if self.remaining[i] == 0 {
                self.report(i, grads)?;
            }
        }
        Ok(())
    }

    /// After the sweep: every watched leaf must have been reported (a bug in the countdown
    /// otherwise, which would make a caller wait forever).
    pub(super) fn finish(self) -> Result<()> {
        match self.reported.iter().position(|r| !r) {
            None => Ok(()),
            Some(i) => Err(Error::Autograd {
                op: "backward_observed",
                message: format!(
                    "watched tensor {i} was never reported final ({} consumers left)",
                    self.remaining[i]
                ),
            }),
        }
    }
}
