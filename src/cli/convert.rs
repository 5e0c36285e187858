//! `cads convert IN OUT.nii.gz [--series UID] [--datatype T]`: any volume cads reads (NIfTI,
//! NRRD, a DICOM series folder) written as NIfTI-1, with the RAS affine the reader derived in the
//! sform and its rigid part in the qform, so the result opens aligned in Slicer, ITK-SNAP and
//! nibabel.

use cads::data::{read_volume_with, write_nifti, Datatype, ReadOptions};
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
    let vol = read_volume_with(input, &opts)?;
    write_nifti(output, &vol, dt)?;
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
        dt.unwrap_or(vol.datatype),
    );
    Ok(())
}

fn parse_datatype(name: &str) -> Result<Datatype> {
    Ok(match name {
        "uint8" => Datatype::Uint8,
        "int8" => Datatype::Int8,
        "int16" => Datatype::Int16,
        "uint16" => Datatype::Uint16,
        "int32" => Datatype::Int32,
        "float32" => Datatype::Float32,
        "float64" => Datatype::Float64,
        other => {
            return Err(Error::invalid(
                "cads convert --datatype",
                "uint8, int8, int16, uint16, int32, float32 or float64",
                other,
            ))
        }
    })
}
