//! The PVT-UNet segmentation recipe (nnU-Net's workflow on our GPU stack): dataset, fingerprint
//! and plan, preprocessing, loss, augmentation, training, sliding-window inference, metrics and
//! evaluation. Grouped by job, not by phase (../shared/DESIGN.md §1): validation inside training
//! runs the same sliding window and metrics as `cads segment predict|evaluate`.
//!
//! - `config`: the training run's typed settings (patch, batch, optimizer, schedule, freezing).
//! - `loss`: Dice + cross-entropy with deep-supervision weights.
//! - `augment`: nnU-Net's spatial and intensity augmentation and per-class foreground
//!   oversampling (host side).
//! - `train`: the training loop behind `cads segment train`.
//!
//! The model itself is `models::pvt_unet` (a model, one layer down).

pub mod augment;
pub mod config;
pub mod curves;
pub mod loss;
pub mod train;
