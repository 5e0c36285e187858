//! Named state: every layer and model lists its parameters and buffers by dotted PyTorch-style
//! name, each with the PyTorch layout it converts to. One trait, [`Module`]; everything that
//! needs a module's tensors by name (optimizers, safetensors files, checkpoints, EMA, weight
//! import) is written once against it.
//!
//! Invariants an implementation keeps:
//! - names are unique and the order is stable (construction order), so two modules built from
//!   the same config list the same names in the same order (EMA and checkpoints pair by name);
//! - a composite pushes its children with `prefix + child_name + "."`, a leaf pushes
//!   `prefix + "weight"` etc., exactly as `torch.nn.Module.state_dict()` spells them;
//! - parameters are leaves with `requires_grad`; buffers are state that is saved and loaded but
//!   not trained (running statistics, a DINO center); modules without state (DropPath,
//!   InstanceNorm without affine) push nothing.

use super::pytorch_layout::Layout;
use crate::tensor::Tensor;

/// Whether a state tensor is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// A trainable leaf (optimizers see these).
    Parameter,
    /// Saved and loaded, never handed to an optimizer.
    Buffer,
}

/// One named state tensor.
#[derive(Clone, Debug)]
pub struct StateEntry {
    /// Dotted name, e.g. `block1.0.attn.q.weight`.
    pub name: String,
    /// The tensor itself (a clone shares the storage: writing to it changes the module).
    pub tensor: Tensor,
    /// How its cads layout maps to PyTorch's.
    pub layout: Layout,
    pub kind: StateKind,
}

impl StateEntry {
    /// A parameter `prefix + name`.
    pub fn parameter(prefix: &str, name: &str, tensor: &Tensor, layout: Layout) -> StateEntry {
        StateEntry {
            name: format!("{prefix}{name}"),
            tensor: tensor.clone(),
            layout,
            kind: StateKind::Parameter,
        }
    }

    /// A buffer `prefix + name`.
    pub fn buffer(prefix: &str, name: &str, tensor: &Tensor, layout: Layout) -> StateEntry {
        StateEntry {
            name: format!("{prefix}{name}"),
            tensor: tensor.clone(),
            layout,
            kind: StateKind::Buffer,
        }
    }

    /// The shape the tensor has in PyTorch (what a safetensors file written by us or by the
    /// converter stores).
    pub fn pytorch_shape(&self) -> crate::error::Result<Vec<usize>> {
        self.layout.pytorch_shape(self.tensor.shape())
    }
}

/// Something with named state (parameters and buffers).
pub trait Module {
    /// Append every state tensor, names prefixed with `prefix`, in a stable order.
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>);

    /// Every state tensor, names without a prefix.
    fn named_state(&self) -> Vec<StateEntry> {
        let mut out = Vec::new();
        self.state("", &mut out);
        out
    }

    /// `(name, tensor)` of every parameter (no buffers), in the stable order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.named_state()
            .into_iter()
            .filter(|e| e.kind == StateKind::Parameter)
            .map(|e| (e.name, e.tensor))
            .collect()
    }

    /// `(name, tensor)` of every buffer.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.named_state()
            .into_iter()
            .filter(|e| e.kind == StateKind::Buffer)
            .map(|e| (e.name, e.tensor))
            .collect()
    }

    /// Append `(prefix + name, tensor)` for every parameter (no buffers).
    fn parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        let mut state = Vec::new();
        self.state(prefix, &mut state);
        out.extend(
            state
                .into_iter()
                .filter(|e| e.kind == StateKind::Parameter)
                .map(|e| (e.name, e.tensor)),
        );
    }

    /// All parameters without their names (what an optimizer takes).
    fn parameter_tensors(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Number of parameter elements.
    fn parameter_count(&self) -> usize {
        self.parameter_tensors().iter().map(Tensor::numel).sum()
    }
}

/// A weight and an optional bias, as Linear and the convs have them.
pub(crate) fn weight_and_bias(
    prefix: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    layout: Layout,
    out: &mut Vec<StateEntry>,
) {
    out.push(StateEntry::parameter(prefix, "weight", weight, layout));
    if let Some(b) = bias {
        out.push(StateEntry::parameter(prefix, "bias", b, Layout::Plain));
    }
}
