//! Activation checkpointing of a module call: [`checkpoint_module`] is
//! `autograd::checkpoint` with the module's parameters listed for it (see that module's docs for
//! what is kept, what is recomputed and why the generator is replayed).

use std::sync::Arc;

use super::state::Module;
use crate::error::Result;
use crate::tensor::Tensor;
use crate::util::Rng;

/// `f(module, inputs, rng)` recomputed in backward instead of kept: only `inputs` (and the
/// output) stay alive until the backward pass reaches the call. The module is shared into the
/// backward closure (an `Arc`, so no copy of its weights); every parameter it lists is handed
/// to the tape, so `f` may read any of them. `f` must read no other tensor that needs a gradient
/// (the recomputation reports one as an error).
pub fn checkpoint_module<M, F>(
    module: &Arc<M>,
    inputs: &[&Tensor],
    rng: &mut Rng,
    f: F,
) -> Result<Tensor>
where
    M: Module + Send + Sync + 'static,
    F: Fn(&M, &[Tensor], &mut Rng) -> Result<Tensor> + Send + Sync + 'static,
{
    let params: Vec<Tensor> = module
        .named_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let shared = module.clone();
    crate::autograd::checkpoint(inputs, &params, rng, move |xs, rng| f(&shared, xs, rng))
}
