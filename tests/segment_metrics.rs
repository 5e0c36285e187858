//! Level 0 (no adapter): Dice, HD95 and NSD against hand-computed cases (anisotropic spacing,
//! empty masks), the exact distance transform against brute force, and `evaluate` on folders
//! (JSON and CSV).

use cads::data::{write_nifti, Datatype, Volume};
use cads::segment::evaluate::evaluate_folders;
use cads::segment::metrics::{class_metrics, percentile, surface_distances, surface_voxels};
use cads::util::Rng;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_line_with_anisotropic_spacing_matches_hand_computed_values() {
    // Shape [1, 1, 10], W spacing 2 mm. P = w 0..=3, T = w 2..=5; on a 1-voxel-thick grid every
    // foreground voxel touches the grid border, so every one is surface.
    let shape = [1, 1, 10];
    let p: Vec<bool> = (0..10).map(|w| w <= 3).collect();
    let t: Vec<bool> = (0..10).map(|w| (2..=5).contains(&w)).collect();
    let m = class_metrics(&p, &t, shape, [1.0, 1.0, 2.0], 2.0).unwrap();
    // Dice 2·2/(4+4). d(P→T) = [4, 2, 0, 0] mm, d(T→P) = [0, 0, 2, 4] mm; q95 of {0, 0, 2, 4}
    // at position 0.95·3 = 2.85: 2 + 0.85·(4 − 2) = 3.7. NSD(τ = 2): (3 + 3) / 8.
    assert!(close(m.dice, 0.5), "{m:?}");
    assert!(close(m.hd95_mm, 3.7), "{m:?}");
    assert!(close(m.nsd, 0.75), "{m:?}");
    assert_eq!((m.predicted_voxels, m.target_voxels), (4, 4));
}

#[test]
fn shifted_cubes_with_a_coarse_axis_match_hand_computed_values() {
    // 5×5×5 grid, spacing D 3 mm, H and W 1 mm. P = the cube [1,3]³, T = P shifted +1 along D.
    let shape = [5, 5, 5];
    let idx = |d: usize, h: usize, w: usize| w + 5 * (h + 5 * d);
    let mut p = vec![false; 125];
    let mut t = vec![false; 125];
    for d in 0..5 {
        for h in 1..=3 {
            for w in 1..=3 {
                p[idx(d, h, w)] = (1..=3).contains(&d);
                t[idx(d, h, w)] = (2..=4).contains(&d);
            }
        }
    }
    // Each surface is the cube minus its centre: 26 voxels.
    assert_eq!(surface_voxels(&p, shape).len(), 26);
    let (pt, tp) = surface_distances(&p, &t, shape, [3.0, 1.0, 1.0]).unwrap();
    // ∂P → ∂T: the d=1 face (9) is 3 mm from T's d=2 face; the d=2 ring (8) and d=3 ring (8) lie
    // on ∂T; P's d=3 centre is 1 mm (in plane) from T's d=3 ring. T → P is the mirror image.
    let mut want = vec![0.0; 16];
    want.push(1.0);
    want.extend([3.0; 9]);
    for d in [&pt, &tp] {
        let mut s = d.clone();
        s.sort_by(f64::total_cmp);
        assert_eq!(s, want);
    }
    let m = class_metrics(&p, &t, shape, [3.0, 1.0, 1.0], 1.0).unwrap();
    assert!(close(m.dice, 2.0 / 3.0), "{m:?}"); // 2·18 / 54
    assert!(close(m.hd95_mm, 3.0), "{m:?}"); // position 23.75 of 26 sorted: both 3
    assert!(close(m.nsd, 34.0 / 52.0), "{m:?}"); // 17 of 26 within 1 mm, both ways
}

#[test]
fn empty_mask_rules() {
    let shape = [2, 3, 4];
    let none = vec![false; 24];
    let mut some = vec![false; 24];
    some[5] = true;
    let both = class_metrics(&none, &none, shape, [1.0; 3], 1.0).unwrap();
    assert_eq!((both.dice, both.hd95_mm, both.nsd), (1.0, 0.0, 1.0));
    for (p, t) in [(&none, &some), (&some, &none)] {
        let m = class_metrics(p, t, shape, [1.0; 3], 1.0).unwrap();
        assert_eq!((m.dice, m.nsd), (0.0, 0.0));
        assert!(m.hd95_mm.is_nan(), "{m:?}");
    }
    // Identical non-empty masks: perfect.
    let m = class_metrics(&some, &some, shape, [1.0; 3], 0.0).unwrap();
    assert_eq!((m.dice, m.hd95_mm, m.nsd), (1.0, 0.0, 1.0));
}

#[test]
fn bad_inputs_are_errors() {
    let a = vec![true; 8];
    assert!(class_metrics(&a, &a[..7], [2, 2, 2], [1.0; 3], 1.0).is_err());
    assert!(class_metrics(&a, &a, [2, 2, 2], [1.0, 0.0, 1.0], 1.0).is_err());
    assert!(class_metrics(&a, &a, [2, 2, 2], [1.0; 3], -1.0).is_err());
}

#[test]
fn exact_distance_transform_equals_brute_force() {
    let mut rng = Rng::new(7);
    let spacing = [2.5, 0.7, 1.3];
    for shape in [[7, 9, 11], [3, 13, 5], [1, 8, 9]] {
        let n = shape.iter().product::<usize>();
        let p: Vec<bool> = (0..n).map(|_| rng.bernoulli(0.3)).collect();
        let t: Vec<bool> = (0..n).map(|_| rng.bernoulli(0.1)).collect();
        let (pt, tp) = surface_distances(&p, &t, shape, spacing).unwrap();
        let coord = |i: usize| {
            [
                i / (shape[1] * shape[2]),
                (i / shape[2]) % shape[1],
                i % shape[2],
            ]
        };
        let brute = |from: &[bool], to: &[bool]| -> Vec<f64> {
            let st = surface_voxels(to, shape);
            surface_voxels(from, shape)
                .iter()
                .map(|&a| {
                    let ca = coord(a);
                    st.iter()
                        .map(|&b| {
                            let cb = coord(b);
                            (0..3)
                                .map(|k| ((ca[k] as f64 - cb[k] as f64) * spacing[k]).powi(2))
                                .sum::<f64>()
                                .sqrt()
                        })
                        .fold(f64::INFINITY, f64::min)
                })
                .collect()
        };
        for (got, want) in [(pt, brute(&p, &t)), (tp, brute(&t, &p))] {
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-9,
                    "shape {shape:?} voxel {i}: {g} vs brute force {w}"
                );
            }
        }
    }
}

#[test]
fn percentile_interpolates_like_numpy() {
    assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), 2.5);
    assert_eq!(percentile(&[0.0, 10.0], 95.0), 9.5);
    assert_eq!(percentile(&[5.0], 95.0), 5.0);
    assert!(percentile(&[], 95.0).is_nan());
}

#[test]
fn evaluate_folders_writes_json_and_csv() {
    let dir = std::env::temp_dir().join(format!("cads-seg-eval-{}", std::process::id()));
    let (pred, gt) = (dir.join("pred"), dir.join("gt"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    let affine = [
        [-0.7, 0.0, 0.0, 10.0],
        [0.0, 0.7, 0.0, -5.0],
        [0.0, 0.0, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let vol = |data: Vec<f32>| Volume::new(data, [4, 3, 2], affine, Datatype::Uint8).unwrap();
    // Case a: perfect label 1, label 2 only in the prediction. Case b: label 1 missed.
    let mut a_gt = vec![0.0; 24];
    a_gt[..6].iter_mut().for_each(|v| *v = 1.0);
    let mut a_pred = a_gt.clone();
    a_pred[20] = 2.0;
    let mut b_gt = vec![0.0; 24];
    b_gt[10] = 1.0;
    let b_pred = vec![0.0; 24];
    write_nifti(gt.join("a.nii.gz"), &vol(a_gt), None).unwrap();
    write_nifti(pred.join("a.nii.gz"), &vol(a_pred), None).unwrap();
    write_nifti(gt.join("b.nii.gz"), &vol(b_gt), None).unwrap();
    write_nifti(pred.join("b_0000.nii.gz"), &vol(b_pred), None).unwrap();
    // macOS resource forks (as the Decathlon's labelsTr/ unpacks) are neither cases nor volumes.
    std::fs::write(gt.join("._a.nii.gz"), b"Mac OS X").unwrap();
    std::fs::write(pred.join("._b.nii.gz"), b"Mac OS X").unwrap();
    let r = evaluate_folders(&pred, &gt, Some(&[1, 2]), 1.0).unwrap();
    assert_eq!(r.cases.len(), 2);
    let a1 = r.cases[0].labels[&1];
    assert_eq!((a1.dice, a1.hd95_mm), (1.0, 0.0));
    let a2 = r.cases[0].labels[&2];
    assert_eq!(a2.dice, 0.0);
    assert!(a2.hd95_mm.is_nan());
    let m1 = r.mean[&1];
    assert_eq!(
        (m1.dice, m1.hd95_mm, m1.hd95_cases, m1.cases),
        (0.5, 0.0, 1, 2)
    );
    // Label 2: case b has neither (Dice 1), case a a false positive (Dice 0).
    assert_eq!(r.mean[&2].dice, 0.5);
    let json = r.to_json().unwrap();
    assert!(json.contains("\"hd95_mm\": null"), "{json}");
    let back: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(back["mean"]["1"]["dice"], 0.5);
    let csv = r.to_csv();
    assert!(csv.starts_with("case,label,dice,hd95_mm,nsd,predicted_voxels,target_voxels\n"));
    assert!(csv.contains("a,2,0.000000,nan,0.000000,1,0\n"), "{csv}");
    assert!(csv.contains("mean,1,0.500000,0.000000,"), "{csv}");
    // A grid mismatch names both files.
    let other = Volume::new(
        vec![0.0; 24],
        [4, 3, 2],
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        Datatype::Uint8,
    )
    .unwrap();
    write_nifti(pred.join("a.nii.gz"), &other, None).unwrap();
    let e = evaluate_folders(&pred, &gt, None, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.nii.gz") && e.contains("gt") && e.contains("pred"),
        "{e}"
    );
    // A missing prediction names the case.
    std::fs::remove_file(pred.join("b_0000.nii.gz")).unwrap();
    let e = evaluate_folders(&pred, &gt, None, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"b\""), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
