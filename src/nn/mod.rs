//! Layers with parameters. Each layer owns its parameter tensors (leaves with requires_grad) and
//! exposes them through `parameters()` for optimizers.

pub mod conv;

pub use conv::{Conv2d, Conv3d, ConvInit};
