//! The CADS pretraining recipe (layer `pretrain`, above `data` and `drr`): the view generator,
//! the per-volume DRR and its cache, the CADS tiling, the GPU resampling used to bring CTs to
//! 1 mm, and batch preparation. The pretraining issue builds the config/presets, heads, loss,
//! teacher and run here; for now this is the recipe code moved out of `data` (which is
//! host-only and generic) and `drr` (which no longer imports `data`).

pub mod batch;
pub mod cache;
pub mod cads_views;
pub mod drr_cache;
pub mod plot;
pub mod resample;
pub mod run;
pub mod tiles;

pub use batch::{make_cads_batch, prepare_cads_volume, CadsBatch, CadsVolume};
pub use drr_cache::read_ct;
pub use resample::resample_to_spacing_gpu;
pub use tiles::{cads_tiles, extract_tile, Tile, TilingConfig};
