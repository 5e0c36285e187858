//! The CADS preprocessing cache (src/pretrain/cache.rs): unusable inputs are skipped and listed,
//! a second pass reads only the cache, a changed input or config rebuilds, and a folder with no
//! usable volume is a clear error. Host-only (the CPU DRR projector), so no adapter is needed.

use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::write_nifti;
use cads::pretrain::cache::{
    build_cache, list_inputs, preprocess_volume, CacheConfig, VolumeSource,
};
use cads::pretrain::cads_views::ParallelLineIntegral;
use cads::pretrain::{cads_tiles, extract_tile};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cads_pretrain_cache_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_phantom(dims: [usize; 3], spacing_mm: [f64; 3], path: &Path) {
    let (ct, _) = phantom(&PhantomConfig {
        dims,
        spacing_mm,
        noise_hu: 5.0,
        seed: 1,
    })
    .unwrap();
    write_nifti(path, &ct, None).unwrap();
}

/// good (80×80×40 mm), truncated (half a gzip), too small (10 slices at 1 mm).
fn mixed_folder(root: &Path) -> PathBuf {
    let data = root.join("cts");
    std::fs::create_dir_all(&data).unwrap();
    small_phantom([40, 40, 20], [2.0, 2.0, 2.0], &data.join("a_good.nii.gz"));
    small_phantom(
        [40, 40, 20],
        [2.0, 2.0, 2.0],
        &data.join("b_truncated.nii.gz"),
    );
    let bytes = std::fs::read(data.join("b_truncated.nii.gz")).unwrap();
    std::fs::write(data.join("b_truncated.nii.gz"), &bytes[..bytes.len() / 2]).unwrap();
    small_phantom([20, 20, 10], [1.0, 1.0, 1.0], &data.join("c_small.nii.gz"));
    std::fs::write(data.join("notes.txt"), "not a CT").unwrap();
    data
}

#[test]
fn skips_unusable_volumes_and_reuses_the_cache() {
    let root = tmp("mixed");
    let data = mixed_folder(&root);
    let sources = list_inputs(Some(&data)).unwrap();
    assert_eq!(
        sources.len(),
        3,
        "the three NIfTI files, sorted, not notes.txt"
    );
    let cache = root.join("cache");
    let cfg = CacheConfig::default();
    let proj = ParallelLineIntegral::default();
    let mut logs = Vec::new();
    let r = build_cache(&sources, &cache, &cfg, &proj, |m| logs.push(m.to_string())).unwrap();
    assert_eq!(r.volumes.len(), 1);
    assert_eq!((r.built, r.hits), (1, 0));
    assert!(r.names[0].ends_with("a_good.nii.gz"));
    let skipped: Vec<&str> = r.skipped.iter().map(|(n, _)| n.as_str()).collect();
    assert!(skipped[0].ends_with("b_truncated.nii.gz"), "{skipped:?}");
    assert!(skipped[1].ends_with("c_small.nii.gz"), "{skipped:?}");
    assert!(
        r.skipped[1].1.contains("at least [16, 64, 64]"),
        "{}",
        r.skipped[1].1
    );
    assert_eq!(logs.iter().filter(|m| m.starts_with("warning")).count(), 2);
    // 1 mm: 40 slices → tiles at 0 and 12 (24 deep), in-plane 80 ≤ 320 kept whole; DRR 96².
    let v = &r.volumes[0];
    assert_eq!(v.tile_count(), 2);
    assert_eq!(v.tile(0).unwrap().shape, [24, 80, 80]);
    assert_eq!(v.drr.shape, [1, 96, 96]);
    assert!(v.drr.data.iter().all(|x| (-1.0..=1.0).contains(x)));
    assert!(v
        .tile(0)
        .unwrap()
        .data
        .iter()
        .all(|x| (-1024.0..=1024.0).contains(x)));
    // The tiles read from the cache file are the slabs of the preprocessed volume (independent:
    // preprocess_volume and extract_tile in memory).
    let ct = cads::data::read_volume(data.join("a_good.nii.gz")).unwrap();
    let (iso, drr) = preprocess_volume(&ct, &cfg, &proj).unwrap();
    assert_eq!(v.drr, drr);
    for (t, tile) in cads_tiles(iso.shape, &cfg.tiling)
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(*v.tile(t).unwrap(), extract_tile(&iso, tile), "tile {t}");
    }
    assert!(v.tile(2).is_err());

    // Second pass: everything usable comes from the cache, bit for bit.
    let r2 = build_cache(&sources, &cache, &cfg, &proj, |_| {}).unwrap();
    assert_eq!((r2.built, r2.hits), (0, 1));
    for t in 0..2 {
        assert_eq!(r2.volumes[0].tile(t).unwrap(), v.tile(t).unwrap());
    }
    assert_eq!(r2.volumes[0].drr, v.drr);

    // A changed config (tile depth) misses; so does a rewritten input (size/mtime).
    let deeper = CacheConfig {
        tiling: cads::pretrain::TilingConfig {
            depth: 32,
            ..Default::default()
        },
        ..CacheConfig::default()
    };
    let r3 = build_cache(&sources, &cache, &deeper, &proj, |_| {}).unwrap();
    assert_eq!((r3.built, r3.hits), (1, 0));
    assert_eq!(r3.volumes[0].tile_shape(0).unwrap(), [32, 80, 80]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    small_phantom([40, 40, 24], [2.0, 2.0, 2.0], &data.join("a_good.nii.gz"));
    let r4 = build_cache(&sources, &cache, &cfg, &proj, |_| {}).unwrap();
    assert_eq!((r4.built, r4.hits), (1, 0));
    // The tiles live in the cache file, not in memory: a file removed under a run is an error
    // that names it.
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for f in &cached {
        std::fs::remove_file(f).unwrap();
    }
    let e = r4.volumes[0].tile(0).unwrap_err().to_string();
    assert!(e.contains(".cadsvol"), "{e}");
    assert_eq!(
        r4.volumes[0].tile_count(),
        3,
        "48 slices → tiles at 0, 12, 24"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn no_usable_volume_is_a_clear_error() {
    let root = tmp("none");
    let data = mixed_folder(&root);
    std::fs::remove_file(data.join("a_good.nii.gz")).unwrap();
    let sources = list_inputs(Some(&data)).unwrap();
    let err = build_cache(
        &sources,
        &root.join("cache"),
        &CacheConfig::default(),
        &ParallelLineIntegral::default(),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least one usable CT volume"), "{err}");
    assert!(
        err.contains("b_truncated") && err.contains("c_small"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn inputs_from_manifest_nnunet_folder_and_default() {
    let root = tmp("inputs");
    let nn = root.join("Dataset001");
    std::fs::create_dir_all(nn.join("imagesTr")).unwrap();
    small_phantom([8, 8, 8], [1.0; 3], &nn.join("imagesTr/case_0000.nii.gz"));
    assert_eq!(
        list_inputs(Some(&nn)).unwrap(),
        vec![VolumeSource::File(nn.join("imagesTr/case_0000.nii.gz"))]
    );
    // A plain folder of CTs: macOS's `._NAME` resource forks are not inputs.
    let plain = nn.join("imagesTr");
    std::fs::write(plain.join("._case_0000.nii.gz"), b"Mac OS X").unwrap();
    assert_eq!(
        list_inputs(Some(&plain)).unwrap(),
        vec![VolumeSource::File(plain.join("case_0000.nii.gz"))]
    );
    let manifest = root.join("list.json");
    std::fs::write(&manifest, r#"{"training": [{"image": "x.nii.gz"}]}"#).unwrap();
    assert_eq!(
        list_inputs(Some(&manifest)).unwrap(),
        vec![VolumeSource::File(root.join("x.nii.gz"))]
    );
    // No path: the sample CT when present (tests run in the crate root), else the phantom.
    let want = if Path::new("data/cxr.nii.gz").is_file() {
        VolumeSource::File("data/cxr.nii.gz".into())
    } else {
        VolumeSource::Phantom
    };
    assert_eq!(list_inputs(None).unwrap(), vec![want]);
    assert!(list_inputs(Some(&root.join("missing"))).is_err());
    let _ = std::fs::remove_dir_all(&root);
}
