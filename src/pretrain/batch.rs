//! CADS batches: each CT prepared once (tiles and DRR), then batches of two augmented views and
//! the DRR drawn from the prepared volumes (run them on `data::loader::Prefetcher`).

use super::cads_views::{cads_sample, CadsViewConfig, DrrProjector};
use super::tiles::{cads_tiles, extract_tile, Tile, TilingConfig};
use crate::data::orientation::to_canonical;
use crate::data::preprocess::{resample_to_spacing, Interp, Patch};
use crate::data::volume::Volume;
use crate::dist::shard::{sample_rng, EpochSampler};
use crate::error::{Error, Result};
use crate::nn::drop_path::SampleWindow;
use crate::util::size::checked_mul;
use crate::util::Rng;
use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A CT prepared once for CADS pretraining: its tiles (HU, 1 mm, RAS, `[D, H, W]`) and its DRR.
/// The tiles are held in memory ([`CadsVolume::in_memory`]) or read from the preprocessing cache
/// when a sample needs one ([`CadsVolume::on_disk`], what the cache returns), so a run over
/// thousands of CTs holds their DRRs and not their voxels (the operating system's file cache keeps
/// the hot tiles in memory when it can).
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug)]
pub struct CadsVolume {
    tiles: TileStore,
    pub drr: Patch,
}

#[derive(Clone, Debug)]
enum TileStore {
    Memory(Vec<Patch>),
    /// A `[D, H, W]` f32 (little-endian) volume at `offset` in `path`, tiled by depth only
    /// (whole planes: the cache crops in-plane before storing), so tile t is the contiguous bytes
    /// of its slices.
    File {
        path: PathBuf,
        offset: u64,
        shape: [usize; 3],
        tiles: Vec<Tile>,
    },
}

impl CadsVolume {
    /// Tiles held in memory.
    pub fn in_memory(tiles: Vec<Patch>, drr: Patch) -> CadsVolume {
        CadsVolume {
            tiles: TileStore::Memory(tiles),
            drr,
        }
    }

    /// Tiles read on demand from the `[D, H, W]` f32 little-endian volume stored at `offset` in
    /// `path`; `tiles` must span whole planes (start `[d, 0, 0]`, size `[depth, H, W]`).
    pub fn on_disk(
        path: PathBuf,
        offset: u64,
        shape: [usize; 3],
        tiles: Vec<Tile>,
        drr: Patch,
    ) -> Result<CadsVolume> {
        let bad = tiles.iter().find(|t| {
            t.start[1..] != [0, 0]
                || t.size[1..] != shape[1..]
                || t.start[0]
                    .checked_add(t.size[0])
                    .is_none_or(|end| end > shape[0])
        });
        if let Some(t) = bad {
            return Err(Error::invalid(
                "CadsVolume::on_disk",
                format!("tiles of whole planes of a {shape:?} volume"),
                format!("{t:?}"),
            ));
        }
        Ok(CadsVolume {
            tiles: TileStore::File {
                path,
                offset,
                shape,
                tiles,
            },
            drr,
        })
    }

    /// How many tiles the volume has.
    pub fn tile_count(&self) -> usize {
        match &self.tiles {
            TileStore::Memory(t) => t.len(),
            TileStore::File { tiles, .. } => tiles.len(),
        }
    }

    /// The shape `[D, H, W]` of tile `t` (without reading it).
    pub fn tile_shape(&self, t: usize) -> Result<[usize; 3]> {
        match &self.tiles {
            TileStore::Memory(tiles) => tiles.get(t).map(|p| p.shape),
            TileStore::File { tiles, .. } => tiles.get(t).map(|tile| tile.size),
        }
        .ok_or_else(|| self.no_tile(t))
    }

    fn no_tile(&self, t: usize) -> Error {
        Error::invalid(
            "CadsVolume::tile",
            format!("a tile index below {}", self.tile_count()),
            t,
        )
    }

    /// Tile `t`: borrowed from memory, or read from its file.
    pub fn tile(&self, t: usize) -> Result<Cow<'_, Patch>> {
        match &self.tiles {
            TileStore::Memory(tiles) => tiles
                .get(t)
                .map(Cow::Borrowed)
                .ok_or_else(|| self.no_tile(t)),
            TileStore::File {
                path,
                offset,
                shape,
                tiles,
            } => {
                let tile = tiles.get(t).ok_or_else(|| self.no_tile(t))?;
                read_slab(path, *offset, *shape, tile).map(Cow::Owned)
            }
        }
    }
}

/// The slices of `tile` from the `[D, H, W]` f32 volume at `offset` in `path`.
fn read_slab(path: &Path, offset: u64, shape: [usize; 3], tile: &Tile) -> Result<Patch> {
    let io = |source| Error::Io {
        op: "CadsVolume::tile (reading the preprocessing cache)",
        path: path.display().to_string(),
        source,
    };
    const OP: &str = "CadsVolume::tile";
    let plane = checked_mul(
        OP,
        "plane bytes",
        checked_mul(OP, "plane", shape[1], shape[2])?,
        4,
    )?;
    let mut bytes = vec![0u8; checked_mul(OP, "tile bytes", tile.size[0], plane)?];
    let skip = checked_mul(OP, "tile offset", tile.start[0], plane)?;
    let at = offset
        .checked_add(skip as u64)
        .ok_or_else(|| Error::invalid(OP, "a file offset below 2^64", offset))?;
    let mut f = std::fs::File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(at)).map_err(io)?;
    f.read_exact(&mut bytes).map_err(io)?;
    let data = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Patch::new(data, tile.size)
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
    Ok(CadsVolume::in_memory(tiles, projector.project(&iso)?))
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
    if vols.is_empty() || vols.iter().any(|v| v.tile_count() == 0) {
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
        let t = v.tile(rng.below(v.tile_count()))?;
        let s = cads_sample(&t, &v.drr, cfg, rng)?;
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
        .flat_map(|(v, vol)| (0..vol.tile_count()).map(move |t| (v, t)))
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
            .filter(|vol| t < vol.tile_count())
            .ok_or_else(|| {
                Error::invalid(op, "tiles of the given volumes", format!("({v}, {t})"))
            })?;
        let mut rng = sample_rng(seed, step, i);
        let tile = vol.tile(t)?;
        let s = cads_sample(&tile, &vol.drr, cfg, &mut rng)?;
        out.x1.extend_from_slice(&s.x1.data);
        out.x2.extend_from_slice(&s.x2.data);
        out.drr.extend_from_slice(&s.drr.data);
    }
    Ok(out)
}
