//! CADS batches: each CT prepared once (tiles and DRR), then batches of two augmented views and
//! the DRR drawn from the prepared volumes (run them on `data::loader::Prefetcher`).

use super::cads_views::{cads_sample, CadsViewConfig, DrrProjector};
use super::tiles::{cads_tiles, extract_tile, TilingConfig};
use crate::data::orientation::to_canonical;
use crate::data::preprocess::{resample_to_spacing, Interp, Patch};
use crate::data::volume::Volume;
use crate::dist::shard::{sample_rng, EpochSampler};
use crate::error::{Error, Result};
use crate::nn::drop_path::SampleWindow;
use crate::util::Rng;

/// A CT prepared once for CADS pretraining: its tiles (HU, 1 mm, RAS, `[D, H, W]`) and its DRR.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug)]
pub struct CadsVolume {
    pub tiles: Vec<Patch>,
    pub drr: Patch,
}

/// Resample to 1 mm (trilinear), reorient to RAS, tile, and project the DRR once.
pub fn prepare_cads_volume(
    ct: &Volume,
    tiling: &TilingConfig,
    projector: &dyn DrrProjector,
) -> Result<CadsVolume> {
    let (ras, _) = to_canonical(ct)?;
    let iso = resample_to_spacing(&ras, [1.0; 3], Interp::Linear)?;
    let p = Patch::from_volume(&iso);
    let tiles = cads_tiles(p.shape, tiling)?
        .iter()
        .map(|t| extract_tile(&p, t))
        .collect();
    Ok(CadsVolume {
        tiles,
        drr: projector.project(&iso)?,
    })
}

/// A CADS batch, each `[B, …]` flattened: x1 and x2 `[B, 16, 48, 48]`, drr `[B, 1, 96, 96]`.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct CadsBatch {
    pub batch: usize,
    pub x1: Vec<f32>,
    pub x2: Vec<f32>,
    pub drr: Vec<f32>,
}

/// Make CADS batch `b`: `batch` samples, each from a uniformly chosen volume and tile.
pub fn make_cads_batch(
    vols: &[CadsVolume],
    cfg: &CadsViewConfig,
    batch: usize,
    rng: &mut Rng,
) -> Result<CadsBatch> {
    if vols.is_empty() || vols.iter().any(|v| v.tiles.is_empty()) {
        return Err(Error::invalid(
            "make_cads_batch",
            "volumes with at least one tile",
            vols.len(),
        ));
    }
    let mut out = CadsBatch {
        batch,
        x1: Vec::new(),
        x2: Vec::new(),
        drr: Vec::new(),
    };
    for _ in 0..batch {
        let v = &vols[rng.below(vols.len())];
        let t = &v.tiles[rng.below(v.tiles.len())];
        let s = cads_sample(t, &v.drr, cfg, rng)?;
        out.x1.extend_from_slice(&s.x1.data);
        out.x2.extend_from_slice(&s.x2.data);
        out.drr.extend_from_slice(&s.drr.data);
    }
    Ok(out)
}

/// The tiles of `vols` as `(volume, tile)` pairs, in order: the items an [`EpochSampler`] over
/// the pretraining data permutes.
pub fn tile_items(vols: &[CadsVolume]) -> Vec<(usize, usize)> {
    vols.iter()
        .enumerate()
        .flat_map(|(v, vol)| (0..vol.tiles.len()).map(move |t| (v, t)))
        .collect()
}

/// The samples `window` of global step `step` (one rank's shard; the whole batch with
/// `SampleWindow::whole`): global sample i reads tile `items[sampler.item(step, i)]` and draws
/// its views from `dist::sample_rng(seed, step, i)`, so the shards of N ranks together are
/// exactly the batch one device makes (`crate::dist::shard`).
pub fn make_cads_batch_window(
    vols: &[CadsVolume],
    items: &[(usize, usize)],
    cfg: &CadsViewConfig,
    sampler: &EpochSampler,
    seed: u64,
    step: u64,
    window: SampleWindow,
) -> Result<CadsBatch> {
    let op = "make_cads_batch_window";
    window.validate()?;
    if items.len() != sampler.items || items.is_empty() {
        return Err(Error::invalid(
            op,
            format!("{} tiles (the sampler's)", sampler.items),
            items.len(),
        ));
    }
    let mut out = CadsBatch {
        batch: window.count,
        x1: Vec::new(),
        x2: Vec::new(),
        drr: Vec::new(),
    };
    for i in window.offset..window.offset + window.count {
        let (v, t) = items[sampler.item(step, i)];
        let vol = vols
            .get(v)
            .filter(|vol| t < vol.tiles.len())
            .ok_or_else(|| {
                Error::invalid(op, "tiles of the given volumes", format!("({v}, {t})"))
            })?;
        let mut rng = sample_rng(seed, step, i);
        let s = cads_sample(&vol.tiles[t], &vol.drr, cfg, &mut rng)?;
        out.x1.extend_from_slice(&s.x1.data);
        out.x2.extend_from_slice(&s.x2.data);
        out.drr.extend_from_slice(&s.drr.data);
    }
    Ok(out)
}
