//! Sliding-window inference throughput on the LIDC CT ([`SAMPLE_CT`], 512×512×133 at
//! 0.703×0.703×2.5 mm, read as canonical `[D, H, W]` = `[133, 512, 512]`, clipped to
//! [−1000, 1000] HU and scaled by 1/1000) with a small network: one 3×3×3 convolution (1 → 4
//! classes, padding 1). Patch 64×160×160 (the plan's default), overlap 0.5, no mirroring, batches
//! of 2 windows: 4 × 6 × 6 = 144 windows. A lavapipe-sized case runs the same on a central
//! 64×256×256 crop with a 32×128×128 patch (3 × 3 × 3 = 27 windows).
//!
//! `mvoxels_per_s` = volume voxels / wall time of the whole call (window gather, upload, the
//! network, read-back and the host's Gaussian-weighted accumulation and normalisation): the rate a
//! user sees, not a kernel rate. One run after a one-window warm-up (which compiles the pipelines);
//! the case is too long to repeat. Without the CT the case fails with an error naming the file
//! (`scripts/fetch-sample-data.sh` fetches it).

use std::time::Instant;

use super::{Bench, Case, Sample, Work};
use crate::data::nifti::read_nifti;
use crate::data::orientation::to_canonical;
use crate::data::preprocess::{crop_pad, Patch};
use crate::drr::SAMPLE_CT;
use crate::error::Result;
use crate::nn::{Conv3d, ConvInit};
use crate::ops::config::Conv3dConfig;
use crate::segment::sliding_window::{sliding_window, tensor_forward, SlidingWindowConfig};
use crate::util::Rng;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "sliding_window",
            case: "lidc_conv3_k4_patch64x160x160",
            run: |b| lidc(b, None, [64, 160, 160], 2),
        },
        Case {
            op: "sliding_window",
            case: "lidc_crop64x256x256_conv3_k4_patch32x128x128",
            run: |b| lidc(b, Some([64, 256, 256]), [32, 128, 128], 2),
        },
    ]
}

fn lidc(b: &Bench, crop: Option<[usize; 3]>, patch: [usize; 3], batch: usize) -> Result<Sample> {
    let gpu = b.gpu();
    let ct = to_canonical(&read_nifti(SAMPLE_CT)?)?.0;
    let mut image = Patch::from_volume(&ct);
    image
        .data
        .iter_mut()
        .for_each(|v| *v = v.clamp(-1000.0, 1000.0) / 1000.0);
    if let Some(c) = crop {
        // Central crop `[D, H, W]`.
        let start: [isize; 3] =
            std::array::from_fn(|a| (image.shape[a] as isize - c[a] as isize) / 2);
        image = crop_pad(&image, start, c, 0.0);
    }
    let classes = 4;
    let conv = Conv3d::new(
        gpu,
        &mut Rng::new(3),
        1,
        classes,
        Conv3dConfig::cube(3, 1, 1),
        true,
        ConvInit::default(),
    )?;
    let net = |x: &crate::Tensor| conv.forward(x);
    let mut cfg = SlidingWindowConfig::new(patch);
    cfg.batch = batch;
    // Warm-up: one window (pipeline compilation, pool buffers of the batch size).
    let first = crop_pad(&image, [0; 3], patch, 0.0);
    sliding_window(
        &first,
        classes,
        &cfg,
        &mut tensor_forward(gpu, classes, &net),
    )?;
    let t0 = Instant::now();
    let out = sliding_window(
        &image,
        classes,
        &cfg,
        &mut tensor_forward(gpu, classes, &net),
    )?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(out);
    Ok(Sample::new(ms, Work::Voxels(image.data.len() as f64)))
}
