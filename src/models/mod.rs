//! Networks built from `nn` layers: the PVTv2 encoder (3D/2D), the DINO head, PVT-UNet, a small
//! 3D conv U-Net.

pub mod dino_head;
pub mod pvt;
pub mod pvt_unet;
pub mod unet;

pub use dino_head::{DinoHead, DinoHeadConfig};
pub use pvt_unet::{PvtUnet, PvtUnetConfig};
pub use unet::{UNet3d, UNet3dConfig};
