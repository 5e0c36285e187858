//! The PVT-UNet segmentation recipe: datasets, fingerprint and plan, preprocessing, sliding-window
//! inference, prediction on the input's own grid, metrics and evaluation.
//!
//! Workflow (nnU-Net's): [`dataset::SegDataset`] → [`fingerprint::fingerprint`] →
//! [`plan::Plan`] (`plan.json`, editable) → [`preprocess`] (cached) → training → [`predict`] →
//! [`evaluate`].

pub mod dataset;
pub mod evaluate;
pub mod fingerprint;
pub mod metrics;
pub mod plan;
pub mod predict;
pub mod preprocess;
pub mod sliding_window;
