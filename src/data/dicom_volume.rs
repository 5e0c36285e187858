//! The volume of one DICOM series for [`super::dicom`]: the regular-grid checks (orientation and
//! pixel grid shared, positions along the normal, even gaps), the RAS affine, and the pixel
//! decoding with rescale. The geometry and value conventions are in `dicom.rs`'s module doc.

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::dicom::{bad, open, Slice};
use super::volume::{Affine, Datatype, Volume, IDENTITY};
use crate::error::Result;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Check the slices form one regular grid, then decode them into a volume.
pub(super) fn assemble(mut slices: Vec<Slice>, dir: &str) -> Result<Volume> {
    let Some(first) = slices.first().cloned() else {
        return Err(bad(dir, "no slices in the series"));
    };
    // Every slice must share orientation and pixel grid (each keeps its own pixel format and
    // rescale, which are applied per slice).
    for s in &slices[1..] {
        let same_orient = (0..6).all(|i| (s.orientation[i] - first.orientation[i]).abs() <= 1e-4);
        let same_spacing = (0..2).all(|i| {
            (s.pixel_spacing[i] - first.pixel_spacing[i]).abs() <= 1e-4 * first.pixel_spacing[i]
        });
        if !same_orient || !same_spacing || s.rows != first.rows || s.columns != first.columns {
            return Err(bad(
                dir,
                format!(
                    "slices of series {} disagree: {} has orientation {:?}, pixel spacing {:?}, {}×{} pixels; {} has {:?}, {:?}, {}×{} (several stacks in one series are not one volume)",
                    first.series_uid, first.name(), first.orientation, first.pixel_spacing, first.rows, first.columns,
                    s.name(), s.orientation, s.pixel_spacing, s.rows, s.columns
                ),
            ));
        }
    }
    let o = first.orientation;
    let r = [o[0], o[1], o[2]];
    let c = [o[3], o[4], o[5]];
    if (norm(r) - 1.0).abs() > 1e-3 || (norm(c) - 1.0).abs() > 1e-3 || dot(r, c).abs() > 1e-3 {
        return Err(bad(
            first.path.display(),
            format!("ImageOrientationPatient {o:?}: the row and column directions must be orthogonal unit vectors"),
        ));
    }
    let (rn, cn) = (norm(r), norm(c));
    let r = [r[0] / rn, r[1] / rn, r[2] / rn];
    let c = [c[0] / cn, c[1] / cn, c[2] / cn];
    let n = cross(r, c);

    // Sort along the normal: s_k = n · P_k.
    slices.sort_by(|a, b| dot(n, a.position).total_cmp(&dot(n, b.position)));
    let s: Vec<f64> = slices.iter().map(|x| dot(n, x.position)).collect();
    let count = slices.len();

    // Positions off the normal: the slices are sheared (gantry tilt), not stacked.
    let p0 = slices[0].position;
    for x in &slices[1..] {
        let d = sub(x.position, p0);
        let along = dot(d, n);
        let off = norm(sub(d, [along * n[0], along * n[1], along * n[2]]));
        if off > 0.01 + 1e-3 * norm(d) {
            let angle = off.atan2(along.abs()).to_degrees();
            let tag = match first.tilt_deg {
                Some(t) if t != 0.0 => format!("; GantryDetectorTilt says {t}°"),
                _ => String::new(),
            };
            return Err(bad(
                dir,
                format!(
                    "slice positions do not lie along the slice normal: {} is {off:.3} mm off it, {along:.3} mm along it (a sheared grid, gantry tilt ≈ {angle:.2}°{tag}); tilted series need resampling, which cads does not do",
                    x.name()
                ),
            ));
        }
    }

    // Gaps between neighbours along the normal.
    let step_vec: [f64; 3] = if count > 1 {
        let gaps: Vec<f64> = s.windows(2).map(|w| w[1] - w[0]).collect();
        if let Some(k) = gaps.iter().position(|&g| g < 1e-3) {
            return Err(bad(
                dir,
                format!(
                    "two slices at the same position ({:.3} mm along the normal): {} and {} (duplicates, or several acquisitions in one series)",
                    s[k],
                    slices[k].name(),
                    slices[k + 1].name()
                ),
            ));
        }
        let mut sorted = gaps.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted[sorted.len() / 2];
        let tol = 1e-3 + 1e-2 * median;
        for (k, &g) in gaps.iter().enumerate() {
            if (g - median).abs() <= tol {
                continue;
            }
            let ratio = (g / median).round();
            let between = format!(
                "between {} at {:.3} mm and {} at {:.3} mm",
                slices[k].name(),
                s[k],
                slices[k + 1].name(),
                s[k + 1]
            );
            let problem = if ratio >= 2.0 && (g - ratio * median).abs() <= tol * ratio {
                format!(
                    "{} missing slice(s) {between}: gap {g:.3} mm where the series' slice spacing is {median:.3} mm",
                    ratio as usize - 1
                )
            } else {
                format!(
                    "non-uniform slice spacing: gap {g:.3} mm {between}, where most gaps are {median:.3} mm (smallest {:.3}, largest {:.3})",
                    sorted[0],
                    sorted[sorted.len() - 1]
                )
            };
            return Err(bad(dir, problem));
        }
        let last = slices[count - 1].position;
        let m = (count - 1) as f64;
        [
            (last[0] - p0[0]) / m,
            (last[1] - p0[1]) / m,
            (last[2] - p0[2]) / m,
        ]
    } else {
        // One slice: the slab thickness is the best spacing there is.
        let t = first
            .spacing_between
            .filter(|v| v.is_finite() && *v > 0.0)
            .or(first.thickness.filter(|v| v.is_finite() && *v > 0.0))
            .unwrap_or(1.0);
        [t * n[0], t * n[1], t * n[2]]
    };

    // A_LPS columns: i → Δcol·r, j → Δrow·c, k → step; origin P_0. Then LPS → RAS.
    let (drow, dcol) = (first.pixel_spacing[0], first.pixel_spacing[1]);
    let mut a: Affine = IDENTITY;
    for w in 0..3 {
        let sign = if w < 2 { -1.0 } else { 1.0 };
        // `+ 0.0` turns the −0.0 of a negated zero into 0.0 (printed affines stay clean).
        a[w][0] = sign * dcol * r[w] + 0.0;
        a[w][1] = sign * drow * c[w] + 0.0;
        a[w][2] = sign * step_vec[w] + 0.0;
        a[w][3] = sign * p0[w] + 0.0;
    }

    let plane = first
        .rows
        .checked_mul(first.columns)
        .ok_or_else(|| bad(dir, "Rows × Columns overflows"))?;
    let total = plane
        .checked_mul(count)
        .ok_or_else(|| bad(dir, "Rows × Columns × slices overflows"))?;
    let mut data = Vec::with_capacity(total);
    for x in &slices {
        decode_slice(x, plane, &mut data)?;
    }
    let integral = data
        .iter()
        .all(|&v| v.fract() == 0.0 && (-32768.0..=32767.0).contains(&v));
    let datatype = if integral {
        Datatype::Int16
    } else {
        Datatype::Float32
    };
    Volume::new(data, [first.columns, first.rows, count], a, datatype)
}

/// Decode the pixels of one slice (row-major: column index fastest, as the volume's i axis) into
/// rescaled values appended to `out`.
fn decode_slice(x: &Slice, plane: usize, out: &mut Vec<f32>) -> Result<()> {
    let name = x.name();
    let obj = open(&x.path, false)?;
    let elem = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| bad(&name, "no PixelData (7FE0,0010): truncated file?"))?;
    // Little-endian bytes of the pixel data, whatever VR the parser gave it (it already decoded the
    // file's byte order into native values).
    let bytes: Vec<u8> = match elem.value() {
        Value::Primitive(PrimitiveValue::U8(v)) => v.to_vec(),
        Value::Primitive(PrimitiveValue::U16(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        Value::Primitive(PrimitiveValue::I16(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        Value::Primitive(PrimitiveValue::U32(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        Value::Primitive(PrimitiveValue::I32(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        // Encapsulated (compressed) pixel data: dicom-pixeldata's pure-Rust codecs (RLE lossless,
        // JPEG baseline/extended/lossless) turn it into the same little-endian samples.
        Value::PixelSequence(_) => {
            use dicom_pixeldata::PixelDecoder;
            let decoded = obj.decode_pixel_data().map_err(|e| {
                bad(
                    &name,
                    format!(
                        "cannot decode the compressed pixel data of transfer syntax {}: {e} (cads decodes RLE lossless and JPEG baseline/extended/lossless; decompress other syntaxes first, e.g. gdcmconv --raw)",
                        x.transfer_syntax
                    ),
                )
            })?;
            decoded.data().to_vec()
        }
        _ => {
            return Err(bad(
                &name,
                "PixelData is not an array of 8/16/32-bit integers (float or sequence pixel data is not supported)",
            ))
        }
    };
    let bpp = x.bits_allocated / 8;
    let want = plane
        .checked_mul(bpp)
        .ok_or_else(|| bad(&name, "Rows × Columns × bytes per pixel overflows"))?;
    // An odd byte count is padded to even length, so one extra byte is allowed.
    if bytes.len() < want || bytes.len() > want + (want % 2) {
        return Err(bad(
            &name,
            format!(
                "PixelData has {} bytes, {}×{} pixels of {} bits need {want} (truncated or inconsistent file)",
                bytes.len(),
                x.rows,
                x.columns,
                x.bits_allocated
            ),
        ));
    }
    let stored = x.bits_stored as u32;
    let mask: u64 = if stored >= 64 {
        u64::MAX
    } else {
        (1u64 << stored) - 1
    };
    for px in bytes[..want].chunks_exact(bpp) {
        let mut raw = 0u64;
        for (b, &byte) in px.iter().enumerate() {
            raw |= (byte as u64) << (8 * b);
        }
        let v = raw & mask;
        // Two's complement in BitsStored bits: subtract 2^stored when the top stored bit is set.
        let value = if x.signed && (v >> (stored - 1)) & 1 == 1 {
            v as i64 - (1i64 << stored)
        } else {
            v as i64
        };
        let hu = value as f64 * x.slope + x.intercept;
        out.push(hu as f32);
    }
    Ok(())
}
