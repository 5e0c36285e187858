//! Small output helpers for DRRs: 8/16-bit grayscale PNG writers. CT volumes are read by
//! `pretrain::read_ct` (through the data layer's NIfTI reader).

use crate::error::{Error, Result};

/// `(min, max)` of `img` (NaNs ignored): the default 8-bit window, and the 16-bit scaling.
pub fn value_range(img: &[f32]) -> Result<(f32, f32)> {
    let (lo, hi) = img
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(Error::invalid(
            "value_range",
            "a non-empty image with finite values",
            format!("{} values, range [{lo}, {hi}]", img.len()),
        ));
    }
    Ok((lo, hi))
}

/// Window `img` to 8 bits: `[lo, hi]` → [0, 255] (clamped).
pub fn to_u8(img: &[f32], lo: f32, hi: f32) -> Vec<u8> {
    let range = (hi - lo).max(f32::MIN_POSITIVE);
    img.iter()
        .map(|&v| (((v - lo) / range).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// Write a grayscale PNG, 8-bit (`Some(window)`: `[lo, hi]` → [0, 255]) or 16-bit min-max
/// scaled (`None`). Written to a temporary file and renamed.
pub fn write_png(
    path: &str,
    img: &[f32],
    height: usize,
    width: usize,
    window: Option<(f32, f32)>,
) -> Result<()> {
    // Checked product (a wrapped one could match a short image); PNG sides are u32.
    let fits = height.checked_mul(width) == Some(img.len())
        && height <= u32::MAX as usize
        && width <= u32::MAX as usize;
    if !fits || height == 0 || width == 0 {
        return Err(Error::invalid(
            "write_png",
            "img.len() == height·width > 0",
            format!("{} vs {height}×{width}", img.len()),
        ));
    }
    // Pixels first, so a bad image fails before any file is created.
    let (depth, bytes) = match window {
        Some((lo, hi)) => (png::BitDepth::Eight, to_u8(img, lo, hi)),
        None => {
            let (mn, mx) = value_range(img)?;
            let range = (mx - mn).max(f32::MIN_POSITIVE);
            let words = img
                .iter()
                .flat_map(|&v| (((v - mn) / range * 65535.0).round() as u16).to_be_bytes());
            (png::BitDepth::Sixteen, words.collect())
        }
    };
    // The temporary-file, flush, sync and rename rules (never over a device node) live in one
    // place for every writer of the crate.
    crate::util::file::write_atomically_with("write_png", path, |w| {
        let mut encoder = png::Encoder::new(w, width as u32, height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(depth);
        let mut writer = encoder.write_header().map_err(png_io)?;
        writer.write_image_data(&bytes).map_err(png_io)?;
        writer.finish().map_err(png_io)
    })
}

fn png_io(e: png::EncodingError) -> std::io::Error {
    match e {
        png::EncodingError::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}
