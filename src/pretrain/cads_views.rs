//! The CADS view generator (CADS.md, "Pretraining data and recipe") and the DRR slot.
//!
//! Per sample, from one 24-slice tile of a CT at 1 mm (HU):
//! 1. a shared region of 24 × r × r voxels, r = round(96 · U(1.4, 1.8)), at a uniform position in
//!    the tile (padded with −1024 HU where the tile is smaller);
//! 2. clip to [−1024, 1024] HU and divide by 1024 → [−1, 1];
//! 3. for each of the two views independently: a crop of 16 × v × v, v = round(96 · U(0.8, 1.2)),
//!    at a uniform position in the region; a flip of each axis with probability 0.8; a resize of
//!    the plane to 16 × 96 × 96 (bilinear within slices, since depth stays 16); intensity
//!    augmentation ([`IntensityAug`]);
//! 4. "uniform sampling": split the 16×96×96 view into 4×12×12 patches of 4×8×8 voxels, keep one
//!    random patch of every 2×2 in-plane group and re-pack → 16×48×48.
//!
//! The third view is the DRR of the whole CT, computed once per volume by a [`DrrProjector`]; no
//! augmentation. Until the DRR engine provides the CADS preset, [`ParallelLineIntegral`] fills the
//! slot: the frontal (antero-posterior) line integral of max(0, HU + 1024), min-max scaled to
//! [−1, 1] and resized to 96 × 96 ignoring aspect ratio.

use crate::data::augment::{draw_flips, flip, IntensityAug};
use crate::data::orientation::to_canonical;
use crate::data::preprocess::{clip_scale, crop_pad, resize, Interp, Patch};
use crate::data::volume::Volume;
use crate::error::{Error, Result};
use crate::util::Rng;

/// Every number of the CADS view recipe, with CADS.md's defaults.
#[derive(Clone, Debug)]
pub struct CadsViewConfig {
    /// Slices of the shared region (the tile depth).
    pub region_depth: usize,
    /// Slices of each view.
    pub view_depth: usize,
    /// In-plane side of a view after resizing, voxels.
    pub view_side: usize,
    /// Region side = view_side · U(lo, hi).
    pub region_scale: (f64, f64),
    /// View crop side = view_side · U(lo, hi).
    pub view_scale: (f64, f64),
    /// Probability of flipping each axis.
    pub flip_p: f64,
    /// HU clip range, then divide by `hu_scale`.
    pub hu_clip: (f32, f32),
    pub hu_scale: f32,
    pub intensity: IntensityAug,
    /// Uniform-sampling patch `[d, h, w]` voxels; one of every 2×2 in-plane group is kept.
    pub sampling_patch: [usize; 3],
}

impl Default for CadsViewConfig {
    fn default() -> Self {
        CadsViewConfig {
            region_depth: 24,
            view_depth: 16,
            view_side: 96,
            region_scale: (1.4, 1.8),
            view_scale: (0.8, 1.2),
            flip_p: 0.8,
            hu_clip: (-1024.0, 1024.0),
            hu_scale: 1024.0,
            intensity: IntensityAug::default(),
            sampling_patch: [4, 8, 8],
        }
    }
}

/// One pretraining sample: two CT views `[16, 48, 48]` and the DRR `[1, 96, 96]`.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct CadsSample {
    pub x1: Patch,
    pub x2: Patch,
    pub drr: Patch,
}

/// Uniform sampling: `[D, H, W]` split into patches of `patch` voxels; from every 2×2 in-plane
/// group of patches one is kept (uniformly), and the kept patches are re-packed in their group
/// order → `[D, H/2, W/2]`. H and W must be multiples of 2·patch, D of patch.
pub fn uniform_sample(view: &Patch, patch: [usize; 3], rng: &mut Rng) -> Result<Patch> {
    let s = view.shape;
    if patch.contains(&0)
        || !s[0].is_multiple_of(patch[0])
        || !s[1].is_multiple_of(2 * patch[1])
        || !s[2].is_multiple_of(2 * patch[2])
    {
        return Err(Error::invalid(
            "uniform_sample",
            format!(
                "a shape divisible by [{}, {}, {}]",
                patch[0],
                2 * patch[1],
                2 * patch[2]
            ),
            format!("{s:?}"),
        ));
    }
    let out_shape = [s[0], s[1] / 2, s[2] / 2];
    let mut out = Patch::filled(out_shape, 0.0);
    let groups = [
        s[0] / patch[0],
        s[1] / (2 * patch[1]),
        s[2] / (2 * patch[2]),
    ];
    for gd in 0..groups[0] {
        for gh in 0..groups[1] {
            for gw in 0..groups[2] {
                let pick = rng.below(4);
                let (ph, pw) = (2 * gh + pick / 2, 2 * gw + pick % 2);
                for d in 0..patch[0] {
                    for h in 0..patch[1] {
                        let src = view.idx(gd * patch[0] + d, ph * patch[1] + h, pw * patch[2]);
                        let dst = out.idx(gd * patch[0] + d, gh * patch[1] + h, gw * patch[2]);
                        out.data[dst..dst + patch[2]]
                            .copy_from_slice(&view.data[src..src + patch[2]]);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Start of a random crop of `k` voxels along an axis of `n`: uniform over the valid starts when
/// the crop fits, else centred (negative: the crop pads both sides).
fn random_start(n: usize, k: usize, rng: &mut Rng) -> isize {
    if n >= k {
        rng.below(n - k + 1) as isize
    } else {
        -(((k - n) / 2) as isize)
    }
}

/// One augmented CT view from the scaled region: crop, flips, resize, intensity, uniform sampling.
fn one_view(region: &Patch, cfg: &CadsViewConfig, rng: &mut Rng) -> Result<Patch> {
    let side = ((cfg.view_side as f64 * rng.range(cfg.view_scale.0, cfg.view_scale.1)).round()
        as usize)
        .max(1);
    let s = region.shape;
    let st = [
        random_start(s[0], cfg.view_depth, rng),
        random_start(s[1], side, rng),
        random_start(s[2], side, rng),
    ];
    let pad = cfg.hu_clip.0 / cfg.hu_scale;
    let crop = crop_pad(region, st, [cfg.view_depth, side, side], pad);
    let flipped = flip(&crop, draw_flips(cfg.flip_p, rng));
    let mut view = resize(
        &flipped,
        [cfg.view_depth, cfg.view_side, cfg.view_side],
        Interp::Linear,
    )?;
    cfg.intensity.apply(&mut view, rng)?;
    uniform_sample(&view, cfg.sampling_patch, rng)
}

/// Two CADS views from a tile in HU (`[D, H, W]`, normally 24 slices at 1 mm).
pub fn cads_views(tile_hu: &Patch, cfg: &CadsViewConfig, rng: &mut Rng) -> Result<(Patch, Patch)> {
    if tile_hu.data.is_empty() {
        return Err(Error::invalid(
            "cads_views",
            "a non-empty tile",
            format!("{:?}", tile_hu.shape),
        ));
    }
    let r = ((cfg.view_side as f64 * rng.range(cfg.region_scale.0, cfg.region_scale.1)).round()
        as usize)
        .max(1);
    let s = tile_hu.shape;
    let st = [
        random_start(s[0], cfg.region_depth, rng),
        random_start(s[1], r, rng),
        random_start(s[2], r, rng),
    ];
    let mut region = crop_pad(tile_hu, st, [cfg.region_depth, r, r], cfg.hu_clip.0);
    clip_scale(
        &mut region.data,
        cfg.hu_clip.0,
        cfg.hu_clip.1,
        0.0,
        cfg.hu_scale,
    )?;
    let x1 = one_view(&region, cfg, rng)?;
    let x2 = one_view(&region, cfg, rng)?;
    Ok((x1, x2))
}

/// A full CADS sample: two views of the tile plus the volume's (cached) DRR.
pub fn cads_sample(
    tile_hu: &Patch,
    drr: &Patch,
    cfg: &CadsViewConfig,
    rng: &mut Rng,
) -> Result<CadsSample> {
    let (x1, x2) = cads_views(tile_hu, cfg, rng)?;
    Ok(CadsSample {
        x1,
        x2,
        drr: drr.clone(),
    })
}

/// The DRR slot of a CADS sample: one 2-D image per CT volume, `[1, side, side]` in [−1, 1].
/// The DRR engine implements this with its CADS preset.
pub trait DrrProjector: Send + Sync {
    fn project(&self, ct: &Volume) -> Result<Patch>;
    /// A stable name of the projector and its settings: part of the pretraining cache key, so
    /// DRRs of one projector are never served to a run configured with another.
    fn id(&self) -> String {
        "custom".into()
    }
}

/// Stand-in projector: a parallel antero-posterior line integral of `max(0, HU + 1024)` over the
/// canonical (RAS) volume's y axis, times the voxel size in mm; min-max scaled to [−1, 1]; resized
/// to `side × side` ignoring aspect ratio. Rows run from superior (row 0) to inferior, columns
/// along +x, as a radiograph is viewed. Pass a CT resampled to 1 mm for the CADS recipe.
#[derive(Clone, Debug)]
pub struct ParallelLineIntegral {
    pub side: usize,
}

impl Default for ParallelLineIntegral {
    fn default() -> Self {
        ParallelLineIntegral { side: 96 }
    }
}

impl DrrProjector for ParallelLineIntegral {
    fn id(&self) -> String {
        format!("cpu parallel line integral {}", self.side)
    }
    fn project(&self, ct: &Volume) -> Result<Patch> {
        let (v, _) = to_canonical(ct)?;
        let [nx, ny, nz] = v.dims;
        let step = v.spacing[1] as f32;
        let mut img = vec![0f32; nz * nx];
        for k in 0..nz {
            let row = nz - 1 - k;
            for j in 0..ny {
                let base = v.index(0, j, k);
                for i in 0..nx {
                    img[row * nx + i] += (v.data[base + i] + 1024.0).max(0.0) * step;
                }
            }
        }
        let (lo, hi) = img
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let range = hi - lo;
        img.iter_mut().for_each(|x| {
            *x = if range > 0.0 {
                2.0 * (*x - lo) / range - 1.0
            } else {
                0.0
            }
        });
        let p = Patch::new(img, [1, nz, nx])?;
        resize(&p, [1, self.side, self.side], Interp::Linear)
    }
}
