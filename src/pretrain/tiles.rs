//! The CADS tiling of a CT at 1 mm into 24-slice tiles (CADS.md).

use crate::data::preprocess::{crop_pad, Patch};
use crate::error::{Error, Result};

/// One CADS tile: `[d0, d0 + d) × [h0, h0 + h) × [w0, w0 + w)` of a `[D, H, W]` volume.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub start: [usize; 3],
    pub size: [usize; 3],
}

/// CADS tiling parameters (CADS.md: 24-slice tiles, stride 12, central 80% when a side > 320).
#[derive(Clone, Debug)]
pub struct TilingConfig {
    pub depth: usize,
    pub stride: usize,
    pub max_side: usize,
    pub keep_fraction: f64,
}

impl Default for TilingConfig {
    fn default() -> Self {
        TilingConfig {
            depth: 24,
            stride: 12,
            max_side: 320,
            keep_fraction: 0.8,
        }
    }
}

/// The tiles of a `[D, H, W]` volume (already at 1 mm): depth starts `0, stride, …` while a full
/// tile fits (a volume shallower than one tile gives one tile of its whole depth, padded later by
/// the sampler); in-plane the whole side, or its central `keep_fraction` when it exceeds
/// `max_side`.
pub fn cads_tiles(shape: [usize; 3], cfg: &TilingConfig) -> Result<Vec<Tile>> {
    if cfg.depth == 0 || cfg.stride == 0 || !(cfg.keep_fraction > 0.0 && cfg.keep_fraction <= 1.0) {
        return Err(Error::invalid(
            "cads_tiles",
            "depth, stride > 0 and keep_fraction in (0, 1]",
            format!("{cfg:?}"),
        ));
    }
    if shape.contains(&0) {
        return Err(Error::invalid(
            "cads_tiles",
            "a non-empty volume",
            format!("{shape:?}"),
        ));
    }
    let side = |n: usize| -> (usize, usize) {
        if n > cfg.max_side {
            let keep = ((n as f64 * cfg.keep_fraction).round() as usize).max(1);
            ((n - keep) / 2, keep)
        } else {
            (0, n)
        }
    };
    let (h0, h) = side(shape[1]);
    let (w0, w) = side(shape[2]);
    let mut out = Vec::new();
    if shape[0] <= cfg.depth {
        out.push(Tile {
            start: [0, h0, w0],
            size: [shape[0], h, w],
        });
    } else {
        let mut d0 = 0;
        while d0 + cfg.depth <= shape[0] {
            out.push(Tile {
                start: [d0, h0, w0],
                size: [cfg.depth, h, w],
            });
            d0 += cfg.stride;
        }
    }
    Ok(out)
}

/// Extract a tile.
pub fn extract_tile(src: &Patch, t: &Tile) -> Patch {
    crop_pad(src, t.start.map(|s| s as isize), t.size, 0.0)
}
