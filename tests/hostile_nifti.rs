//! Hostile NIfTI files (issue 15, items 2 and 3): decompression bombs bounded by the header and
//! the reading limit (on the stored datatype's size for a typed read), orientation read as nibabel
//! reads it, and a deterministic mutation test of the NIfTI reader and the manifest parser (bounded in time; CI
//! runs it with every test pass).

#[path = "common/hostile.rs"]
mod hostile;

mod common;

use cads::data::nifti::{decode_nifti, decode_nifti_with_limit, MAX_BYTES_ENV};
use hostile::{assert_clean_error, gzip, scratch, Craft};
use std::path::Path;

// ---- 2. Decompression bombs ------------------------------------------------------------------

#[test]
fn a_header_declaring_more_than_the_limit_is_refused_before_inflating() {
    // 1024 × 1024 × 512 int16 = 1 GiB declared; the stream holds the header and one slice only.
    let mut bytes = Craft {
        dims: [1024, 1024, 512],
        ..Default::default()
    }
    .bytes_with(|_| 0)[..352]
        .to_vec();
    bytes.extend(std::iter::repeat_n(0u8, 1 << 16));
    let gz = gzip(&bytes);
    let e = decode_nifti_with_limit(&gz, "bomb.nii.gz", 64 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bomb.nii.gz")
            && e.contains("exceeds the reading limit")
            && e.contains(MAX_BYTES_ENV),
        "{e}"
    );
    // The same through the CLI, with the limit from the environment.
    let dir = scratch("bomb");
    let p = dir.join("bomb.nii.gz");
    std::fs::write(&p, &gz).unwrap();
    let out = common::cads_command()
        .args(["inspect", p.to_str().unwrap()])
        .env(MAX_BYTES_ENV, (64u64 << 20).to_string())
        .output()
        .unwrap();
    assert_clean_error(&out, &["exceeds the reading limit", MAX_BYTES_ENV]);
}

#[test]
fn only_the_declared_bytes_are_inflated() {
    // A tiny image followed by 64 MiB of trailing zeros (a 64 KB file): the trailing data is
    // never inflated, so a 4 KiB limit suffices, and the values are those of the image.
    let craft = Craft::default();
    let mut bytes = craft.bytes();
    bytes.extend(std::iter::repeat_n(0u8, 64 << 20));
    let gz = gzip(&bytes);
    assert!(gz.len() < 1 << 20);
    let v = decode_nifti_with_limit(&gz, "trailing.nii.gz", 4096).unwrap();
    assert_eq!(v.dims, [4, 3, 2]);
    assert_eq!(v.data[5], 5.0 * 10.0 - 1000.0);
    // And a truncated stream is still an error, not a short volume.
    let cut = &gzip(&craft.bytes())[..60];
    assert!(decode_nifti_with_limit(cut, "cut.nii.gz", 4096).is_err());
    let short = &craft.bytes()[..360];
    let e = decode_nifti(short, "short.nii").unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

// ---- 3. Orientation as nibabel reads it -------------------------------------------------------

#[test]
fn qform_and_sform_read_as_nibabel_reads_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nibabel");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let vol = cads::data::read_nifti(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for r in 0..4 {
            for c in 0..4 {
                let want = case["affine"][r][c].as_f64().unwrap();
                let got = vol.affine[r][c];
                assert!(
                    (want - got).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{file}: affine[{r}][{c}] = {got}, nibabel reads {want}\n{:?}",
                    vol.affine
                );
            }
        }
    }
    // The negative pixdim[1] case reads RAS, as nibabel does (it used to read LAS).
    let vol = cads::data::read_nifti(dir.join("qform_neg_pixdim1.nii")).unwrap();
    assert_eq!(
        cads::data::orientation::orientation_code(&vol.affine),
        "RAS"
    );
}

// ---- Deterministic mutation test of the NIfTI reader and the manifest parser -------------------

/// Bounded by count and by time (CI runs it in every test pass): byte flips, header-field
/// overwrites with extreme values, truncations and gzip wrapping of a valid file, and of a
/// manifest. Every result must be a value or an error; a panic fails the test.
#[test]
fn mutated_niftis_and_manifests_never_panic() {
    let mut rng = cads::util::Rng::new(15);
    let base = Craft {
        qform_code: 1,
        sform_code: 1,
        srow: [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ],
        ..Default::default()
    }
    .bytes();
    let extremes: [[u8; 4]; 10] = [
        0i32.to_le_bytes(),
        (-1i32).to_le_bytes(),
        i32::MAX.to_le_bytes(),
        i32::MIN.to_le_bytes(),
        0x7fffi32.to_le_bytes(),
        f32::NAN.to_le_bytes(),
        f32::INFINITY.to_le_bytes(),
        3.4e38f32.to_le_bytes(),
        1e-40f32.to_le_bytes(),
        (-2.0f32).to_le_bytes(),
    ];
    // CADS_MUTATION_SECS=600 runs a longer search (no count bound); the default is CI's.
    let long: Option<u64> = std::env::var("CADS_MUTATION_SECS")
        .ok()
        .and_then(|v| v.parse().ok());
    let (max_n, secs) = match long {
        Some(secs) => (usize::MAX, secs),
        None => (20_000, 10),
    };
    let start = std::time::Instant::now();
    let mut n = 0;
    while n < max_n && start.elapsed().as_secs() < secs {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                1 => {
                    // An extreme value over a header field (fields are 2- or 4-byte aligned).
                    let at = 2 * rng.below(350 / 2 - 2);
                    let v = extremes[rng.below(extremes.len())];
                    let w = if rng.below(2) == 0 { 2 } else { 4 };
                    if at + w <= b.len() {
                        b[at..at + w].copy_from_slice(&v[..w]);
                    }
                }
                2 => b.truncate(rng.below(b.len() + 1)),
                0 => {}
                _ => b.extend(std::iter::repeat_n(0xff, rng.below(64))),
            }
        }
        let bytes = if rng.below(4) == 0 { gzip(&b) } else { b };
        let _ = cads::data::nifti::decode_nifti_with_limit(&bytes, "mutant.nii", 1 << 20);
        n += 1;
    }
    assert!(n >= 1000, "only {n} mutants in the time bound");
    // Manifests: mutate a valid one character by character.
    let manifest = "\u{feff}{\"training\": [{\"image\": \"a.nii\", \"label\": \"b.nii\"}, {\"image\": \"../c.nii.gz\"}]}";
    let chars: Vec<char> = manifest.chars().collect();
    let pool = [
        '{', '}', '[', ']', '"', ':', ',', '\\', '\0', '\u{feff}', 'x', '/', '.', ' ',
    ];
    for _ in 0..5_000 {
        let mut c = chars.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(c.len());
            match rng.below(3) {
                0 => c[i] = pool[rng.below(pool.len())],
                1 => {
                    c.remove(i);
                }
                _ => c.insert(i, pool[rng.below(pool.len())]),
            }
        }
        let text: String = c.into_iter().collect();
        let _ = cads::data::loader::parse_manifest(&text, Path::new("/tmp/m/dataset.json"));
    }
}
