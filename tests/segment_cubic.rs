//! Level 0 (no adapter): cubic B-spline image resampling (`segment::cubic`). A 3-D resampling
//! against scipy's `map_coordinates(order=3, mode="mirror")` (golden from
//! scripts/make_cubic_golden.py); resampling to the same grid is the identity; a volume that is a
//! cubic polynomial along an axis keeps it away from the border where linear interpolation does
//! not; the plan's `image_resampling: cubic` reaches preprocessing.

use cads::data::{Affine, Datatype, Volume};
use cads::segment::cubic::{resample_patch_cubic, resample_to_spacing_cubic};
use cads::segment::dataset::LabelName;
use cads::segment::plan::{
    CtNormalization, ImageResampling, LabelResampling, MemoryModel, Plan, PLAN_VERSION,
    TOTAL_STRIDE,
};
use cads::segment::preprocess::preprocess_volumes;

#[test]
fn matches_scipy_order_3_mirror_in_3d() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/cubic_golden.json"
    ))
    .unwrap();
    let g: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dims = |k: &str| -> [usize; 3] {
        let v: Vec<usize> = serde_json::from_value(g[k].clone()).unwrap();
        v.try_into().unwrap()
    };
    let (shape, out_shape) = (dims("shape"), dims("out_shape"));
    let ratio: Vec<f64> = serde_json::from_value(g["ratio"].clone()).unwrap();
    let want: Vec<f64> = serde_json::from_value(g["values"].clone()).unwrap();
    let mut data = Vec::new();
    for d in 0..shape[0] {
        for h in 0..shape[1] {
            for w in 0..shape[2] {
                let (d, h, w) = (d as f64, h as f64, w as f64);
                data.push(((0.9 * d + 0.37 * h * h).sin() + 0.1 * w) as f32);
            }
        }
    }
    let src = cads::data::preprocess::Patch::new(data, shape).unwrap();
    let out = resample_patch_cubic(&src, out_shape, [ratio[0], ratio[1], ratio[2]]).unwrap();
    assert_eq!(out.shape, out_shape);
    assert_eq!(out.data.len(), want.len());
    let worst = out
        .data
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    // f32 input and output (the f64 prefilter is not the error source).
    assert!(worst < 2e-6, "max |cads − scipy| = {worst}");
}

const LPS: Affine = [
    [-0.8, 0.0, 0.0, 30.0],
    [0.0, -0.8, 0.0, 40.0],
    [0.0, 0.0, 2.0, -10.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn ramp_volume(dims: [usize; 3], f: impl Fn(usize, usize, usize) -> f32) -> Volume {
    let mut data = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                data.push(f(i, j, k));
            }
        }
    }
    Volume::new(data, dims, LPS, Datatype::Int16).unwrap()
}

#[test]
fn the_same_grid_is_the_identity_and_a_cubic_survives_away_from_the_border() {
    let v = ramp_volume([9, 7, 5], |i, j, k| {
        ((i * 37 + j * 11 + k * 5) % 200) as f32 - 100.0
    });
    let same = resample_to_spacing_cubic(&v, v.spacing).unwrap();
    assert_eq!((same.dims, same.affine), (v.dims, v.affine));
    assert_eq!(same.datatype, Datatype::Float32);
    let worst = same
        .data
        .iter()
        .zip(&v.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "identity off by {worst}");

    // x ↦ p(x) along X (0.8 mm voxels) resampled to 0.5 mm: the new voxel n sits at old
    // x = 0.625 n, so away from the border it must read p(0.625 n); trilinear misses by ~p''/8.
    let p = |x: f64| 0.05 * x * x * x - 1.2 * x * x + 4.0 * x;
    let v = ramp_volume([40, 2, 2], |i, _, _| p(i as f64) as f32);
    let fine = resample_to_spacing_cubic(&v, [0.5, 0.8, 2.0]).unwrap();
    assert_eq!(fine.dims, [64, 2, 2]);
    let linear = cads::data::preprocess::resample_to_spacing(
        &v,
        [0.5, 0.8, 2.0],
        cads::data::preprocess::Interp::Linear,
    )
    .unwrap();
    let (mut cubic_err, mut linear_err) = (0.0f64, 0.0f64);
    for n in 24..40 {
        let want = p(0.625 * n as f64);
        cubic_err = cubic_err.max((fine.data[n] as f64 - want).abs());
        linear_err = linear_err.max((linear.data[n] as f64 - want).abs());
    }
    // Sample values up to ~1e3 in f32: a few 1e-4 of rounding.
    assert!(cubic_err < 2e-3, "cubic off by {cubic_err}");
    assert!(linear_err > 0.05, "linear off by only {linear_err}");
}

fn plan(image_resampling: ImageResampling, target: [f64; 3]) -> Plan {
    Plan {
        version: PLAN_VERSION,
        target_spacing_mm: target,
        median_shape: [8, 8, 8],
        patch: [16, 32, 32],
        batch: 2,
        total_stride: TOTAL_STRIDE,
        labels: vec![
            LabelName {
                name: "background".into(),
                value: 0,
            },
            LabelName {
                name: "organ".into(),
                value: 1,
            },
        ],
        normalization: CtNormalization {
            clip_low: -1000.0,
            clip_high: 1000.0,
            mean: 0.0,
            std: 100.0,
        },
        image_resampling,
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

#[test]
fn the_plan_chooses_the_image_interpolation_and_keys_the_cache_by_it() {
    let p = |x: f64| 0.05 * x * x * x - 1.2 * x * x + 4.0 * x;
    let v = ramp_volume([40, 2, 2], |i, _, _| p(i as f64) as f32);
    // Canonical [D, H, W] = [S, A, R]: LPS flips X and Y, so X (R-L) becomes W read backwards.
    let target = [2.0, 0.8, 0.5];
    let cubic = plan(ImageResampling::Cubic, target);
    let linear = plan(ImageResampling::Linear, target);
    let a = preprocess_volumes("a", &v, None, &cubic).unwrap();
    let b = preprocess_volumes("a", &v, None, &linear).unwrap();
    assert_eq!(a.image.shape, [2, 2, 64]);
    assert_eq!(a.image.shape, b.image.shape);
    assert_ne!(a.image.data, b.image.data);
    assert_ne!(cubic.preprocessing_key(), linear.preprocessing_key());
    // A plan file from before the field existed reads as linear (what it was made with).
    let mut json: serde_json::Value = serde_json::to_value(&cubic).unwrap();
    json.as_object_mut().unwrap().remove("image_resampling");
    let old: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(old.image_resampling, ImageResampling::Linear);
    assert_eq!(
        "Cubic".parse::<ImageResampling>().unwrap(),
        ImageResampling::Cubic
    );
    assert!("spline".parse::<ImageResampling>().is_err());
}
