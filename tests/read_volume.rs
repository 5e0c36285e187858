//! `data::read_volume` picks the reader from a folder, the extension, or, for a file named
//! otherwise, its first bytes; unknown and missing input are named errors.

#[path = "common/scratch.rs"]
mod scratch;
use scratch::ScratchDir;

use cads::data::read::detect_format;
use cads::data::{
    read_volume, read_volume_with, write_nifti, Datatype, ReadOptions, Volume, VolumeFormat,
};

fn tmpdir() -> ScratchDir {
    ScratchDir::new("read-volume")
}

#[test]
fn format_from_content_when_the_name_says_nothing() {
    let dir = tmpdir();
    let aff = [
        [-1.5, 0.0, 0.0, 4.0],
        [0.0, 2.0, 0.0, -3.0],
        [0.0, 0.0, 2.5, 1.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let vol = Volume::new(
        (0..24).map(|v| v as f32 - 7.0).collect(),
        [2, 3, 4],
        aff,
        Datatype::Int16,
    )
    .unwrap();

    // NIfTI, gzip and plain, under names without an extension.
    for (name, gz) in [("nifti_gz", true), ("nifti_plain", false)] {
        let tmp = dir.join(if gz { "v.nii.gz" } else { "v.nii" });
        write_nifti(&tmp, &vol, None).unwrap();
        let p = dir.join(name);
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(detect_format(&p).unwrap(), VolumeFormat::Nifti);
        assert_eq!(read_volume(&p).unwrap().data, vol.data);
    }

    // NRRD by its magic.
    let mut nrrd = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 3 4\nspacings: 1 1 1\nendian: little\nencoding: raw\n\n".to_vec();
    for v in &vol.data {
        nrrd.extend_from_slice(&(*v as i16).to_le_bytes());
    }
    let p = dir.join("nrrd_noext");
    std::fs::write(&p, &nrrd).unwrap();
    assert_eq!(detect_format(&p).unwrap(), VolumeFormat::Nrrd);
    assert_eq!(read_volume(&p).unwrap().data, vol.data);

    // DICOM by its preamble; a folder is a DICOM series.
    let mut dicm = vec![0u8; 128];
    dicm.extend_from_slice(b"DICM");
    let p = dir.join("dicom_noext");
    std::fs::write(&p, &dicm).unwrap();
    assert_eq!(detect_format(&p).unwrap(), VolumeFormat::DicomSeries);
    assert_eq!(detect_format(&dir).unwrap(), VolumeFormat::DicomSeries);

    // Something else, and nothing at all.
    let p = dir.join("notes.txt");
    std::fs::write(&p, "hello").unwrap();
    let e = read_volume(&p).unwrap_err().to_string();
    assert!(
        e.contains("notes.txt") && e.contains("unknown format"),
        "{e}"
    );
    let e = read_volume(dir.join("absent.nrrd"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("absent.nrrd") && e.contains("no such file"),
        "{e}"
    );

    // A series UID only means something for DICOM.
    let opts = ReadOptions {
        series_uid: Some("1.2.3".into()),
    };
    let e = read_volume_with(dir.join("nrrd_noext"), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("series UID") && e.contains("nrrd_noext"), "{e}");
}
