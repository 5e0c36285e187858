//! `cads convert IN OUT.nii.gz [--series UID] [--datatype T]`: any volume cads reads (NIfTI,
//! NRRD, a DICOM series folder) written as NIfTI-1, with the RAS affine the reader derived in the
//! sform and its rigid part in the qform, so the result opens aligned in Slicer, ITK-SNAP and
//! nibabel.
//!
//! The voxels keep their stored datatype and scaling (read typed, written as they are: an int16
//! CT stays int16 with its `scl_slope`/`scl_inter`, a float64 volume keeps every digit) unless
//! `--datatype` asks for another; then the scaled values are converted, rounded for integer
//! types, and a value the type cannot hold is an error.

use cads::data::{read_typed_volume_with, write_typed_nifti, Datatype, ReadOptions};
use cads::{Error, Result};

pub fn run(input: &str, output: &str, series: Option<&str>, datatype: Option<&str>) -> Result<()> {
    let lower = output.to_ascii_lowercase();
    if !(lower.ends_with(".nii") || lower.ends_with(".nii.gz")) {
        return Err(Error::invalid(
            "cads convert",
            "an output name ending in .nii or .nii.gz",
            output,
        ));
    }
    let dt = match datatype {
        None => None,
        Some(name) => Some(parse_datatype(name)?),
    };
    let opts = ReadOptions {
        series_uid: series.map(str::to_string),
    };
    let vol = read_typed_volume_with(input, &opts)?;
    let vol = match dt {
        Some(dt) => vol
            .into_datatype(dt)
            .map_err(|e| e.in_file("cads convert", input))?,
        None => vol,
    };
    write_typed_nifti(output, &vol)?;
    let (lo, hi, _) = vol.stats();
    out!(
        "wrote {output}: {}×{}×{} voxels, {:.4}×{:.4}×{:.4} mm, {}, {}, values {lo}..{hi}",
        vol.dims[0],
        vol.dims[1],
        vol.dims[2],
        vol.spacing[0],
        vol.spacing[1],
        vol.spacing[2],
        cads::data::orientation::orientation_code(&vol.affine),
        vol.datatype(),
    );
    Ok(())
}

fn parse_datatype(name: &str) -> Result<Datatype> {
    Datatype::from_name(name).ok_or_else(|| {
        Error::invalid(
            "cads convert --datatype",
            "uint8, int8, int16, uint16, int32, uint32, float32 or float64",
            name,
        )
    })
}
