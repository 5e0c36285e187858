//! Networks built from `nn` layers: the PVTv2 encoder (3D/2D), the DINO head, a small 3D conv
//! U-Net; later PVT-UNet.

pub mod dino_head;
pub mod pvt;
pub mod unet;

pub use dino_head::{DinoHead, DinoHeadConfig};
pub use unet::{UNet3d, UNet3dConfig};
