//! Layers with parameters. Each layer owns its parameter tensors (leaves with
//! `requires_grad`) and lists them by PyTorch-style names for optimizers and weight import.

pub mod conv;
pub mod conv_transpose;
pub mod drop_path;
pub mod ema;
pub mod init;
pub mod layer_norm;
pub mod linear;

pub use conv::{Conv2d, Conv3d, ConvInit};
pub use conv_transpose::ConvTranspose3d;
pub use drop_path::drop_path;
pub use ema::{copy_state, ema_update};
pub use layer_norm::LayerNorm;
pub use linear::{Linear, LinearInit};

use crate::tensor::Tensor;

/// Something with named parameters.
pub trait Module {
    /// Append `(prefix + name, tensor)` for every parameter, in a stable order.
    fn parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>);

    /// All parameters without their names.
    fn parameter_tensors(&self) -> Vec<Tensor> {
        let mut v = Vec::new();
        self.parameters("", &mut v);
        v.into_iter().map(|(_, t)| t).collect()
    }
}
