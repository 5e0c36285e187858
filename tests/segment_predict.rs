//! Level 0 (no adapter): prediction round trip on the input's own grid. For LAS, LPS, RAS, an
//! axis-permuted and an oblique input, an identity-like "network" (logit_k = −(x − k)², so the
//! argmax is the class stored in the image) must give back the image's classes mapped to label
//! values, with the input's dims and affine; the written file must carry the same sform, qform
//! and pixdim bytes as the input file.

use cads::data::nifti::read_nifti;
use cads::data::orientation::{orientation_code, to_canonical};
use cads::data::{write_nifti, Affine, Datatype, Volume};
use cads::segment::dataset::LabelName;
use cads::segment::fingerprint::dhw_spacing;
use cads::segment::plan::{
    CtNormalization, ImageResampling, LabelResampling, MemoryModel, Plan, PLAN_VERSION,
    TOTAL_STRIDE,
};
use cads::segment::predict::{predict_file, predict_volume};
use cads::segment::sliding_window::SlidingWindowConfig;
use cads::Result;
use std::io::Read;

const VALUES: [u32; 4] = [0, 1, 2, 5];

fn plan(target: [f64; 3]) -> Plan {
    Plan {
        version: PLAN_VERSION,
        target_spacing_mm: target,
        median_shape: [8, 8, 8],
        patch: [16, 32, 32],
        batch: 2,
        total_stride: TOTAL_STRIDE,
        labels: VALUES
            .iter()
            .map(|&v| LabelName {
                name: format!("l{v}"),
                value: v,
            })
            .collect(),
        normalization: CtNormalization {
            clip_low: -1000.0,
            clip_high: 1000.0,
            mean: 0.0,
            std: 1.0,
        },
        image_resampling: ImageResampling::Linear,
        label_resampling: LabelResampling::Nearest,
        memory: MemoryModel {
            budget_bytes: 1 << 30,
            max_binding_bytes: 1 << 27,
            bytes_per_voxel: 3200,
            fixed_bytes: 0,
            full_resolution_channels: 32,
        },
    }
}

fn identity_like(input: &[f32], _: [usize; 4]) -> Result<Vec<f32>> {
    Ok(input
        .iter()
        .flat_map(|&x| (0..4).map(move |k| -(x - k as f32).powi(2)))
        .collect())
}

fn affines() -> Vec<(&'static str, Affine)> {
    let (c, s) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
    vec![
        (
            "LAS",
            [
                [-0.7, 0.0, 0.0, 100.0],
                [0.0, 0.7, 0.0, -50.0],
                [0.0, 0.0, 2.5, 20.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        ),
        (
            "LPS",
            [
                [-0.7, 0.0, 0.0, 100.0],
                [0.0, -0.7, 0.0, 50.0],
                [0.0, 0.0, 2.5, 20.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        ),
        (
            "RAS",
            [
                [0.7, 0.0, 0.0, -10.0],
                [0.0, 0.7, 0.0, -20.0],
                [0.0, 0.0, 2.5, -30.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        ),
        // Voxel i → Superior, j → Right, k → Anterior.
        (
            "SRA",
            [
                [0.0, 0.8, 0.0, 5.0],
                [0.0, 0.0, 0.9, 6.0],
                [2.5, 0.0, 0.0, 7.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        ),
        // LAS turned 20° about z: oblique.
        (
            "LAS",
            [
                [-0.7 * c, -0.7 * s, 0.0, 3.0],
                [-0.7 * s, 0.7 * c, 0.0, 4.0],
                [0.0, 0.0, 2.5, 5.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        ),
    ]
}

fn image(affine: Affine) -> Volume {
    let dims = [7, 6, 5];
    let mut data = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                data.push(((i + 2 * j + 3 * k + i * j) % 4) as f32);
            }
        }
    }
    Volume::new(data, dims, affine, Datatype::Int16).unwrap()
}

fn gunzip(path: &std::path::Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn prediction_round_trip_keeps_grid_and_labels_for_every_orientation() {
    let mut window = SlidingWindowConfig::new([4, 4, 4]);
    window.mirror_axes = [true; 3];
    window.batch = 3;
    for (code, affine) in affines() {
        let img = image(affine);
        assert_eq!(orientation_code(&affine), code);
        // Plan spacing = the canonical spacing: resampling is the identity, labels are exact.
        let target = dhw_spacing(&to_canonical(&img).unwrap().0);
        let p = predict_volume(&img, &plan(target), &window, true, &mut identity_like).unwrap();
        assert_eq!(p.labels.dims, img.dims, "{code}");
        assert_eq!(p.labels.affine, img.affine, "{code}");
        assert_eq!(p.labels.datatype, Datatype::Uint8);
        let want: Vec<f32> = img
            .data
            .iter()
            .map(|&c| VALUES[c as usize] as f32)
            .collect();
        assert_eq!(p.labels.data, want, "{code}");
        let probs = p.probabilities.unwrap();
        assert_eq!(probs.len(), 4);
        for i in 0..img.len() {
            let s: f32 = probs.iter().map(|v| v.data[i]).sum();
            assert!((s - 1.0).abs() < 1e-5);
            assert_eq!(probs[0].affine, img.affine);
        }
        // A coarser plan spacing: still the input's grid.
        let coarse = [target[0] * 1.3, target[1] * 1.7, target[2] * 0.8];
        let p = predict_volume(&img, &plan(coarse), &window, false, &mut identity_like).unwrap();
        assert_eq!(
            (p.labels.dims, p.labels.affine),
            (img.dims, img.affine),
            "{code}"
        );
        assert!(p.probabilities.is_none());
    }
}

#[test]
fn written_prediction_has_the_input_sform_qform_and_pixdim() {
    let dir = std::env::temp_dir().join(format!("cads-seg-predict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let window = SlidingWindowConfig::new([4, 4, 4]);
    for (n, (code, affine)) in affines().into_iter().enumerate() {
        let img = image(affine);
        let input = dir.join(format!("case{n}_0000.nii.gz"));
        write_nifti(&input, &img, None).unwrap();
        let target = dhw_spacing(&to_canonical(&img).unwrap().0);
        let out_dir = dir.join("out");
        let out = predict_file(
            &input,
            &out_dir,
            &plan(target),
            &window,
            n == 0,
            &mut identity_like,
        )
        .unwrap();
        assert_eq!(out, out_dir.join(format!("case{n}.nii.gz")));
        let (a, b) = (gunzip(&input), gunzip(&out));
        // dim (40..56), pixdim incl. qfac (76..108), qform/sform codes, quatern, srow (252..328).
        for (lo, hi, what) in [
            (40, 56, "dim"),
            (76, 108, "pixdim"),
            (252, 328, "qform/sform"),
        ] {
            assert_eq!(a[lo..hi], b[lo..hi], "{code}: {what} bytes differ");
        }
        let back = read_nifti(&out).unwrap();
        assert_eq!(back.affine, read_nifti(&input).unwrap().affine, "{code}");
        let want: Vec<f32> = img
            .data
            .iter()
            .map(|&c| VALUES[c as usize] as f32)
            .collect();
        assert_eq!(back.data, want, "{code}");
        if n == 0 {
            for l in VALUES {
                assert!(out_dir.join(format!("case0_prob_l{l}.nii.gz")).exists());
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
