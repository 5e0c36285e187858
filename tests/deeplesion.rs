//! Level 0 (no adapter): DeepLesion as downloaded (`Images_png/<series>/<slice>.png`, 16-bit
//! HU + 32768, `DL_info.csv`) read as DL_save_nifti.py's sub-volumes: grouping by consecutive
//! slice numbers, names, voxel values, the affine, the errors, pretraining's inputs and cache,
//! and one series folder through `read_volume` and `cads inspect` / `cads convert`.

mod common;

use cads::data::deeplesion::{list_volumes, read_spacings, series_folders, DeepLesionVolume};
use cads::data::orientation::orientation_code;
use cads::data::read::detect_format;
use cads::data::{read_nifti, read_volume, read_volume_with, ReadOptions, VolumeFormat};
use cads::pretrain::cache::{build_cache, list_inputs, CacheConfig, VolumeSource};
use cads::pretrain::cads_views::ParallelLineIntegral;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cads_deeplesion_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The HU the synthetic slices hold at (column, row, slice number).
fn hu(c: usize, r: usize, s: u32) -> i32 {
    -1000 + c as i32 + 7 * r as i32 + 50 * s as i32
}

fn write_png(path: &Path, w: usize, h: usize, depth: png::BitDepth, bytes: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(depth);
    enc.write_header().unwrap().write_image_data(bytes).unwrap();
}

/// One 16-bit slice as DeepLesion stores it: big-endian HU + 32768.
fn write_slice(dir: &Path, number: u32, w: usize, h: usize) {
    let mut bytes = Vec::with_capacity(2 * w * h);
    for r in 0..h {
        for c in 0..w {
            let v = (hu(c, r, number) + 32768) as u16;
            bytes.extend_from_slice(&v.to_be_bytes());
        }
    }
    write_png(
        &dir.join(format!("{number:03}.png")),
        w,
        h,
        png::BitDepth::Sixteen,
        &bytes,
    );
}

/// A DeepLesion root: series 000001_01_01 with slices 10-15 and 30-32 (two sub-volumes, 40×36
/// px, 0.8 mm, 5 mm slices), 000002_01_03 with slices 5-24 (100×100 px at 0.7 mm, 2.5 mm), a
/// macOS fork and a stray file; DL_info.csv in DeepLesion's column layout, with quoted fields.
fn deeplesion_root(root: &Path) -> PathBuf {
    let images = root.join("Images_png");
    let a = images.join("000001_01_01");
    let b = images.join("000002_01_03");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    for n in (10..=15).chain(30..=32) {
        write_slice(&a, n, 40, 36);
    }
    for n in 5..=24 {
        write_slice(&b, n, 100, 100);
    }
    std::fs::write(a.join("._010.png"), b"Mac OS X").unwrap();
    std::fs::write(a.join("notes.txt"), "not a slice").unwrap();
    let header = "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,\
        Measurement_coordinates,Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,\
        Coarse_lesion_type,Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,\
        Patient_gender,Patient_age,Train_Val_Test";
    let rows = [
        r#"000001_01_01_012.png,1,1,1,12,"1.0, 2.0, 3.0, 4.0","1, 2, 3, 4","5.0, 3.0","0.5, 0.5, 0.5",-1,0,"10, 15","0.8, 0.8, 5","36, 40","-175, 275",M,51,1"#,
        r#"000001_01_01_031.png,1,1,1,31,"1.0, 2.0, 3.0, 4.0","1, 2, 3, 4","5.0, 3.0","0.5, 0.5, 0.5",-1,0,"30, 32","0.8, 0.8, 5","36, 40","-175, 275",M,51,1"#,
        r#"000002_01_03_015.png,2,1,3,15,"1.0, 2.0, 3.0, 4.0","1, 2, 3, 4","5.0, 3.0","0.5, 0.5, 0.5",3,0,"5, 24","0.7, 0.7, 2.5","100, 100","-1500, 500",F,62,2"#,
    ];
    std::fs::write(
        root.join("DL_info.csv"),
        format!("{header}\n{}\n", rows.join("\n")),
    )
    .unwrap();
    images
}

fn names(v: &[DeepLesionVolume]) -> Vec<String> {
    v.iter().map(|v| v.name()).collect()
}

#[test]
fn sub_volumes_values_and_geometry() {
    let root = tmp("read");
    let images = deeplesion_root(&root);
    let want = [
        "000001_01_01_010-015",
        "000001_01_01_030-032",
        "000002_01_03_005-024",
    ];
    // The root, Images_png and (for its own sub-volumes) one series folder all list them.
    let vols = list_volumes(&root).unwrap();
    assert_eq!(names(&vols), want);
    assert_eq!(list_volumes(&images).unwrap(), vols);
    let one = list_volumes(&images.join("000002_01_03")).unwrap();
    assert_eq!(names(&one), want[2..]);
    assert_eq!(vols[0].spacing_mm, Some([0.8, 0.8, 5.0]));
    assert_eq!(vols[2].spacing_mm, Some([0.7, 0.7, 2.5]));

    let v = vols[1].read().unwrap();
    assert_eq!(v.dims, [40, 36, 3]);
    for (c, r, s) in [(0, 0, 0), (39, 0, 1), (5, 35, 2), (17, 20, 1)] {
        let got = v.data[c + 40 * (r + 36 * s)];
        assert_eq!(got, hu(c, r, 30 + s as u32) as f32, "({c}, {r}, {s})");
    }
    // DL_save_nifti.py's affine: voxel (column c, row r, slice s) at
    // (−sp[1]·c, −sp[0]·r, −sp[2]·s) mm, RAS+: columns run left, rows posterior, slices inferior.
    let a = v.affine;
    let world = |c: f64, r: f64, s: f64| {
        [0, 1, 2].map(|i| a[i][0] * c + a[i][1] * r + a[i][2] * s + a[i][3])
    };
    assert_eq!(world(3.0, 2.0, 1.0), [-0.8 * 3.0, -0.8 * 2.0, -5.0]);
    assert_eq!(orientation_code(&a), "LPI");
    assert_eq!(v.spacing, [0.8, 0.8, 5.0]);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn errors_name_the_file_and_what_is_wrong() {
    let root = tmp("errors");
    let images = deeplesion_root(&root);
    let a = images.join("000001_01_01");
    // A series DL_info.csv does not list fails when read, naming the column.
    let c = images.join("000003_02_01");
    std::fs::create_dir_all(&c).unwrap();
    for n in 1..=3 {
        write_slice(&c, n, 8, 8);
    }
    let vols = list_volumes(&root).unwrap();
    let unlisted = vols.iter().find(|v| v.dir == c).unwrap();
    let e = unlisted.read().unwrap_err().to_string();
    assert!(
        e.contains("Spacing_mm_px_") && e.contains("000003_02_01"),
        "{e}"
    );
    // Over the reading limit (CADS_MAX_NIFTI_BYTES, as for every volume reader): 40×36×6 f32.
    let e = vols[0].read_with_limit(30_000).unwrap_err().to_string();
    assert!(
        e.contains("34560 bytes") && e.contains("CADS_MAX_NIFTI_BYTES"),
        "{e}"
    );
    assert_eq!(vols[0].read_with_limit(34_560).unwrap().dims, [40, 36, 6]);
    // A slice of another size.
    write_slice(&a, 31, 30, 36);
    let e = vols[1].read().unwrap_err().to_string();
    assert!(e.contains("031.png") && e.contains("30×36"), "{e}");
    // An 8-bit slice.
    write_png(&a.join("031.png"), 4, 4, png::BitDepth::Eight, &[0u8; 16]);
    let e = vols[1].read().unwrap_err().to_string();
    assert!(
        e.contains("16-bit grayscale") && e.contains("031.png"),
        "{e}"
    );
    // A slice gone since listing.
    std::fs::remove_file(a.join("031.png")).unwrap();
    let e = vols[1].read().unwrap_err().to_string();
    assert!(e.contains("2 of the 3 slices"), "{e}");
    // No DL_info.csv where it is looked for.
    std::fs::remove_file(root.join("DL_info.csv")).unwrap();
    let e = list_volumes(&root).unwrap_err().to_string();
    assert!(e.contains("DL_info.csv"), "{e}");
    // Not DeepLesion data at all.
    assert!(series_folders(&root.join("Images_png/000001_01_01/notes.txt")).is_none());
    let e = list_volumes(&root.join("nothing")).unwrap_err().to_string();
    assert!(e.contains("not DeepLesion data"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn pretraining_reads_deeplesion_through_its_cache() {
    let root = tmp("cache");
    deeplesion_root(&root);
    let sources = list_inputs(Some(&root)).unwrap();
    assert_eq!(sources.len(), 3);
    assert!(sources
        .iter()
        .all(|s| matches!(s, VolumeSource::DeepLesion(_))));
    let cache = root.join("cache");
    let (cfg, proj) = (CacheConfig::default(), ParallelLineIntegral::default());
    let r = build_cache(&sources, &cache, &cfg, &proj, |_| {}).unwrap();
    // 000002_01_03 (70 × 70 × 50 mm) is used; the 000001_01_01 runs (32 × 29 × 30 and 15 mm)
    // are under the 64 mm minimum in-plane and are skipped, named as DL_save_nifti names them.
    assert_eq!(r.built, 1);
    assert!(
        r.names[0].ends_with("000002_01_03_005-024"),
        "{:?}",
        r.names
    );
    assert_eq!(r.skipped.len(), 2);
    assert!(r.skipped[0].0.ends_with("000001_01_01_010-015"));
    assert!(r.skipped[0].1.contains("at least"), "{:?}", r.skipped);
    let again = build_cache(&sources, &cache, &cfg, &proj, |_| {}).unwrap();
    assert_eq!((again.hits, again.built), (1, 0));
    // A re-written slice makes that sub-volume stale.
    write_slice(&root.join("Images_png/000002_01_03"), 7, 100, 100);
    let file = root.join("Images_png/000002_01_03/007.png");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let rebuilt = build_cache(&sources, &cache, &cfg, &proj, |_| {}).unwrap();
    assert_eq!((rebuilt.hits, rebuilt.built), (0, 1));
    std::fs::remove_dir_all(&root).ok();
}

/// A series folder is a volume source like a DICOM folder: the only run, or the one `--series`
/// names; `cads convert` writes DL_save_nifti.py's volume.
#[test]
fn a_series_folder_reads_like_a_dicom_folder() {
    let root = tmp("series");
    let images = deeplesion_root(&root);
    let a = images.join("000001_01_01");
    let b = images.join("000002_01_03");
    assert_eq!(detect_format(&a).unwrap(), VolumeFormat::DeepLesionSeries);
    assert_eq!(read_volume(&b).unwrap().dims, [100, 100, 20]);
    let e = read_volume(&a).unwrap_err().to_string();
    assert!(
        e.contains("2 sub-volumes") && e.contains("000001_01_01_030-032") && e.contains("--series"),
        "{e}"
    );
    let pick = |p: &str| {
        read_volume_with(
            &a,
            &ReadOptions {
                series_uid: Some(p.into()),
            },
        )
    };
    assert_eq!(pick("030-032").unwrap().dims, [40, 36, 3]);
    assert_eq!(pick("000001_01_01_010-015").unwrap().dims, [40, 36, 6]);
    let e = pick("0-32").unwrap_err().to_string();
    assert!(e.contains("no sub-volume \"0-32\""), "{e}");

    let out = root.join("a.nii.gz");
    let run = |args: &[&str]| {
        let o = common::cads_command().args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let a_str = a.to_str().unwrap();
    let text = run(&["inspect", a_str, "--series", "030-032"]);
    assert!(text.contains("LPI"), "{text}");
    run(&[
        "convert",
        a_str,
        out.to_str().unwrap(),
        "--series",
        "030-032",
    ]);
    let v = read_nifti(&out).unwrap();
    assert_eq!(v.dims, [40, 36, 3]);
    assert_eq!(v.data[17 + 40 * (20 + 36)], hu(17, 20, 31) as f32);
    std::fs::remove_dir_all(&root).ok();
}

/// Mutated DL_info.csv text and mutated slice bytes give errors or values, never a panic.
#[test]
fn mutated_csv_and_slices_never_panic() {
    let root = tmp("fuzz");
    let images = deeplesion_root(&root);
    let csv = root.join("DL_info.csv");
    let text: Vec<char> = std::fs::read_to_string(&csv).unwrap().chars().collect();
    let pool = ['"', ',', '\n', '\r', ' ', '0', '-', '.', 'e', '\u{feff}'];
    let mut rng = cads::util::Rng::new(11);
    for _ in 0..300 {
        let mut t = text.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(t.len());
            match rng.below(3) {
                0 => t[i] = pool[rng.below(pool.len())],
                1 => {
                    t.remove(i);
                }
                _ => t.insert(i, pool[rng.below(pool.len())]),
            }
        }
        std::fs::write(&csv, t.into_iter().collect::<String>()).unwrap();
        let _ = read_spacings(&csv);
    }
    let slice = images.join("000001_01_01/030.png");
    let bytes = std::fs::read(&slice).unwrap();
    let vol = DeepLesionVolume {
        dir: images.join("000001_01_01"),
        first: 30,
        last: 30,
        spacing_mm: Some([1.0; 3]),
    };
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(b.len());
            b[i] = rng.below(256) as u8;
        }
        if rng.below(4) == 0 {
            b.truncate(rng.below(b.len()));
        }
        std::fs::write(&slice, &b).unwrap();
        if let Ok(v) = vol.read() {
            assert_eq!(v.data.len(), v.dims.iter().product::<usize>());
        }
    }
    std::fs::remove_dir_all(&root).ok();
}
