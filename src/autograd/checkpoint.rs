//! Activation checkpointing: trade compute for memory by recomputing a function in backward.
//!
//! A recorded op keeps what its backward needs (inputs, intermediate results) alive until the
//! backward pass reaches it, so a deep network holds every block's internals at once.
//! [`checkpoint`] runs `f` with recording off, so its internals are released as soon as the
//! forward has used them, and records ONE node whose inputs are `f`'s inputs and the parameters
//! `f` reads. When the backward pass reaches that node it
//!
//! 1. re-runs `f` with recording on (inside the tape's own `no_grad`, via `Gpu::enable_grad`) on
//!    fresh leaves holding the saved input values, with the generator state `f` saw the first
//!    time (so random draws such as drop path repeat exactly) and under the autocast policy of
//!    the forward (`Gpu::autocast`: a backward run outside the forward's autocast still
//!    recomputes in mixed precision what ran mixed);
//! 2. back-propagates the incoming gradient through that small graph (`backward_with`);
//! 3. hands the outer tape the gradients of the inputs and of the parameters.
//!
//! Peak memory thus holds the inputs of every checkpointed call plus the internals of one
//! recomputed call at a time, for the price of one more forward of each.
//!
//! Correctness rests on two rules, both checked: every tensor `f` reads that needs a gradient
//! must be passed in (`inputs` or `params`), since a gradient the inner backward finds for any
//! other leaf would be dropped; and the recomputation must give the output the forward gave
//! (same shape here; same values because the kernels are deterministic and the generator is
//! replayed).

use super::{record, Gradients};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::util::Rng;

/// `f(inputs, rng)` without keeping its internals for backward; see the module docs. `params`
/// lists every tensor `f` reads besides `inputs` that may need a gradient (a module's
/// parameters). Outside recording, or when nothing needs a gradient, this is just `f`.
pub fn checkpoint<F>(inputs: &[&Tensor], params: &[Tensor], rng: &mut Rng, f: F) -> Result<Tensor>
where
    F: Fn(&[Tensor], &mut Rng) -> Result<Tensor> + Send + Sync + 'static,
{
    let op = "checkpoint";
    let Some(first) = inputs.first() else {
        return Err(Error::invalid(op, "at least one input", 0));
    };
    let gpu = first.gpu().clone();
    let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    let wants_grad = inputs
        .iter()
        .map(|t| t.requires_grad())
        .chain(params.iter().map(|t| t.requires_grad()));
    if !gpu.grad_enabled() || !wants_grad.clone().any(|w| w) {
        return f(&owned, rng);
    }
    let mut ids: Vec<u64> = inputs
        .iter()
        .map(|t| t.id())
        .chain(params.iter().map(|t| t.id()))
        .collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            op,
            "each tensor once among inputs and params (a repeat would lose its gradient)",
            "a tensor listed twice",
        ));
    }

    let replay = rng.clone();
    let precision = gpu.precision();
    // Values only: the saved inputs carry no tape node, so nothing upstream is kept for them.
    let saved: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let out = gpu.no_grad(|| f(&saved, rng))?;
    let out_shape = out.shape().to_vec();
    let input_wants: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    let params_owned: Vec<Tensor> = params.to_vec();

    let backward = move |grad: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let gpu = grad.gpu().clone();
        // Fresh leaves with the saved values, wanting a gradient where the original input did.
        let leaves: Vec<Tensor> = saved
            .iter()
            .zip(&input_wants)
            .map(|(t, &w)| t.detach().requires_grad_(w))
            .collect();
        let mut rng = replay;
        let mut grads: Gradients = gpu.enable_grad(|| -> Result<Gradients> {
            let y = gpu.autocast(precision, || f(&leaves, &mut rng))?;
            if y.shape() != out_shape.as_slice() {
                return Err(Error::Autograd {
                    op,
                    message: format!(
                        "the recomputation gave shape {:?}, the forward {:?}",
                        y.shape(),
                        out_shape
                    ),
                });
            }
            if !y.requires_grad() {
                return Ok(Gradients::default());
            }
            y.backward_with(grad)
        })?;
        let mut result: Vec<Option<Tensor>> = leaves.iter().map(|t| grads.remove(t)).collect();
        result.extend(params_owned.iter().map(|t| grads.remove(t)));
        if !grads.is_empty() {
            return Err(Error::Autograd {
                op,
                message: format!(
                    "the checkpointed function reached {} tensor(s) that need a gradient but \
                     are neither inputs nor params; pass them in, or their gradients are lost",
                    grads.len()
                ),
            });
        }
        Ok(result)
    };
    let recorded: Vec<&Tensor> = inputs.iter().copied().chain(params.iter()).collect();
    Ok(record(out, op, &recorded, backward))
}
