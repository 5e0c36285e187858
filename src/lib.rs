//! cads: GPU-native deep learning on wgpu with hand-written WGSL compute shaders, for the CADS
//! self-supervised CT encoder and PVT-UNet 3D segmentation.
//!
//! # Dimension legend
//!
//! | letter | meaning |
//! |---|---|
//! | N | batch |
//! | C | channels (activations are channels-last: `[N, D, H, W, C]`, images `[N, H, W, C]`) |
//! | D, H, W | depth, height, width of a volume (voxels) or image (pixels) |
//! | L | tokens (`L = D·H·W` of a stage grid), so tokens `[N, L, C]` share memory with the volume |
//! | M | keys/values of attention (after spatial reduction) |
//! | E | embedding width |
//! | heads | attention heads, head dim = E / heads |
//!
//! # Layers
//!
//! `gpu` → `tensor` → `autograd` → `ops` (with `reference` as their CPU specification) → higher
//! layers. A lower layer never imports a higher one.

pub mod autograd;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod drr;
pub mod error;
pub mod gpu;
pub mod infer;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod reference;
pub mod tensor;
pub mod train;
pub mod util;

pub use autograd::Gradients;
pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::Tensor;
