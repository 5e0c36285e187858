//! Networks built from `nn` layers: the PVTv2 encoder (3D/2D), later the DINO head and PVT-UNet.

pub mod pvt;
