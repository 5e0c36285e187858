//! NIfTI-1 writing: little-endian single-file `.nii` / `.nii.gz` with `vox_offset` 352, the affine
//! in the sform and its rigid part (with qfac) in the qform, so a saved prediction opens aligned
//! with its CT in 3D Slicer and ITK-SNAP whichever of the two they prefer.

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::nifti::bad;
use super::typed_volume::{TypedVolume, Voxels};
use super::volume::{spacing_of, Affine, Datatype, Volume};
use crate::error::Result;
use std::io::Write;

const OP_WRITE: &str = "write_nifti";

/// Quaternion parameters `(b, c, d, qfac)` of the rotation part of an affine (nifti1_io's
/// `mat44_to_quatern`): columns are normalised; a negative determinant is absorbed by qfac = −1
/// (third column negated). Shear, if any, is dropped — the sform keeps the exact matrix.
pub fn affine_to_quaternion(a: &Affine) -> (f64, f64, f64, f64) {
    let s = spacing_of(a);
    let mut r = [[0.0f64; 3]; 3];
    for (row, rr) in r.iter_mut().enumerate() {
        for (c, v) in rr.iter_mut().enumerate() {
            *v = a[row][c] / s[c];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if det < 0.0 {
        for rr in r.iter_mut() {
            rr[2] = -rr[2];
        }
    }
    let (r11, r12, r13, r21, r22, r23, r31, r32, r33) = (
        r[0][0], r[0][1], r[0][2], r[1][0], r[1][1], r[1][2], r[2][0], r[2][1], r[2][2],
    );
    let trace = r11 + r22 + r33 + 1.0;
    let (qa, qb, qc, qd);
    if trace > 0.5 {
        let a = 0.5 * trace.sqrt();
        qa = a;
        qb = 0.25 * (r32 - r23) / a;
        qc = 0.25 * (r13 - r31) / a;
        qd = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            qb = b;
            qc = 0.25 * (r12 + r21) / b;
            qd = 0.25 * (r13 + r31) / b;
            qa = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            qc = c;
            qb = 0.25 * (r12 + r21) / c;
            qd = 0.25 * (r23 + r32) / c;
            qa = 0.25 * (r13 - r31) / c;
        } else {
            let d = 0.5 * zd.max(0.0).sqrt().max(1e-12);
            qd = d;
            qb = 0.25 * (r13 + r31) / d;
            qc = 0.25 * (r23 + r32) / d;
            qa = 0.25 * (r21 - r12) / d;
        }
    }
    // The standard keeps a ≥ 0 (it is not stored); flip the whole quaternion if needed.
    if qa < 0.0 {
        (-qb, -qc, -qd, qfac)
    } else {
        (qb, qc, qd, qfac)
    }
}

/// The 352-byte NIfTI-1 header (little-endian, `vox_offset` 352, no extensions) for voxels of
/// `datatype` on the grid `dims` (voxel sizes `spacing`, mm) placed by `affine`: the affine in the sform (code 1, scanner),
/// its rigid part in the qform (code 1), and `value = stored · slope + inter`.
fn header(
    dims: [usize; 3],
    spacing: [f64; 3],
    affine: &Affine,
    datatype: Datatype,
    (slope, inter): (f64, f64),
    name: &str,
) -> Result<Vec<u8>> {
    if let Some(d) = dims.iter().find(|&&d| d > i16::MAX as usize) {
        return Err(bad(
            OP_WRITE,
            name,
            format!("dimension {d} exceeds NIfTI-1's limit of 32767"),
        ));
    }
    let mut h = vec![0u8; 352];
    let put_i16 =
        |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, at: usize, v: f64| {
        h[at..at + 4].copy_from_slice(&(v as f32).to_le_bytes())
    };
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    h[38] = b'r';
    let dim = [
        3i16,
        dims[0] as i16,
        dims[1] as i16,
        dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d);
    }
    put_i16(&mut h, 70, datatype.code());
    put_i16(&mut h, 72, 8 * datatype.size() as i16);
    let (qb, qc, qd, qfac) = affine_to_quaternion(affine);
    let pix = [qfac, spacing[0], spacing[1], spacing[2], 1.0, 1.0, 1.0, 1.0];
    for (i, p) in pix.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, slope);
    put_f32(&mut h, 116, inter);
    h[123] = 2; // xyzt_units: NIFTI_UNITS_MM
    put_i16(&mut h, 252, 1);
    put_i16(&mut h, 254, 1);
    for (i, v) in [qb, qc, qd, affine[0][3], affine[1][3], affine[2][3]]
        .iter()
        .enumerate()
    {
        put_f32(&mut h, 256 + 4 * i, *v);
    }
    for r in 0..3 {
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, affine[r][c]);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    // bytes 348..352: the extension flag, zero (no extensions).
    Ok(h)
}

/// Encode a volume as NIfTI-1 bytes (little-endian, `vox_offset` 352) in `datatype`, with the
/// affine in the sform (code 1, scanner) and its rigid part in the qform (code 1), so both readers
/// that prefer sform and those that prefer qform place it the same way. Integer types store the
/// values rounded, with `scl_slope = 1, scl_inter = 0`; a value outside the type's range or not
/// finite is an error (never silently clamped).
pub fn encode_nifti(vol: &Volume, datatype: Datatype, name: &str) -> Result<Vec<u8>> {
    let n = vol.dims.iter().product::<usize>();
    if n != vol.data.len() || vol.dims.contains(&0) {
        return Err(bad(
            OP_WRITE,
            name,
            format!(
                "volume dims {:?} do not match its {} values",
                vol.dims,
                vol.data.len()
            ),
        ));
    }
    let mut h = header(
        vol.dims,
        vol.spacing,
        &vol.affine,
        datatype,
        (1.0, 0.0),
        name,
    )?;
    h.reserve(n * datatype.size());
    if let Some((lo, hi)) = datatype.int_range() {
        for (idx, &v) in vol.data.iter().enumerate() {
            let r = (v as f64).round();
            if !(r >= lo && r <= hi) {
                return Err(bad(
                    OP_WRITE,
                    name,
                    format!("value {v} at flat voxel {idx} does not fit {datatype} [{lo}, {hi}]"),
                ));
            }
            match datatype {
                Datatype::Uint8 => h.push(r as u8),
                Datatype::Int8 => h.push(r as i8 as u8),
                Datatype::Int16 => h.extend_from_slice(&(r as i16).to_le_bytes()),
                Datatype::Uint16 => h.extend_from_slice(&(r as u16).to_le_bytes()),
                Datatype::Uint32 => h.extend_from_slice(&(r as u32).to_le_bytes()),
                _ => h.extend_from_slice(&(r as i32).to_le_bytes()),
            }
        }
    } else {
        for (idx, &v) in vol.data.iter().enumerate() {
            if !v.is_finite() {
                return Err(bad(
                    OP_WRITE,
                    name,
                    format!("non-finite value {v} at flat voxel {idx}"),
                ));
            }
            match datatype {
                Datatype::Float32 => h.extend_from_slice(&v.to_le_bytes()),
                _ => h.extend_from_slice(&(v as f64).to_le_bytes()),
            }
        }
    }
    Ok(h)
}

/// Encode a typed volume as NIfTI-1 bytes in its own datatype with its own scaling: the stored
/// values are written as they are (no rounding, no conversion), so reading the result typed gives
/// the same voxels back. A NaN/Inf float voxel is an error, as in [`encode_nifti`].
pub fn encode_typed_nifti(vol: &TypedVolume, name: &str) -> Result<Vec<u8>> {
    let n = crate::util::size::checked_numel(OP_WRITE, &vol.dims)?;
    if n != vol.len() || vol.dims.contains(&0) {
        return Err(bad(
            OP_WRITE,
            name,
            format!(
                "volume dims {:?} do not match its {} values",
                vol.dims,
                vol.len()
            ),
        ));
    }
    let scaling = vol.scaling.map_or((1.0, 0.0), |s| (s.slope, s.inter));
    let mut h = header(
        vol.dims,
        vol.spacing,
        &vol.affine,
        vol.datatype(),
        scaling,
        name,
    )?;
    h.reserve(vol.voxels.byte_len());
    macro_rules! put {
        ($v:expr) => {
            for x in $v {
                h.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    let finite = |at: Option<usize>| match at {
        Some(at) => Err(bad(
            OP_WRITE,
            name,
            format!("non-finite value at flat voxel {at}"),
        )),
        None => Ok(()),
    };
    match &vol.voxels {
        Voxels::U8(v) => h.extend_from_slice(v),
        Voxels::I8(v) => put!(v),
        Voxels::I16(v) => put!(v),
        Voxels::U16(v) => put!(v),
        Voxels::I32(v) => put!(v),
        Voxels::U32(v) => put!(v),
        Voxels::F32(v) => {
            finite(v.iter().position(|x| !x.is_finite()))?;
            put!(v)
        }
        Voxels::F64(v) => {
            finite(v.iter().position(|x| !x.is_finite()))?;
            put!(v)
        }
    }
    Ok(h)
}

/// Write a volume as NIfTI-1 (`.nii`, or gzip when the name ends in `.gz`) in `datatype`
/// (`None`: the volume's own datatype). Written to a temporary name, then renamed, so a failure
/// never leaves a half-written file at `path`.
pub fn write_nifti(
    path: impl AsRef<std::path::Path>,
    vol: &Volume,
    datatype: Option<Datatype>,
) -> Result<()> {
    let p = path.as_ref();
    let name = p.display().to_string();
    let bytes = encode_nifti(vol, datatype.unwrap_or(vol.datatype), &name)?;
    write_bytes(p, &name, &bytes)
}

/// Write a typed volume as NIfTI-1 in its own datatype and scaling (see [`encode_typed_nifti`]),
/// atomically as [`write_nifti`] does.
pub fn write_typed_nifti(path: impl AsRef<std::path::Path>, vol: &TypedVolume) -> Result<()> {
    let p = path.as_ref();
    let name = p.display().to_string();
    let bytes = encode_typed_nifti(vol, &name)?;
    write_bytes(p, &name, &bytes)
}

/// `.gz` names are gzip-compressed; written to a temporary name and renamed.
fn write_bytes(p: &std::path::Path, name: &str, bytes: &[u8]) -> Result<()> {
    if name.ends_with(".gz") {
        crate::util::file::write_atomically_with(OP_WRITE, p, |w| {
            let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
            enc.write_all(bytes)?;
            enc.finish().map(|_| ())
        })
    } else {
        crate::util::file::write_atomically(OP_WRITE, p, bytes)
    }
}
