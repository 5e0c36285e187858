//! Layers with parameters. Each layer owns its parameter tensors (leaves with `requires_grad`)
//! and lists them, with its buffers, by PyTorch-style dotted name through [`Module`]; each entry
//! carries its PyTorch layout ([`Layout`]), so saving, loading and conversion never guess.
//!
//! - `state`: the [`Module`] trait and [`StateEntry`].
//! - `pytorch_layout`: every PyTorch ↔ cads weight permutation, once.
//! - `state_file`: safetensors save/load of any module (strict by default).
//! - `checkpoint`: activation checkpointing of a module call (recomputed in backward).
//! - `ema`: copy and EMA between two modules matched by name (the DINO / CADS teacher).

pub mod checkpoint;
pub mod conv;
pub mod conv_transpose;
pub mod drop_path;
pub mod ema;
pub mod init;
pub mod layer_norm;
pub mod linear;
pub mod pytorch_layout;
pub mod state;
pub mod state_file;

pub use checkpoint::checkpoint_module;
pub use conv::{Conv2d, Conv3d, ConvInit};
pub use conv_transpose::ConvTranspose3d;
pub use drop_path::{drop_path, DropPath};
pub use ema::{copy_state, ema_update};
pub use layer_norm::LayerNorm;
pub use linear::{Linear, LinearInit, MIXED_MIN_ROWS};
pub use pytorch_layout::Layout;
pub use state::{Module, StateEntry, StateKind};
pub use state_file::{
    entries_to_safetensors_bytes, load_entries_bytes, load_safetensors, load_safetensors_bytes,
    save_safetensors, to_safetensors_bytes, write_atomically, LoadOptions, LoadReport,
};
