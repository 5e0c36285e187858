//! The DRR engine's CADS view fills the loaders' DRR slot: same shape, range and orientation as
//! the CPU stand-in (a plain parallel line integral), on the phantom and on the real LIDC CT.

mod common;

use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::preprocess::Interp;
use cads::data::Volume;
use cads::pretrain::cads_views::{DrrProjector, ParallelLineIntegral};
use cads::pretrain::drr_cache::EngineCadsDrr;
use cads::pretrain::resample_to_spacing_gpu;
use common::*;

/// Pearson correlation of two images.
fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

fn flip_rows(img: &[f32], side: usize) -> Vec<f32> {
    (0..side * side)
        .map(|i| img[(side - 1 - i / side) * side + i % side])
        .collect()
}

fn check(ct: &Volume, what: &str) {
    let gpu = gpu();
    let engine = EngineCadsDrr { gpu: gpu.clone() }.project(ct).unwrap();
    let plain = ParallelLineIntegral::default().project(ct).unwrap();
    assert_eq!(engine.shape, [1, 96, 96]);
    assert_eq!(engine.shape, plain.shape);
    let (lo, hi) = engine
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    // Min-max scaled to [−1, 1] before the bilinear resize, which can only pull the extremes in.
    assert!(
        lo >= -1.0001 && hi <= 1.0001 && lo < -0.9 && hi > 0.9,
        "{what}: range {lo}..{hi}"
    );
    let r = correlation(&engine.data, &plain.data);
    let r_flipped = correlation(&engine.data, &flip_rows(&plain.data, 96));
    assert!(
        r > 0.97 && r > r_flipped,
        "{what}: correlation {r} (flipped {r_flipped})"
    );
}

#[test]
fn engine_drr_matches_the_plain_line_integral_on_the_phantom() {
    let (ct, _) = phantom(&PhantomConfig {
        dims: [64, 48, 40],
        spacing_mm: [4.0, 4.0, 5.0],
        ..PhantomConfig::default()
    })
    .unwrap();
    check(&ct, "phantom");
}

#[test]
fn engine_drr_matches_the_plain_line_integral_on_the_lidc_ct() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/cxr.nii.gz");
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/fetch-sample-data.sh"
    );
    let ct = cads::data::read_nifti(path).unwrap();
    // The CADS recipe projects the CT resampled to 1 mm; 2 mm keeps the test quick.
    let ct = resample_to_spacing_gpu(&gpu(), &ct, [2.0, 2.0, 2.0], Interp::Linear).unwrap();
    check(&ct, "LIDC");
}
