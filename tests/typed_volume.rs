//! Voxels kept in their own datatype (issue 15, item 2): a file read typed holds its stored
//! element type (an int16 CT 2 bytes per voxel, a uint8 label map 1) with its scaling, converts
//! to the same f32 volume the f32 reader gives, is bounded by the reading limit on its own size,
//! and `cads convert` keeps the datatype and scaling unless `--datatype` asks for another.

#[path = "common/hostile.rs"]
mod hostile;

use cads::data::nifti::{
    decode_nifti, decode_nifti_typed, decode_nifti_typed_with_limit, decode_nifti_with_limit,
};
use cads::data::{
    read_nifti, read_typed_volume, read_volume, write_nifti, write_typed_nifti, Datatype, Scaling,
    TypedVolume, Volume, Voxels,
};
use hostile::{assert_clean_error, cads, gzip, scratch, Craft};

/// An int16 CT-like file: stored values −1000 + 10 i, scl_slope 0.5, scl_inter −24.
fn scaled_int16() -> Craft {
    Craft {
        dims: [5, 4, 3],
        scl: [0.5, -24.0],
        ..Default::default()
    }
}

#[test]
fn an_int16_file_read_typed_holds_two_bytes_per_voxel_and_the_f32_values() {
    let craft = scaled_int16();
    for (name, bytes) in [
        ("ct.nii", craft.bytes()),
        ("ct.nii.gz", gzip(&craft.bytes())),
    ] {
        let typed = decode_nifti_typed(&bytes, name).unwrap();
        let n = 5 * 4 * 3;
        assert_eq!(typed.datatype(), Datatype::Int16);
        assert_eq!(typed.voxels.byte_len(), 2 * n);
        let Voxels::I16(stored) = &typed.voxels else {
            panic!("{name}: {:?}", typed.datatype())
        };
        // Stored values as written, not scaled.
        assert_eq!(stored[7], 10 * 7 - 1000);
        assert_eq!(
            typed.scaling,
            Some(Scaling {
                slope: 0.5,
                inter: -24.0
            })
        );
        // Converting gives exactly the f32 reader's volume.
        let f32_path = decode_nifti(&bytes, name).unwrap();
        assert_eq!(f32_path.data[7], (10.0 * 7.0 - 1000.0) * 0.5 - 24.0);
        assert_eq!(typed.to_f32_volume().unwrap(), f32_path);
        assert_eq!(typed.clone().into_f32_volume().unwrap(), f32_path);
        // Statistics streamed over the typed data equal the f32 volume's.
        assert_eq!(typed.stats(), f32_path.stats());
    }
}

#[test]
fn a_uint8_label_map_stays_uint8() {
    let dir = scratch("typed-labels");
    let p = dir.join("labels.nii.gz");
    let labels: Vec<f32> = (0..6 * 5 * 4).map(|i| (i % 3) as f32).collect();
    let vol = Volume::new(
        labels,
        [6, 5, 4],
        cads::data::volume::IDENTITY,
        Datatype::Uint8,
    )
    .unwrap();
    write_nifti(&p, &vol, None).unwrap();
    let typed = read_typed_volume(&p).unwrap();
    assert_eq!(typed.voxels.byte_len(), 6 * 5 * 4);
    assert!(matches!(typed.voxels, Voxels::U8(_)));
    assert_eq!(typed.scaling, None);
    assert_eq!(typed.label_counts(), vec![(0.0, 40), (1.0, 40), (2.0, 40)]);
    assert_eq!(typed.count_distinct_up_to(1000), Some(3));
    assert_eq!(typed.to_f32_volume().unwrap(), read_volume(&p).unwrap());
}

#[test]
fn the_reading_limit_is_enforced_on_the_typed_size() {
    // 64 × 64 × 32 int16: 262,144 voxel bytes after the 352-byte header; 524,288 as f32.
    let bytes = Craft {
        dims: [64, 64, 32],
        ..Default::default()
    }
    .bytes();
    let declared = 352 + 2 * 64 * 64 * 32;
    // Exactly the declared size: the typed read fits, the f32 volume (twice as large) does not.
    let typed = decode_nifti_typed_with_limit(&bytes, "limit.nii", declared).unwrap();
    assert_eq!(typed.voxels.byte_len(), 2 * 64 * 64 * 32);
    let e = decode_nifti_with_limit(&bytes, "limit.nii", declared)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the f32 volume") && e.contains("limit.nii"),
        "{e}"
    );
    // One byte less: refused typed too, before any voxel is read.
    let e = decode_nifti_typed_with_limit(&bytes, "limit.nii", declared - 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceeds the reading limit"), "{e}");
    // A gzip bomb (a header declaring 1 GiB, a 64 KiB stream) is refused typed as well.
    let mut bomb = Craft {
        dims: [1024, 1024, 512],
        ..Default::default()
    }
    .bytes_with(|_| 0)[..352]
        .to_vec();
    bomb.extend(std::iter::repeat_n(0u8, 1 << 16));
    let e = decode_nifti_typed_with_limit(&gzip(&bomb), "bomb.nii.gz", 64 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceeds the reading limit"), "{e}");
}

#[test]
fn nan_voxels_are_refused_typed_as_in_f32() {
    let mut bytes = Vec::new();
    let v = Volume::new(
        vec![1.0; 8],
        [2, 2, 2],
        cads::data::volume::IDENTITY,
        Datatype::Float32,
    )
    .unwrap();
    bytes.extend(cads::data::nifti::encode_nifti(&v, Datatype::Float32, "nan.nii").unwrap());
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = decode_nifti_typed(&bytes, "nan.nii")
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN/Inf") && e.contains("[1, 1, 1]"), "{e}");
    assert!(decode_nifti(&bytes, "nan.nii").is_err());
}

#[test]
fn nrrd_reads_typed_too() {
    let dir = scratch("typed-nrrd");
    for (ty, size, values) in [
        ("ushort", 2usize, vec![0u32, 1, 65535, 7]),
        ("uint", 4, vec![0u32, 1, 4_000_000_000, 7]),
    ] {
        let p = dir.join(format!("{ty}.nrrd"));
        let mut text = format!(
            "NRRD0004\ntype: {ty}\ndimension: 3\nsizes: 2 2 1\nendian: little\nencoding: raw\nspacings: 1 1 1\n\n"
        )
        .into_bytes();
        for v in &values {
            text.extend_from_slice(&v.to_le_bytes()[..size]);
        }
        std::fs::write(&p, text).unwrap();
        let typed = read_typed_volume(&p).unwrap();
        assert_eq!(typed.voxels.byte_len(), size * 4, "{ty}");
        match (&typed.voxels, ty) {
            (Voxels::U16(v), "ushort") => assert_eq!(v, &[0, 1, 65535, 7]),
            (Voxels::U32(v), "uint") => assert_eq!(v, &[0, 1, 4_000_000_000, 7]),
            (other, _) => panic!("{ty}: {:?}", other.datatype()),
        }
        assert_eq!(typed.to_f32_volume().unwrap(), read_volume(&p).unwrap());
    }
}

#[test]
fn convert_keeps_the_datatype_and_scaling_unless_asked() {
    let dir = scratch("typed-convert");
    let input = dir.join("ct.nii");
    scaled_int16().write(&input);
    let original = read_typed_volume(&input).unwrap();

    // Default: int16 with its slope and intercept, every stored value unchanged.
    let same = dir.join("same.nii.gz");
    let out = cads(&["convert", input.to_str().unwrap(), same.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read_typed_volume(&same).unwrap();
    assert_eq!(got.voxels, original.voxels);
    assert_eq!(got.scaling, original.scaling);
    assert_eq!(
        got.to_f32_volume().unwrap().data,
        read_nifti(&input).unwrap().data
    );

    // --datatype float32: the scaled values, stored as float32, no scaling.
    let float = dir.join("float.nii");
    let out = cads(&[
        "convert",
        input.to_str().unwrap(),
        float.to_str().unwrap(),
        "--datatype",
        "float32",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read_typed_volume(&float).unwrap();
    assert_eq!(got.voxels, Voxels::F32(read_nifti(&input).unwrap().data));
    assert_eq!(got.scaling, None);

    // --datatype uint8 cannot hold −524 HU: a clean error naming the input, nothing written.
    let small = dir.join("small.nii");
    let out = cads(&[
        "convert",
        input.to_str().unwrap(),
        small.to_str().unwrap(),
        "--datatype",
        "uint8",
    ]);
    assert_clean_error(&out, &["ct.nii", "uint8"]);
    assert!(!small.exists());
}

#[test]
fn a_float64_volume_keeps_every_digit_through_convert() {
    let dir = scratch("typed-f64");
    let input = dir.join("f64.nii");
    // 0.1 and 1/3 are not f32 values: the f32 path would round them.
    let values = vec![0.1, 1.0 / 3.0, -1e-7, 12345.678901234];
    let vol = TypedVolume::new(
        Voxels::F64(values.clone()),
        [2, 2, 1],
        cads::data::volume::IDENTITY,
        None,
    )
    .unwrap();
    write_typed_nifti(&input, &vol).unwrap();
    let out_path = dir.join("out.nii.gz");
    let out = cads(&[
        "convert",
        input.to_str().unwrap(),
        out_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_typed_volume(&out_path).unwrap().voxels,
        Voxels::F64(values)
    );
}

#[test]
fn a_dicom_like_f32_volume_of_whole_values_narrows_to_its_datatype() {
    let vol = Volume::new(
        vec![-1000.0, 0.0, 40.0, 3071.0],
        [2, 2, 1],
        cads::data::volume::IDENTITY,
        Datatype::Int16,
    )
    .unwrap();
    let typed = TypedVolume::from_f32_volume(vol.clone());
    assert_eq!(typed.voxels, Voxels::I16(vec![-1000, 0, 40, 3071]));
    assert_eq!(typed.to_f32_volume().unwrap(), vol);
    // A value that does not fit stays f32 (nothing is lost).
    let half = Volume {
        data: vec![0.5, 0.0, 0.0, 0.0],
        ..vol
    };
    assert!(matches!(
        TypedVolume::from_f32_volume(half).voxels,
        Voxels::F32(_)
    ));
}

#[test]
fn inspect_reports_the_stored_datatype_of_a_scaled_file() {
    let dir = scratch("typed-inspect");
    let p = dir.join("ct.nii");
    scaled_int16().write(&p);
    let out = cads(&["inspect", p.to_str().unwrap(), "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (lo, hi, _) = read_nifti(&p).unwrap().stats();
    assert!(text.contains("\"datatype\": \"int16\""), "{text}");
    assert!(
        text.contains(&format!("\"min\": {lo}")) && text.contains(&format!("\"max\": {hi}")),
        "{text}"
    );
}
