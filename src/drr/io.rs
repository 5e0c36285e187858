//! Small input/output helpers for DRRs: a NIfTI volume reader (via the `nifti` crate; the data
//! layer's own reader can replace [`read_nifti`] later) and 8/16-bit grayscale PNG writers.

use super::VolumeGrid;
use crate::error::{Error, Result};

/// Read a 3-D NIfTI (.nii / .nii.gz) as `[D, H, W]` f32 (x fastest, scl_slope/inter applied)
/// with its grid. The affine is the sform when `sform_code > 0`, else the qform, else pixdim.
pub fn read_nifti(path: &str) -> Result<(VolumeGrid, Vec<f32>)> {
    use nifti::{IntoNdArray, NiftiObject};
    let bad = |problem: String| Error::BadFile {
        op: "read_nifti",
        path: path.to_string(),
        problem,
    };
    let obj = nifti::ReaderOptions::new()
        .read_file(path)
        .map_err(|e| bad(e.to_string()))?;
    let header = obj.header().clone();
    let array = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| bad(e.to_string()))?;
    let shape = array.shape().to_vec();
    if shape.len() < 3 || shape[3..].iter().any(|&n| n != 1) || shape[..3].contains(&0) {
        return Err(bad(format!(
            "expected a non-empty 3-D volume, got dims {shape:?}"
        )));
    }
    let (nx, ny, nz) = (shape[0], shape[1], shape[2]);
    // ndarray index [x, y, z, 1..]; the reversed axes iterate z slowest and x fastest (the
    // trailing size-1 axes do not change the order).
    let data: Vec<f32> = array.t().iter().copied().collect();
    if data.iter().any(|v| !v.is_finite()) {
        return Err(bad("non-finite voxel values".into()));
    }
    let affine = if header.sform_code > 0 {
        let r = [header.srow_x, header.srow_y, header.srow_z];
        std::array::from_fn(|i| std::array::from_fn(|j| r[i][j] as f64))
    } else if header.qform_code > 0 {
        qform_affine(&header)
    } else {
        let p = header.pixdim;
        let mut a = [[0.0; 4]; 3];
        for i in 0..3 {
            a[i][i] = p[i + 1].abs().max(f32::MIN_POSITIVE) as f64;
        }
        a
    };
    let grid = VolumeGrid {
        dims: [nz, ny, nx],
        affine,
    };
    grid.validate("read_nifti")
        .map_err(|e| bad(e.to_string()))?;
    Ok((grid, data))
}

/// The NIfTI qform: rotation from the quaternion (b, c, d), pixdim scaling with the qfac sign.
fn qform_affine(h: &nifti::NiftiHeader) -> [[f64; 4]; 3] {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - b * b - c * c,
        ],
    ];
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let s = [
        h.pixdim[1] as f64,
        h.pixdim[2] as f64,
        h.pixdim[3] as f64 * qfac,
    ];
    let o = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
    std::array::from_fn(|i| [r[i][0] * s[0], r[i][1] * s[1], r[i][2] * s[2], o[i]])
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
    if img.len() != height * width || height == 0 || width == 0 {
        return Err(Error::invalid(
            "write_png",
            "img.len() == height·width > 0",
            format!("{} vs {height}×{width}", img.len()),
        ));
    }
    let io = |source: std::io::Error| Error::Io {
        op: "write_png",
        path: path.to_string(),
        source,
    };
    let enc = |e: png::EncodingError| io(std::io::Error::other(e.to_string()));
    let tmp = format!("{path}.tmp");
    {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        let bytes = match window {
            Some((lo, hi)) => {
                encoder.set_depth(png::BitDepth::Eight);
                to_u8(img, lo, hi)
            }
            None => {
                encoder.set_depth(png::BitDepth::Sixteen);
                let (mn, mx) = img
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                let range = (mx - mn).max(f32::MIN_POSITIVE);
                img.iter()
                    .flat_map(|&v| (((v - mn) / range * 65535.0).round() as u16).to_be_bytes())
                    .collect()
            }
        };
        let mut writer = encoder.write_header().map_err(enc)?;
        writer.write_image_data(&bytes).map_err(enc)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
