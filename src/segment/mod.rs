//! The PVT-UNet segmentation recipe (nnU-Net's workflow on our GPU stack): dataset, fingerprint
//! and plan, preprocessing, loss, augmentation, training, sliding-window inference, metrics and
//! evaluation. Grouped by job, not by phase (../shared/DESIGN.md §1): validation inside training
//! runs the same sliding window and metrics as `cads segment predict|evaluate`.
//!
//! Workflow (nnU-Net's): [`dataset::SegDataset`] → [`fingerprint::fingerprint`] →
//! [`plan::Plan`] (`plan.json`, editable) → [`preprocess`] (cached) → [`train`] → [`predict`]
//! (on the input's own grid) → [`evaluate`].
//!
//! - `dataset`: nnU-Net raw folders, Decathlon task folders and JSON lists; label grids checked
//!   against their images.
//! - `fingerprint`, `plan`: spacings, shapes, foreground HU statistics → the editable plan.
//! - `preprocess`: canonical orientation, CT normalisation, resampling, the on-disk cache;
//!   `cubic`: the cubic B-spline image resampling.
//! - `config`: the training run's typed settings (patch, batch, optimizer, schedule, freezing).
//! - `loss`: Dice + cross-entropy with deep-supervision weights; `global_batch_dice`: batch
//!   Dice over a batch split across data-parallel ranks (global sums, exact gradient).
//! - `augment`: nnU-Net's spatial and intensity augmentation and per-class foreground
//!   oversampling (host side).
//! - `train`: the training loop behind `cads segment train`.
//! - `sliding_window`, `predict`: Gaussian-weighted sliding window, mirroring TTA, label maps on
//!   the input's grid.
//! - `metrics`, `evaluate`: Dice, HD95, NSD; `cads segment evaluate`.
//!
//! The model itself is `models::pvt_unet` (a model, one layer down).

pub mod augment;
pub mod config;
pub mod cubic;
pub mod curves;
pub mod dataset;
mod dataset_json;
pub mod evaluate;
pub mod fingerprint;
pub mod global_batch_dice;
pub mod loss;
pub mod metrics;
pub mod plan;
pub mod predict;
pub mod preprocess;
mod run_record;
pub mod sliding_window;
pub mod train;
pub mod train_data;
