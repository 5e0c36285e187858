//! One entry point for every volume format: [`read_volume`] picks NIfTI, NRRD or a DICOM series
//! from the path (a folder is a DICOM series; otherwise the extension, and when that says nothing,
//! the first bytes), so `cads inspect`, `cads drr`, `cads convert` and the loaders accept any of
//! them. Every reader returns the same [`Volume`]: values in file units (HU for CT) and a RAS+
//! voxel → world affine. [`read_typed_volume`] returns the voxels in the datatype the file stores
//! instead ([`TypedVolume`]: an int16 CT at 2 bytes per voxel), converted to f32 only when asked.

use super::typed_volume::TypedVolume;
use super::volume::Volume;
use crate::error::{Error, Result};
use std::path::Path;

const OP: &str = "read_volume";

/// The formats [`read_volume`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeFormat {
    Nifti,
    Nrrd,
    DicomSeries,
    /// A DeepLesion series folder of 16-bit PNG slices (`super::deeplesion`).
    DeepLesionSeries,
}

/// Options for formats that need a choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The DICOM SeriesInstanceUID to read from a folder holding several series; for a
    /// DeepLesion series folder, the sub-volume (`FIRST-LAST` slice numbers, or its whole name).
    pub series_uid: Option<String>,
}

/// The format of `path`: a folder is a DeepLesion series when it is named and filled like one
/// (`PPPPPP_SS_RR/NNN.png`), else a DICOM series; then `.nii`/`.nii.gz`, `.nrrd`/`.nhdr`,
/// `.dcm`/`.ima`; then the content (gzip or a NIfTI header size, the NRRD magic, the DICM
/// preamble).
pub fn detect_format(path: impl AsRef<Path>) -> Result<VolumeFormat> {
    let p = path.as_ref();
    let name = p.display().to_string();
    if p.is_dir() {
        if super::deeplesion::is_series_folder(p) {
            return Ok(VolumeFormat::DeepLesionSeries);
        }
        return Ok(VolumeFormat::DicomSeries);
    }
    if !p.is_file() {
        return Err(Error::Io {
            op: OP,
            path: name,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or folder (expected a NIfTI .nii/.nii.gz, a NRRD .nrrd/.nhdr, or a DICOM series folder)",
            ),
        });
    }
    let lower = p
        .file_name()
        .map(|f| f.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if lower.ends_with(".nii") || lower.ends_with(".nii.gz") {
        return Ok(VolumeFormat::Nifti);
    }
    if lower.ends_with(".nrrd") || lower.ends_with(".nhdr") {
        return Ok(VolumeFormat::Nrrd);
    }
    if lower.ends_with(".dcm") || lower.ends_with(".ima") || lower.ends_with(".dicom") {
        return Ok(VolumeFormat::DicomSeries);
    }
    let mut head = [0u8; 132];
    let got = {
        use std::io::Read;
        let mut f = std::fs::File::open(p).map_err(|source| Error::Io {
            op: OP,
            path: name.clone(),
            source,
        })?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(source) => {
                    return Err(Error::Io {
                        op: OP,
                        path: name,
                        source,
                    })
                }
            }
        }
        n
    };
    let h = &head[..got];
    if h.starts_with(b"NRRD000") {
        return Ok(VolumeFormat::Nrrd);
    }
    if got == 132 && &h[128..132] == b"DICM" {
        return Ok(VolumeFormat::DicomSeries);
    }
    if got >= 4 {
        let le = i32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let be = i32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if h[0] == 0x1f && h[1] == 0x8b || [348, 540].contains(&le) || [348, 540].contains(&be) {
            return Ok(VolumeFormat::Nifti);
        }
    }
    Err(Error::BadFile {
        op: OP,
        path: name,
        problem: "unknown format: not NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or DICOM (a series folder, .dcm, or the DICM preamble)".into(),
    })
}

/// The file's format, checked against the options (a series UID names a DICOM series or a
/// DeepLesion sub-volume).
fn format_for(p: &Path, opts: &ReadOptions) -> Result<VolumeFormat> {
    let format = detect_format(p)?;
    let series = [VolumeFormat::DicomSeries, VolumeFormat::DeepLesionSeries];
    if opts.series_uid.is_some() && !series.contains(&format) {
        return Err(Error::invalid(
            OP,
            "a DICOM series folder or file (or a DeepLesion series folder) when a series UID is \
             given",
            format!("{} ({format:?})", p.display()),
        ));
    }
    Ok(format)
}

/// Read a volume in any supported format (see [`detect_format`]).
pub fn read_volume(path: impl AsRef<Path>) -> Result<Volume> {
    read_volume_with(path, &ReadOptions::default())
}

/// [`read_volume`] with options (the DICOM series to pick).
pub fn read_volume_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Volume> {
    let p = path.as_ref();
    let format = format_for(p, opts)?;
    match format {
        VolumeFormat::Nifti => super::nifti::read_nifti(p),
        VolumeFormat::Nrrd => super::nrrd::read_nrrd(p),
        VolumeFormat::DicomSeries => super::dicom::read_dicom_series(p, opts.series_uid.as_deref()),
        VolumeFormat::DeepLesionSeries => {
            super::deeplesion::read_series_folder(p, opts.series_uid.as_deref())
        }
    }
}

/// Read a volume in the datatype its file stores (see [`TypedVolume`]): NIfTI and NRRD are
/// read without conversion; a DICOM series is assembled as an f32 volume (its slices may each
/// have their own rescale) and then kept in int16 when every value is a whole number in range.
pub fn read_typed_volume(path: impl AsRef<Path>) -> Result<TypedVolume> {
    read_typed_volume_with(path, &ReadOptions::default())
}

/// [`read_typed_volume`] with options (the DICOM series to pick).
pub fn read_typed_volume_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<TypedVolume> {
    let p = path.as_ref();
    let format = format_for(p, opts)?;
    match format {
        VolumeFormat::Nifti => super::nifti::read_nifti_typed(p),
        VolumeFormat::Nrrd => super::nrrd::read_nrrd_typed(p),
        VolumeFormat::DicomSeries => Ok(TypedVolume::from_f32_volume(
            super::dicom::read_dicom_series(p, opts.series_uid.as_deref())?,
        )),
        VolumeFormat::DeepLesionSeries => Ok(TypedVolume::from_f32_volume(
            super::deeplesion::read_series_folder(p, opts.series_uid.as_deref())?,
        )),
    }
}
