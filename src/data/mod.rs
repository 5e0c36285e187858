//! Data: NIfTI read/write, orientation, the synthetic phantom and sphere volumes, preprocessing
//! and augmentation, dataset listing and the prefetcher; DeepLesion's PNG slices as volumes.
//! Host-only and generic: nothing here touches the GPU or knows a recipe (the CADS views, DRR
//! cache and tiling are in `pretrain`).
//!
//! Conventions (the crate docs, [Axis conventions](crate#axis-conventions), has the full table): a [`Volume`] holds `[X, Y, Z]` voxels with X fastest (NIfTI order), which read as a
//! tensor is `[D, H, W] = [Z, Y, X]`. After [`orientation::to_canonical`] the voxel axes point to
//! Right, Anterior, Superior (RAS, NIfTI's world frame), so W = x → R, H = y → A, D = z → S.

pub mod augment;
pub mod deeplesion;
pub mod dicom;
mod dicom_volume;
pub mod loader;
pub mod nifti;
mod nifti_header;
mod nifti_sink;
pub mod nifti_write;
pub mod nrrd;
mod nrrd_header;
pub mod orientation;
pub mod phantom;
pub mod preprocess;
pub mod read;
pub mod spheres;
pub mod typed_volume;
pub mod volume;

pub use nifti::{read_nifti, read_nifti_typed, write_nifti, write_typed_nifti};
pub use read::{
    read_typed_volume, read_typed_volume_with, read_volume, read_volume_with, ReadOptions,
    VolumeFormat,
};
pub use typed_volume::{Scaling, TypedVolume, Voxels};
pub use volume::{check_label_grid, Affine, Datatype, Volume};
