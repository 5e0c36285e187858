//! The CADS pretraining recipe (layer `pretrain`, above `data` and `drr`): the view generator,
//! the per-volume DRR and its cache, the CADS tiling, the GPU resampling used to bring CTs to
//! 1 mm, and batch preparation (moved out of `data`, which is host-only and generic, and
//! `drr`); the recipe's config and presets (`config`), the student/teacher (`model`), the loss
//! with centering and collapse monitors (`loss`), one training step with its schedules
//! (`step`), and what a data-parallel step makes global besides the gradients (`replica_stats`).

pub mod batch;
pub mod cache;
pub mod cads_views;
pub mod config;
pub mod drr_cache;
pub mod engine;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod replica_stats;
pub mod resample;
pub mod resume;
pub mod run;
pub mod step;
pub mod tiles;

pub use batch::{make_cads_batch, prepare_cads_volume, CadsBatch, CadsVolume};
pub use config::CadsConfig;
pub use drr_cache::read_ct;
pub use loss::{CadsLoss, LossOutput};
pub use model::{CadsModel, CadsStudent, CadsTeacher, StudentOutput, TeacherOutput};
pub use resample::resample_to_spacing_gpu;
pub use step::{CadsSchedules, CadsTrainer, ScheduleValues, StepInput, StepStats, StepValues};
pub use tiles::{cads_tiles, extract_tile, Tile, TilingConfig};
