//! `cads inspect` on a written labelmap and on the real CT.

mod common;
#[path = "common/scratch.rs"]
mod scratch;

use scratch::ScratchDir;

use cads::data::{write_nifti, Datatype, Volume};

fn inspect(args: &[&str]) -> (bool, String, String) {
    let out = common::cads_command()
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn inspect_json_of_a_labelmap() {
    let dir = ScratchDir::new("inspect");
    let p = dir.join("lab.nii.gz");
    let aff = [
        [-2.0, 0.0, 0.0, 1.0],
        [0.0, -1.0, 0.0, 2.0],
        [0.0, 0.0, 3.0, 3.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let vol = Volume::new(
        vec![0.0, 0.0, 3.0, 7.0, 7.0, 7.0],
        [3, 2, 1],
        aff,
        Datatype::Uint8,
    )
    .unwrap();
    write_nifti(&p, &vol, None).unwrap();
    let (ok, out, err) = inspect(&[p.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    for needle in [
        "\"shape\": [3, 2, 1]",
        "\"spacing_mm\": [2, 1, 3]",
        "\"orientation\": \"LPS\"",
        "\"datatype\": \"uint8\"",
        "\"labels\": [0, 3, 7]",
        "\"label_voxels\": [2, 1, 3]",
        "\"min\": 0, \"max\": 7, \"mean\": 4",
    ] {
        assert!(out.contains(needle), "{needle} not in {out}");
    }
    let (ok, _, err) = inspect(&[dir.join("missing.nii").to_str().unwrap()]);
    assert!(!ok && err.contains("missing.nii"), "{err}");
}

#[test]
fn inspect_real_ct() {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/cxr.nii.gz");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-sample-data.sh",
        p.display()
    );
    let (ok, out, err) = inspect(&[p.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("orientation: LAS") && out.contains("min -2048 max 3071"),
        "{out}"
    );
    assert!(!out.contains("labels:"), "a CT is not a labelmap: {out}");
}
