//! NRRD reading: files written here by hand (each encoding, byte order and type, attached and
//! detached, space directions in LPS and RAS) read back to the same volume as the same data
//! written as NIfTI; headers that lie about their size are errors; the fetched pyradiomics lung
//! CTs read with their stated geometry and a plausible HU range.

#![allow(clippy::needless_range_loop)]

#[path = "common/scratch.rs"]
mod scratch;
use scratch::ScratchDir;

use cads::data::nrrd::read_nrrd;
use cads::data::{read_nifti, read_volume, write_nifti, Affine, Datatype, Volume};
use std::io::Write;
use std::path::PathBuf;

fn tmpdir(tag: &str) -> ScratchDir {
    ScratchDir::new(&format!("nrrd-{tag}"))
}

const DIMS: [usize; 3] = [5, 4, 3];

/// An oblique LPS geometry: voxel axes rotated 30° about the superior axis, 0.7 × 0.9 × 2.5 mm.
/// Columns are the NRRD space directions (LPS); the RAS affine negates the first two rows.
fn lps_directions() -> ([[f64; 3]; 3], [f64; 3]) {
    let (s, c) = (30f64.to_radians().sin(), 30f64.to_radians().cos());
    let dirs = [
        [0.7 * c, 0.7 * s, 0.0],
        [-0.9 * s, 0.9 * c, 0.0],
        [0.0, 0.0, -2.5], // a negative slice step: k runs inferior
    ];
    (dirs, [-120.5, 33.25, 410.0])
}

fn ras_affine() -> Affine {
    let (d, o) = lps_directions();
    let sign = [-1.0, -1.0, 1.0];
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] = sign[r] * d[c][r];
        }
        a[r][3] = sign[r] * o[r];
    }
    a[3][3] = 1.0;
    a
}

/// Test values for a type: a deterministic spread over (part of) its range, negative when signed.
fn values(ty: &str) -> Vec<f64> {
    let n = DIMS.iter().product::<usize>();
    (0..n)
        .map(|i| {
            let t = (i * 37 % n) as f64;
            match ty {
                "int8" => t * 2.0 - 100.0,
                "uint8" => t * 4.0,
                "int16" => t * 50.0 - 1024.0,
                "uint16" => t * 1000.0,
                "int32" => t * 70000.0 - 1_000_000.0,
                "uint32" => t * 1000.0,
                "float" => t * 0.25 - 3.5,
                _ => t * 0.125 - 1000.0,
            }
        })
        .collect()
}

fn encode(ty: &str, v: &[f64], big: bool) -> Vec<u8> {
    let mut out = Vec::new();
    macro_rules! put {
        ($t:ty) => {
            for &x in v {
                let b = (x as $t).to_le_bytes();
                if big {
                    out.extend(b.iter().rev());
                } else {
                    out.extend_from_slice(&b);
                }
            }
        };
    }
    match ty {
        "int8" => put!(i8),
        "uint8" => put!(u8),
        "int16" => put!(i16),
        "uint16" => put!(u16),
        "int32" => put!(i32),
        "uint32" => put!(u32),
        "float" => put!(f32),
        _ => put!(f64),
    }
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn vec3(v: [f64; 3]) -> String {
    format!("({},{},{})", v[0], v[1], v[2])
}

/// A header with LPS space directions.
fn header(ty: &str, encoding: &str, endian: &str, sizes: [usize; 3], extra: &str) -> String {
    let (d, o) = lps_directions();
    format!(
        "NRRD0004\n# written by tests/nrrd.rs\ntype: {ty}\ndimension: 3\nspace: left-posterior-superior\nsizes: {} {} {}\nspace directions: {} {} {}\nkinds: domain domain domain\nendian: {endian}\nencoding: {encoding}\nspace origin: {}\nspace units: \"mm\" \"mm\" \"mm\"\nsome key:=some value\n{extra}",
        sizes[0], sizes[1], sizes[2], vec3(d[0]), vec3(d[1]), vec3(d[2]), vec3(o)
    )
}

fn assert_same(a: &Volume, b: &Volume, what: &str) {
    assert_eq!(a.dims, b.dims, "{what}: dims");
    assert_eq!(a.data, b.data, "{what}: values");
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (a.affine[r][c] - b.affine[r][c]).abs() < 1e-4,
                "{what}: affine[{r}][{c}] {} vs {}",
                a.affine[r][c],
                b.affine[r][c]
            );
        }
    }
}

#[test]
fn every_encoding_and_type_matches_the_nifti_of_the_same_data() {
    let dir = tmpdir("enc");
    for ty in [
        "int8", "uint8", "int16", "uint16", "int32", "uint32", "float", "double",
    ] {
        let v = values(ty);
        // The same data as NIfTI (float64 keeps every test value exactly), read back.
        let expect = Volume::new(
            v.iter().map(|&x| x as f32).collect(),
            DIMS,
            ras_affine(),
            Datatype::Float64,
        )
        .unwrap();
        let nii = dir.join(format!("{ty}.nii.gz"));
        write_nifti(&nii, &expect, None).unwrap();
        let expect = read_nifti(&nii).unwrap();

        for (encoding, endian) in [
            ("raw", "little"),
            ("raw", "big"),
            ("gzip", "little"),
            ("gzip", "big"),
            ("ascii", "little"),
        ] {
            let raw = encode(ty, &v, endian == "big");
            let body = match encoding {
                "raw" => raw.clone(),
                "gzip" => gzip(&raw),
                _ => v
                    .iter()
                    .map(|x| format!("{x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into_bytes(),
            };
            // Attached.
            let p = dir.join(format!("{ty}-{encoding}-{endian}.nrrd"));
            let mut f = header(ty, encoding, endian, DIMS, "\n").into_bytes();
            f.extend_from_slice(&body);
            std::fs::write(&p, &f).unwrap();
            let what = format!("{ty} {encoding} {endian} attached");
            let got = read_volume(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_same(&got, &expect, &what);

            // Detached: .nhdr + data file, found next to the header.
            let data_name = format!("{ty}-{encoding}-{endian}.data");
            std::fs::write(dir.join(&data_name), &body).unwrap();
            let h = dir.join(format!("{ty}-{encoding}-{endian}.nhdr"));
            std::fs::write(
                &h,
                header(
                    ty,
                    encoding,
                    endian,
                    DIMS,
                    &format!("data file: {data_name}\n"),
                ),
            )
            .unwrap();
            let what = format!("{ty} {encoding} {endian} detached");
            let got = read_volume(&h).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_same(&got, &expect, &what);
        }
    }
}

#[test]
fn ras_space_spacings_and_byte_skip() {
    let dir = tmpdir("space");
    let v = values("int16");
    let raw = encode("int16", &v, false);
    // RAS space: directions are already the affine's columns.
    let p = dir.join("ras.nrrd");
    let mut f = b"NRRD0005\ntype: short\ndimension: 3\nspace: RAS\nsizes: 5 4 3\nspace directions: (0,2,0) (-1.5,0,0) (0,0,3)\nendian: little\nencoding: raw\nspace origin: (10,-20,30)\n\n".to_vec();
    f.extend_from_slice(&raw);
    std::fs::write(&p, &f).unwrap();
    let got = read_nrrd(&p).unwrap();
    let want = [
        [0.0, -1.5, 0.0, 10.0],
        [2.0, 0.0, 0.0, -20.0],
        [0.0, 0.0, 3.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(got.affine, want);
    assert_eq!(got.spacing, [2.0, 1.5, 3.0]);
    assert_eq!(got.datatype, Datatype::Int16);
    assert_eq!(got.data, v.iter().map(|&x| x as f32).collect::<Vec<_>>());
    assert_eq!(
        cads::data::orientation::orientation_code(&got.affine),
        "ALS"
    );

    // No space: `spacings` on the diagonal, origin 0; a byte skip before the data.
    let p = dir.join("spacings.nrrd");
    let mut f = b"NRRD0004\ntype: int16\ndimension: 3\nsizes: 5 4 3\nspacings: 0.5 0.75 2\nendian: little\nencoding: raw\nbyte skip: 7\n\n".to_vec();
    f.extend_from_slice(&[9u8; 7]);
    f.extend_from_slice(&raw);
    std::fs::write(&p, &f).unwrap();
    let got = read_nrrd(&p).unwrap();
    assert_eq!(got.spacing, [0.5, 0.75, 2.0]);
    assert_eq!(got.affine[0][3], 0.0);
    assert_eq!(got.data[7], v[7] as f32);
}

fn err_of(name: &str, bytes: &[u8]) -> String {
    let dir = tmpdir("bad");
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    match read_volume(&p) {
        Ok(v) => panic!("{name}: read a {:?} volume from bad input", v.dims),
        Err(e) => e.to_string(),
    }
}

#[test]
fn headers_that_lie_about_their_size_are_errors() {
    let v = values("int16");
    let raw = encode("int16", &v, false);
    for (encoding, body) in [("raw", raw.clone()), ("gzip", gzip(&raw))] {
        // The header claims one more slice than the data holds.
        let mut f = header("int16", encoding, "little", [5, 4, 4], "\n").into_bytes();
        f.extend_from_slice(&body);
        let e = err_of(&format!("short-{encoding}.nrrd"), &f);
        assert!(
            e.contains("short-") && e.contains("too short") && e.contains("160 bytes"),
            "{e}"
        );
        // The header claims one slice fewer.
        let mut f = header("int16", encoding, "little", [5, 4, 2], "\n").into_bytes();
        f.extend_from_slice(&body);
        let e = err_of(&format!("long-{encoding}.nrrd"), &f);
        assert!(e.contains("too long") && e.contains("80 bytes"), "{e}");
    }
    // A gzip stream cut short.
    let mut f = header("int16", "gzip", "little", DIMS, "\n").into_bytes();
    let z = gzip(&raw);
    f.extend_from_slice(&z[..z.len() / 2]);
    let e = err_of("cut.nrrd", &f);
    assert!(e.contains("gzip"), "{e}");
    // Huge declared sizes: an overflow or a short read, never an allocation of the claim.
    let mut f = header(
        "double",
        "gzip",
        "little",
        [1 << 30, 1 << 30, 1 << 30],
        "\n",
    )
    .into_bytes();
    f.extend_from_slice(&z);
    let e = err_of("huge.nrrd", &f);
    assert!(e.contains("overflow") || e.contains("too short"), "{e}");
}

#[test]
fn other_bad_headers_are_named() {
    let raw = encode("int16", &values("int16"), false);
    let cases: Vec<(&str, String, &str)> = vec![
        ("magic.nrrd", "NRRX0004\n\n".into(), "not a NRRD file"),
        (
            "endian.nrrd",
            header("int16", "raw", "little", DIMS, "\n").replace("endian: little\n", ""),
            "endian",
        ),
        (
            "kinds.nrrd",
            header("int16", "raw", "little", DIMS, "\n")
                .replace("kinds: domain domain domain", "kinds: vector domain domain"),
            "kind \"vector\"",
        ),
        (
            "type.nrrd",
            header("int16", "raw", "little", DIMS, "\n").replace("type: int16", "type: block"),
            "type \"block\"",
        ),
        (
            "space.nrrd",
            header("int16", "raw", "little", DIMS, "\n")
                .replace("left-posterior-superior", "right-anterior-superior-time"),
            "space",
        ),
        (
            "dirs.nrrd",
            header("int16", "raw", "little", DIMS, "\n")
                .replace("space directions: (", "space directions: none ("),
            "space directions",
        ),
        (
            "detached.nhdr",
            header("int16", "raw", "little", DIMS, "data file: nowhere.raw\n"),
            "nowhere.raw",
        ),
    ];
    for (name, h, needle) in cases {
        let mut f = h.into_bytes();
        if name.ends_with(".nrrd") {
            f.extend_from_slice(&raw);
        }
        let e = err_of(name, &f);
        assert!(e.contains(name) || e.contains("nowhere"), "{name}: {e}");
        assert!(e.contains(needle), "{name}: {needle:?} not in {e}");
    }
}

/// The pyradiomics lung CTs from scripts/fetch-sample-data.sh.
#[test]
fn fetched_pyradiomics_lung_ct() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/pyradiomics");
    let img = root.join("lung1_image.nrrd");
    assert!(
        img.exists(),
        "{} is missing: run scripts/fetch-sample-data.sh",
        img.display()
    );
    let v = read_volume(&img).unwrap();
    assert_eq!(v.dims, [512, 512, 48]);
    // LPS directions diag(0.5703125, 0.5703125, 5), origin (−146, −325, −777.5) → RAS.
    let want = [
        [-0.5703125, 0.0, 0.0, 146.0],
        [0.0, -0.5703125, 0.0, 325.0],
        [0.0, 0.0, 5.0, -777.5],
    ];
    for r in 0..3 {
        for c in 0..4 {
            assert!((v.affine[r][c] - want[r][c]).abs() < 1e-6, "{:?}", v.affine);
        }
    }
    let (lo, hi, mean) = v.stats();
    assert!((-3100.0..=-900.0).contains(&lo), "min HU {lo}");
    assert!((1000.0..=5000.0).contains(&hi), "max HU {hi}");
    assert!((-900.0..=0.0).contains(&mean), "mean HU {mean}");
    // Its label lies on the same grid and marks a tumour.
    let lab = read_volume(root.join("lung1_label.nrrd")).unwrap();
    cads::data::check_label_grid(&v, &lab, "lung1_label.nrrd").unwrap();
    let n = lab.data.iter().filter(|&&x| x > 0.0).count();
    assert!(n > 100, "{n} tumour voxels");
}

/// The InVesalius head CT (a detached `.nhdr` that scripts/fetch-sample-data.sh writes next to
/// the project's raw matrix.dat).
#[test]
fn fetched_invesalius_head_ct() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/invesalius-cranium");
    let h = root.join("cranium.nhdr");
    assert!(
        h.exists(),
        "{} is missing: run scripts/fetch-sample-data.sh (it needs apt-get for the Debian package invesalius-examples)",
        h.display()
    );
    let v = read_volume(&h).unwrap();
    assert_eq!(v.dims, [256, 256, 108]);
    assert!((v.spacing[0] - 0.9570312).abs() < 1e-6 && (v.spacing[2] - 1.5).abs() < 1e-9);
    let (lo, hi, mean) = v.stats();
    assert_eq!(lo, -1024.0);
    assert!((2000.0..=4000.0).contains(&hi), "max HU {hi}");
    assert!((-900.0..=0.0).contains(&mean), "mean HU {mean}");
}
