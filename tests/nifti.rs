//! NIfTI reading and writing: round trips for every datatype and orientation, hand-crafted
//! big-endian / NIfTI-2 / qform-only files, corrupt files with named errors, and the real LIDC CT.

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

#[path = "common/scratch.rs"]
mod scratch;
use scratch::ScratchFile;

use cads::data::nifti::{decode_nifti, encode_nifti};
use cads::data::orientation::{orientation_code, reorient, to_canonical};
use cads::data::{check_label_grid, read_nifti, write_nifti, Affine, Datatype, Volume};
use cads::Error;
use std::path::PathBuf;

fn tmp(name: &str) -> ScratchFile {
    ScratchFile::new("nifti-test", name)
}

fn affine_diag(s: [f64; 3], o: [f64; 3]) -> Affine {
    [
        [s[0], 0.0, 0.0, o[0]],
        [0.0, s[1], 0.0, o[1]],
        [0.0, 0.0, s[2], o[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Values that fit every datatype: 0..=100 pattern with some structure.
fn pattern(dims: [usize; 3], signed: bool) -> Vec<f32> {
    let n = dims.iter().product::<usize>();
    (0..n)
        .map(|i| ((i * 37) % 101) as f32 - if signed { 50.0 } else { 0.0 })
        .collect()
}

fn bad_problem(e: Error) -> (String, String) {
    match e {
        Error::BadFile { path, problem, .. } => (path, problem),
        other => panic!("expected BadFile, got {other:?}"),
    }
}

#[test]
fn round_trip_every_datatype_plain_and_gz() {
    let dims = [5, 3, 7];
    let aff = affine_diag([0.7, 0.8, 2.5], [-10.0, 20.5, -30.0]);
    for dt in [
        Datatype::Uint8,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Uint16,
        Datatype::Int32,
        Datatype::Float32,
        Datatype::Float64,
    ] {
        let signed = !matches!(dt, Datatype::Uint8 | Datatype::Uint16);
        let mut data = pattern(dims, signed);
        if !dt.is_integer() {
            data.iter_mut().for_each(|v| *v *= 0.37);
        }
        let vol = Volume::new(data, dims, aff, dt).unwrap();
        for ext in ["nii", "nii.gz"] {
            let p = tmp(&format!("rt_{}.{ext}", dt.name()));
            write_nifti(&p, &vol, None).unwrap();
            let back = read_nifti(&p).unwrap();
            assert_eq!(back.dims, dims, "{dt} {ext}");
            assert_eq!(back.datatype, dt, "{dt} {ext}");
            assert_eq!(back.data, vol.data, "{dt} {ext}");
            for r in 0..4 {
                for c in 0..4 {
                    assert!(
                        (back.affine[r][c] - aff[r][c]).abs() < 1e-5,
                        "{dt} {ext} affine {:?}",
                        back.affine
                    );
                }
            }
            assert!((back.spacing[2] - 2.5).abs() < 1e-6);
        }
    }
}

#[test]
fn round_trip_every_orientation_keeps_world_positions() {
    // All 48 axis permutation × flip combinations of a 4×5×6 grid.
    let dims = [4, 5, 6];
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let spacing = [0.5, 1.25, 3.0];
    for p in perms {
        for signs in 0..8 {
            let mut aff = [[0.0; 4]; 4];
            aff[3][3] = 1.0;
            for c in 0..3 {
                let s = if signs >> c & 1 == 1 { -1.0 } else { 1.0 };
                aff[p[c]][c] = s * spacing[c];
                aff[c][3] = 7.0 * c as f64 - 3.0;
            }
            let vol = Volume::new(pattern(dims, true), dims, aff, Datatype::Int16).unwrap();
            let code = orientation_code(&aff);
            let path = tmp(&format!("orient_{code}.nii.gz"));
            write_nifti(&path, &vol, None).unwrap();
            let back = read_nifti(&path).unwrap();
            assert_eq!(orientation_code(&back.affine), code);
            assert_eq!(back.data, vol.data);
            // qform alone must agree with the sform: strip the sform and read again.
            let mut raw = encode_nifti(&vol, Datatype::Int16, "x").unwrap();
            raw[254..256].copy_from_slice(&0i16.to_le_bytes());
            let q = decode_nifti(&raw, "qform-only").unwrap();
            for r in 0..3 {
                for c in 0..4 {
                    assert!(
                        (q.affine[r][c] - aff[r][c]).abs() < 1e-5,
                        "{code}: qform affine {:?} vs {:?}",
                        q.affine,
                        aff
                    );
                }
            }
            // Canonical RAS: diagonal positive affine; every voxel keeps its world position.
            let (can, tr) = to_canonical(&back).unwrap();
            assert_eq!(orientation_code(&can.affine), "RAS", "from {code}");
            for r in 0..3 {
                assert!(can.affine[r][r] > 0.0);
            }
            for (idx, &v) in vol.data.iter().enumerate().step_by(7) {
                let ijk = [idx % 4, (idx / 4) % 5, idx / 20];
                let w = vol.world([ijk[0] as f64, ijk[1] as f64, ijk[2] as f64]);
                // Find the canonical voxel at the same world position.
                let mut found = false;
                for k in 0..can.dims[2] {
                    for j in 0..can.dims[1] {
                        for i in 0..can.dims[0] {
                            let w2 = can.world([i as f64, j as f64, k as f64]);
                            if (0..3).all(|a| (w[a] - w2[a]).abs() < 1e-9) {
                                assert_eq!(can.get(i, j, k), Some(v), "{code}");
                                found = true;
                            }
                        }
                    }
                }
                assert!(found, "{code}: voxel {ijk:?} lost its world position");
            }
            let restored = tr.inverse().apply(&can).unwrap();
            assert_eq!(restored.data, back.data);
            assert_eq!(restored.dims, back.dims);
            for r in 0..4 {
                for c in 0..4 {
                    assert!((restored.affine[r][c] - back.affine[r][c]).abs() < 1e-12);
                }
            }
            // And to LPS and back.
            let (lps, tr2) = reorient(&back, "LPS").unwrap();
            assert_eq!(orientation_code(&lps.affine), "LPS");
            assert_eq!(tr2.inverse().apply(&lps).unwrap().data, back.data);
        }
    }
}

/// A hand-written header encoder, independent of the library's writer.
struct Craft {
    version: u8,
    big: bool,
    dims: Vec<i64>,
    datatype: i16,
    bitpix: i16,
    pixdim: [f64; 8],
    vox_offset: f64,
    slope: f64,
    inter: f64,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 6],
    srow: [[f64; 4]; 3],
}

impl Craft {
    fn new(version: u8, big: bool, dims: [i64; 3], datatype: i16, bitpix: i16) -> Craft {
        Craft {
            version,
            big,
            dims: dims.to_vec(),
            datatype,
            bitpix,
            pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            vox_offset: if version == 1 { 352.0 } else { 544.0 },
            slope: 1.0,
            inter: 0.0,
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 6],
            srow: [[0.0; 4]; 3],
        }
    }

    fn header(&self) -> Vec<u8> {
        let hs: i32 = if self.version == 1 { 348 } else { 540 };
        let mut h = vec![0u8; self.vox_offset.max(hs as f64 + 4.0) as usize];
        let big = self.big;
        macro_rules! put {
            ($at:expr, $v:expr) => {{
                let b = if big {
                    $v.to_be_bytes()
                } else {
                    $v.to_le_bytes()
                };
                h[$at..$at + b.len()].copy_from_slice(&b);
            }};
        }
        put!(0, hs);
        let mut dim = [1i64; 8];
        dim[0] = self.dims.len() as i64;
        for (i, d) in self.dims.iter().enumerate() {
            dim[i + 1] = *d;
        }
        if self.version == 1 {
            for i in 0..8 {
                put!(40 + 2 * i, dim[i] as i16);
                put!(76 + 4 * i, self.pixdim[i] as f32);
            }
            put!(70, self.datatype);
            put!(72, self.bitpix);
            put!(108, self.vox_offset as f32);
            put!(112, self.slope as f32);
            put!(116, self.inter as f32);
            put!(252, self.qform_code as i16);
            put!(254, self.sform_code as i16);
            for i in 0..6 {
                put!(256 + 4 * i, self.quatern[i] as f32);
            }
            for r in 0..3 {
                for c in 0..4 {
                    put!(280 + 16 * r + 4 * c, self.srow[r][c] as f32);
                }
            }
            h[344..348].copy_from_slice(b"n+1\0");
        } else {
            h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
            put!(12, self.datatype);
            put!(14, self.bitpix);
            for i in 0..8 {
                put!(16 + 8 * i, dim[i]);
                put!(104 + 8 * i, self.pixdim[i]);
            }
            put!(168, self.vox_offset as i64);
            put!(176, self.slope);
            put!(184, self.inter);
            put!(344, self.qform_code);
            put!(348, self.sform_code);
            for i in 0..6 {
                put!(352 + 8 * i, self.quatern[i]);
            }
            for r in 0..3 {
                for c in 0..4 {
                    put!(400 + 32 * r + 8 * c, self.srow[r][c]);
                }
            }
        }
        h
    }
}

fn i16_bytes(v: &[i16], big: bool) -> Vec<u8> {
    v.iter()
        .flat_map(|x| {
            if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        })
        .collect()
}

#[test]
fn big_endian_and_nifti2_with_scaling() {
    let raw: Vec<i16> = (0..24).map(|i| i * 100 - 1000).collect();
    for version in [1u8, 2] {
        for big in [false, true] {
            let mut c = Craft::new(version, big, [2, 3, 4], 4, 16);
            c.slope = 0.5;
            c.inter = -1024.0;
            c.sform_code = 1;
            c.pixdim[1..4].copy_from_slice(&[0.7, 0.7, 2.5]);
            c.srow = [
                [-0.7, 0.0, 0.0, 10.0],
                [0.0, 0.7, 0.0, -5.0],
                [0.0, 0.0, 2.5, 3.0],
            ];
            let mut bytes = c.header();
            bytes.extend(i16_bytes(&raw, big));
            let v = decode_nifti(&bytes, "crafted")
                .unwrap_or_else(|e| panic!("v{version} big={big}: {e}"));
            assert_eq!(v.dims, [2, 3, 4]);
            assert_eq!(v.datatype, Datatype::Int16);
            let want: Vec<f32> = raw.iter().map(|&r| r as f32 * 0.5 - 1024.0).collect();
            assert_eq!(v.data, want, "v{version} big={big}");
            assert_eq!(orientation_code(&v.affine), "LAS");
            assert!((v.spacing[0] - 0.7).abs() < 1e-6);
            // gzip of the same bytes reads the same.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &bytes).unwrap();
            let gz = gz.finish().unwrap();
            assert_eq!(decode_nifti(&gz, "crafted.gz").unwrap(), v);
        }
    }
}

#[test]
fn every_datatype_big_endian() {
    let vals = [0.0f64, 1.0, 7.0, 100.0, 42.0, 3.0];
    let cases: [(i16, i16); 7] = [
        (2, 8),
        (256, 8),
        (4, 16),
        (512, 16),
        (8, 32),
        (16, 32),
        (64, 64),
    ];
    for (code, bitpix) in cases {
        let mut c = Craft::new(1, true, [3, 2, 1], code, bitpix);
        c.pixdim[1..4].copy_from_slice(&[1.0, 2.0, 3.0]);
        let mut b = c.header();
        for &v in &vals {
            match code {
                2 => b.push(v as u8),
                256 => b.push(v as i8 as u8),
                4 => b.extend((v as i16).to_be_bytes()),
                512 => b.extend((v as u16).to_be_bytes()),
                8 => b.extend((v as i32).to_be_bytes()),
                16 => b.extend((v as f32).to_be_bytes()),
                _ => b.extend(v.to_be_bytes()),
            }
        }
        let vol = decode_nifti(&b, "be").unwrap_or_else(|e| panic!("code {code}: {e}"));
        assert_eq!(
            vol.data,
            vals.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            "code {code}"
        );
        // No sform/qform: pixdim diagonal ("method 1").
        assert_eq!(vol.affine[1][1], 2.0);
        assert_eq!(vol.spacing, [1.0, 2.0, 3.0]);
    }
}

#[test]
fn qform_only_with_qfac_minus_one() {
    // Rotation 90° about z: quaternion (a, b, c, d) = (cos 45°, 0, 0, sin 45°); qfac −1 flips k.
    let s = std::f64::consts::FRAC_1_SQRT_2;
    for big in [false, true] {
        let mut c = Craft::new(1, big, [2, 2, 2], 16, 32);
        c.qform_code = 1;
        c.quatern = [0.0, 0.0, s, 5.0, 6.0, 7.0];
        c.pixdim = [-1.0, 0.5, 0.75, 2.0, 0.0, 0.0, 0.0, 0.0];
        let mut b = c.header();
        for i in 0..8 {
            let v = i as f32;
            b.extend(if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            });
        }
        let vol = decode_nifti(&b, "qform").unwrap();
        // R = [[0,-1,0],[1,0,0],[0,0,1]]; columns scaled by (0.5, 0.75, -2).
        let want = [
            [0.0, -0.75, 0.0, 5.0],
            [0.5, 0.0, 0.0, 6.0],
            [0.0, 0.0, -2.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        for r in 0..4 {
            for cc in 0..4 {
                assert!(
                    (vol.affine[r][cc] - want[r][cc]).abs() < 1e-6,
                    "{:?}",
                    vol.affine
                );
            }
        }
        assert_eq!(orientation_code(&vol.affine), "ALI");
        // Writing keeps it: sform and qform of the written file both give the same affine.
        let p = tmp("qfac.nii");
        write_nifti(&p, &vol, None).unwrap();
        let mut raw = std::fs::read(&p).unwrap();
        assert_eq!(
            f32::from_le_bytes(raw[76..80].try_into().unwrap()),
            -1.0,
            "qfac written"
        );
        raw[254..256].copy_from_slice(&0i16.to_le_bytes());
        let q = decode_nifti(&raw, "qform-only").unwrap();
        for r in 0..4 {
            for cc in 0..4 {
                assert!((q.affine[r][cc] - want[r][cc]).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn four_d_with_one_volume_is_accepted() {
    let c = Craft::new(2, false, [2, 2, 2], 2, 8);
    let mut c4 = c;
    c4.dims = vec![2, 2, 2, 1];
    let mut b = c4.header();
    b.extend([1u8, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(decode_nifti(&b, "4d1").unwrap().dims, [2, 2, 2]);
}

fn expect_bad(bytes: &[u8], name: &str, needle: &str) {
    let e = decode_nifti(bytes, name).expect_err(needle);
    let msg = e.to_string();
    let (path, problem) = bad_problem(e);
    assert_eq!(path, name);
    assert!(
        problem.contains(needle),
        "'{msg}' should mention '{needle}'"
    );
    assert!(msg.contains(name), "'{msg}' should name the file");
}

#[test]
fn corrupt_files_give_named_errors() {
    let vol = Volume::new(
        vec![1.0, 2.0, 3.0, 4.0],
        [2, 2, 1],
        affine_diag([1.0; 3], [0.0; 3]),
        Datatype::Float32,
    )
    .unwrap();
    let good = encode_nifti(&vol, Datatype::Float32, "g").unwrap();

    // Truncated gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &good).unwrap();
    let gz = gz.finish().unwrap();
    expect_bad(&gz[..gz.len() / 2], "half.nii.gz", "truncated gzip");

    // Bad magic (sizeof_hdr) and bad magic string.
    let mut b = good.clone();
    b[0..4].copy_from_slice(&349i32.to_le_bytes());
    expect_bad(&b, "sizeof.nii", "bad magic");
    let mut b = good.clone();
    b[344..348].copy_from_slice(b"xyz\0");
    expect_bad(&b, "magic.nii", "bad magic");
    expect_bad(b"GIF89a", "notnifti.nii", "bad magic");

    // Wrong vox_offset: inside the header, fractional, beyond the file.
    for (off, needle) in [
        (100.0f32, "vox_offset"),
        (352.5, "vox_offset"),
        (10_000.0, "vox_offset"),
    ] {
        let mut b = good.clone();
        b[108..112].copy_from_slice(&off.to_le_bytes());
        expect_bad(&b, "voxoff.nii", needle);
    }
    // Truncated data.
    expect_bad(&good[..good.len() - 3], "short.nii", "truncated");
    expect_bad(&good[..200], "shorthdr.nii", "truncated header");

    // Zero-size dims.
    let mut b = good.clone();
    b[44..46].copy_from_slice(&0i16.to_le_bytes());
    expect_bad(&b, "zero.nii", "zero-size dimension");

    // NaN voxels.
    let mut b = good.clone();
    b[356..360].copy_from_slice(&f32::NAN.to_le_bytes());
    expect_bad(&b, "nan.nii", "NaN");

    // 5-D data, complex data, unknown datatype.
    let mut c = Craft::new(1, false, [2, 2, 2], 2, 8);
    c.dims = vec![2, 2, 2, 1, 3];
    let mut b = c.header();
    b.extend([0u8; 24]);
    expect_bad(&b, "five.nii", "5-D");
    let c = Craft::new(1, false, [2, 2, 2], 32, 64);
    let mut b = c.header();
    b.extend([0u8; 64]);
    expect_bad(&b, "complex.nii", "complex64");
    let c = Craft::new(1, false, [2, 2, 2], 2, 16);
    let mut b = c.header();
    b.extend([0u8; 16]);
    expect_bad(&b, "bitpix.nii", "bitpix");

    // Io error names the file.
    match read_nifti("/nonexistent/x.nii") {
        Err(Error::Io { path, .. }) => assert_eq!(path, "/nonexistent/x.nii"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn label_grid_mismatch_is_named() {
    let img = Volume::new(
        vec![0.0; 8],
        [2, 2, 2],
        affine_diag([1.0; 3], [0.0; 3]),
        Datatype::Int16,
    )
    .unwrap();
    let lab = Volume::new(
        vec![0.0; 12],
        [3, 2, 2],
        affine_diag([1.0; 3], [0.0; 3]),
        Datatype::Uint8,
    )
    .unwrap();
    let (path, problem) =
        bad_problem(check_label_grid(&img, &lab, "labels/case.nii.gz").unwrap_err());
    assert_eq!(path, "labels/case.nii.gz");
    assert!(problem.contains("label grid does not match"));
    let shifted = Volume::new(
        vec![0.0; 8],
        [2, 2, 2],
        affine_diag([1.0; 3], [0.5, 0.0, 0.0]),
        Datatype::Uint8,
    )
    .unwrap();
    assert!(check_label_grid(&img, &shifted, "s").is_err());
    assert!(check_label_grid(&img, &img, "same").is_ok());
}

#[test]
fn writing_refuses_values_the_type_cannot_hold() {
    let vol = Volume::new(
        vec![0.0, 300.0],
        [2, 1, 1],
        affine_diag([1.0; 3], [0.0; 3]),
        Datatype::Float32,
    )
    .unwrap();
    let (_, problem) = bad_problem(encode_nifti(&vol, Datatype::Uint8, "out.nii").unwrap_err());
    assert!(problem.contains("does not fit uint8"), "{problem}");
}

fn sample(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-sample-data.sh (it downloads the LIDC-IDRI-0001 sample CT)", p.display());
    p
}

#[test]
fn real_lidc_ct_and_labelmap() {
    let ct = read_nifti(sample("cxr.nii.gz")).unwrap();
    assert_eq!(ct.dims, [512, 512, 133]);
    assert_eq!(ct.datatype, Datatype::Int16);
    assert!((ct.spacing[0] - 0.703125).abs() < 1e-6 && (ct.spacing[1] - 0.703125).abs() < 1e-6);
    assert!((ct.spacing[2] - 2.5).abs() < 1e-6);
    assert_eq!(orientation_code(&ct.affine), "LAS");
    let (lo, hi, mean) = ct.stats();
    assert_eq!((lo, hi), (-2048.0, 3071.0));
    assert!((mean - (-827.0)).abs() < 1.0, "mean {mean}");

    let mask = read_nifti(sample("mask.nii.gz")).unwrap();
    assert_eq!(mask.datatype, Datatype::Uint8);
    check_label_grid(&ct, &mask, "mask.nii.gz").unwrap();
    let labels = mask.distinct_values();
    let nonzero: Vec<f32> = labels.iter().copied().filter(|&l| l != 0.0).collect();
    assert_eq!(labels[0], 0.0);
    // The "90 distinct labels" counts the background: 90 distinct values = 0 and 89 organs.
    assert_eq!(labels.len(), 90, "labels {labels:?}");
    assert_eq!(nonzero.len(), 89, "labels {labels:?}");
    assert_eq!(*labels.last().unwrap(), 118.0);

    // Canonical RAS flips only the first axis.
    let (can, tr) = to_canonical(&ct).unwrap();
    assert_eq!(orientation_code(&can.affine), "RAS");
    assert_eq!(tr.flip, [true, false, false]);
    assert_eq!(can.get(0, 10, 20), ct.get(511, 10, 20));

    // A "prediction" made on the canonical grid goes back to the file's grid and is written so it
    // lies on the CT's grid (same dims and affine) with the labels where they were.
    let (mask_can, tr) = to_canonical(&mask).unwrap();
    let back = cads::data::orientation::from_canonical(&mask_can, &tr).unwrap();
    let p = tmp("lidc_pred.nii.gz");
    write_nifti(&p, &back, None).unwrap();
    let pred = read_nifti(&p).unwrap();
    check_label_grid(&ct, &pred, "lidc_pred.nii.gz").unwrap();
    assert_eq!(orientation_code(&pred.affine), "LAS");
    assert!(pred.data == mask.data);
}
