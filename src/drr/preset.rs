//! Presets built on the general engine, and small 2-D helpers for images on the host.
//!
//! The CADS view (shared/CADS.md): a parallel antero-posterior projection of max(0, HU + 1024),
//! each pixel the line integral (Σ value × length in mm, here exact Siddon lengths), min-max
//! scaled to [−1, 1], resized to 96×96 ignoring the aspect ratio.

use super::{render, Beam, Detector, Geometry, Pose, Projector, Volume, VolumeGrid};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Side of the CADS DRR view.
pub const CADS_SIZE: usize = 96;

/// World extent (mm) of the volume box along each world axis (x, y, z).
fn world_extent(grid: &VolumeGrid) -> [f64; 3] {
    let [d, h, w] = grid.dims;
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for k in 0..8 {
        let idx = [
            if k & 1 == 0 { -0.5 } else { w as f64 - 0.5 },
            if k & 2 == 0 { -0.5 } else { h as f64 - 0.5 },
            if k & 4 == 0 { -0.5 } else { d as f64 - 0.5 },
        ];
        let p = grid.to_world(idx);
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    std::array::from_fn(|a| hi[a] - lo[a])
}

/// Parallel frontal geometry whose detector covers the volume (pixel pitch `pixel_mm`), validated.
///
/// The detector size comes from the file's extent in mm, so a crafted voxel size (1e4 or 3e38 mm)
/// would ask for an absurd panel: `as usize` saturates and rows × cols used to wrap to 1 in release
/// builds. The sizes are converted with a bound and the geometry is validated (which checks the
/// pixel count) before anything is allocated.
pub fn frontal_parallel(grid: &VolumeGrid, pixel_mm: f64) -> Result<Geometry> {
    const OP: &str = "drr frontal_parallel";
    if !(pixel_mm.is_finite() && pixel_mm > 0.0) {
        return Err(Error::invalid(
            OP,
            "a positive finite pixel pitch (mm)",
            pixel_mm,
        ));
    }
    let ext = world_extent(grid);
    let pixels = |mm: f64, axis: &str| {
        crate::util::size::f64_to_count(
            OP,
            &format!(
                "detector {axis} for a volume extent of {ext:?} mm at {pixel_mm} mm per pixel"
            ),
            (mm / pixel_mm).ceil().max(1.0),
            super::geometry::MAX_DETECTOR_SIDE,
        )
    };
    let cols = pixels(ext[0], "columns")?;
    let rows = pixels(ext[2], "rows")?;
    let geometry = Geometry {
        detector: Detector {
            height: rows,
            width: cols,
            pixel_mm: [pixel_mm; 2],
            principal_mm: [0.0; 2],
        },
        sdd_mm: 2.0 * ext[1] + 10.0,
        sid_mm: ext[1] + 5.0,
        beam: Beam::Parallel,
        isocentre: None,
    };
    geometry.validate(OP)?;
    Ok(geometry)
}

/// The CADS DRR of a CT in HU (`hu` is `[D, H, W]` on the host): `[96, 96]` in [−1, 1].
pub fn cads_view(gpu: &Gpu, grid: &VolumeGrid, hu: &[f32]) -> Result<Vec<f32>> {
    let shifted: Vec<f32> = hu.iter().map(|&v| (v + 1024.0).max(0.0)).collect();
    let volume = Volume::from_host(gpu, grid.clone(), &shifted)?;
    let geometry = frontal_parallel(grid, 1.0)?;
    let poses = super::pose_tensor(gpu, &[Pose::default()])?;
    let img = gpu
        .no_grad(|| render(&volume, &poses, &geometry, Projector::Siddon))?
        .to_vec()?;
    let scaled = min_max_scale(&img, -1.0, 1.0);
    resize_bilinear(
        &scaled,
        geometry.detector.height,
        geometry.detector.width,
        CADS_SIZE,
        CADS_SIZE,
    )
}

/// Affine map of [min, max] onto [lo, hi] (a constant image maps to `lo`).
pub fn min_max_scale(img: &[f32], lo: f32, hi: f32) -> Vec<f32> {
    let (mn, mx) = img
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let range = mx - mn;
    img.iter()
        .map(|&v| {
            if range > 0.0 {
                lo + (v - mn) / range * (hi - lo)
            } else {
                lo
            }
        })
        .collect()
}

/// Bilinear resize of a row-major `[h, w]` image to `[oh, ow]`, half-pixel centres
/// (PyTorch `interpolate(mode="bilinear", align_corners=False)`).
pub fn resize_bilinear(img: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<f32>> {
    // Checked products: h·w of two huge sizes used to wrap and pass this check.
    let sizes_ok = h.checked_mul(w) == Some(img.len()) && oh.checked_mul(ow).is_some();
    if h == 0 || w == 0 || oh == 0 || ow == 0 || !sizes_ok {
        return Err(Error::invalid(
            "resize_bilinear",
            "non-empty sizes and img.len() == h·w",
            format!("{h}×{w} → {oh}×{ow}, len {}", img.len()),
        ));
    }
    let src = |o: usize, n_out: usize, n_in: usize| {
        let s = ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, (s - i0 as f64).clamp(0.0, 1.0) as f32)
    };
    let mut out = vec![0.0; oh * ow];
    for r in 0..oh {
        let (r0, r1, fr) = src(r, oh, h);
        for c in 0..ow {
            let (c0, c1, fc) = src(c, ow, w);
            let top = img[r0 * w + c0] * (1.0 - fc) + img[r0 * w + c1] * fc;
            let bot = img[r1 * w + c0] * (1.0 - fc) + img[r1 * w + c1] * fc;
            out[r * ow + c] = top * (1.0 - fr) + bot * fr;
        }
    }
    Ok(out)
}
