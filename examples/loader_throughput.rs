//! Loader throughput: CADS samples/s and PVT-UNet patches/s through the background prefetcher,
//! on the LIDC sample CT when `data/cxr.nii.gz` exists (else the phantom). One JSON line per case.
//!
//! `cargo run --release --example loader_throughput [-- WORKERS]`
//!
//! Next to them: the time of a student step at the same batch — the PVTv2-b1 encoder forward and
//! backward on the two CT views (16×48×48 after uniform sampling) and the DRR (96×96), the bulk of
//! a CADS step until the heads and the teacher land — and whether the GPU would wait for data.

use cads::data::loader::{make_seg_batch, Prefetcher, SegCase, SegPatchConfig};
use cads::data::orientation::to_canonical;
use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::preprocess::Patch;
use cads::data::read_nifti;
use cads::models::pvt::{Modality, PvtConfig, PvtEncoder};
use cads::pretrain::cads_views::CadsViewConfig;
use cads::pretrain::drr_cache::EngineCadsDrr;
use cads::pretrain::{make_cads_batch, prepare_cads_volume, TilingConfig};
use cads::util::Rng;
use cads::{ops, Gpu, Tensor};
use std::sync::Arc;
use std::time::Instant;

fn main() -> cads::Result<()> {
    let workers: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let t = Instant::now();
    let (ct, lab, source) = if std::path::Path::new("data/cxr.nii.gz").exists() {
        let ct = to_canonical(&read_nifti("data/cxr.nii.gz")?)?.0;
        let lab = to_canonical(&read_nifti("data/mask.nii.gz")?)?.0;
        (ct, lab, "lidc-idri-0001")
    } else {
        let (c, l) = phantom(&PhantomConfig::default())?;
        (c, l, "phantom")
    };
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let gpu = Gpu::new()?;
    let vol = prepare_cads_volume(
        &ct,
        &TilingConfig::default(),
        &EngineCadsDrr { gpu: gpu.clone() },
    )?;
    let prep_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"case\": \"prepare\", \"source\": \"{source}\", \"read_s\": {read_s:.3}, \"resample_tile_drr_s\": {prep_s:.3}, \"tiles\": {}, \"tile_shape\": {:?}}}",
        vol.tile_count(),
        vol.tile_shape(0)?
    );

    let vols = Arc::new(vec![vol]);
    let batch = 8;
    let n_batches = 6;
    let v = vols.clone();
    let t = Instant::now();
    let mut got = 0;
    for b in Prefetcher::new(0, Some(n_batches), workers, 4, move |_, rng| {
        make_cads_batch(&v, &CadsViewConfig::default(), batch, rng)
    }) {
        got += b?.batch;
    }
    let s = t.elapsed().as_secs_f64();
    let loader_rate = got as f64 / s;
    println!("{{\"case\": \"cads_views\", \"batch\": {batch}, \"workers\": {workers}, \"samples\": {got}, \"s\": {s:.3}, \"samples_per_s\": {loader_rate:.2}}}");
    let step_s = student_step_seconds(&gpu, batch)?;
    let step_rate = batch as f64 / step_s;
    println!(
        "{{\"case\": \"student_encoder_step\", \"batch\": {batch}, \"adapter\": \"{}\", \"s\": {step_s:.3}, \"samples_per_s\": {step_rate:.2}, \"gpu_waits_for_loader\": {}}}",
        gpu.adapter().name,
        loader_rate < step_rate
    );

    let cases = Arc::new(vec![SegCase::new(
        Patch::from_volume(&ct),
        Patch::from_volume(&lab),
    )?]);
    let batch = 2;
    let t = Instant::now();
    let mut got = 0;
    let c = cases.clone();
    for b in Prefetcher::new(0, Some(n_batches), workers, 4, move |_, rng| {
        make_seg_batch(&c, &SegPatchConfig::default(), batch, rng)
    }) {
        got += b?.batch;
    }
    let s = t.elapsed().as_secs_f64();
    let patch_rate = got as f64 / s;
    println!("{{\"case\": \"seg_patches_64x160x160\", \"batch\": {batch}, \"workers\": {workers}, \"patches\": {got}, \"s\": {s:.3}, \"patches_per_s\": {patch_rate:.2}}}");
    let step_s = seg_step_seconds(&gpu, batch)?;
    let step_rate = batch as f64 / step_s;
    println!(
        "{{\"case\": \"seg_encoder_step_64x160x160\", \"batch\": {batch}, \"s\": {step_s:.3}, \"patches_per_s\": {step_rate:.3}, \"gpu_waits_for_loader\": {}}}",
        patch_rate < step_rate
    );
    Ok(())
}

/// Seconds of one encoder forward + backward over a CADS batch (two CT views and a DRR), the
/// second of two runs (the first compiles pipelines).
fn student_step_seconds(gpu: &Gpu, batch: usize) -> cads::Result<f64> {
    let enc = PvtEncoder::new(gpu, PvtConfig::default())?;
    let mut rng = Rng::new(0);
    let mut times = Vec::new();
    for _ in 0..2 {
        let views = [
            (Modality::Volume, vec![batch, 16, 48, 48, 1]),
            (Modality::Volume, vec![batch, 16, 48, 48, 1]),
            (Modality::Image, vec![batch, 96, 96, 1]),
        ];
        let inputs: Vec<(Modality, Tensor)> = views
            .into_iter()
            .map(|(m, s)| {
                Ok((
                    m,
                    Tensor::from_slice(gpu, &rng.vec_uniform(s.iter().product(), -1.0, 1.0), &s)?,
                ))
            })
            .collect::<cads::Result<_>>()?;
        gpu.synchronize()?;
        let t = Instant::now();
        let mut loss: Option<Tensor> = None;
        for (m, x) in &inputs {
            let out = enc.forward(x, *m, true, &mut rng)?;
            let l = ops::mean_all(&out.stages[3])?;
            loss = Some(match loss {
                None => l,
                Some(prev) => ops::add(&prev, &l)?,
            });
        }
        loss.expect("three views").backward()?;
        gpu.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times[1])
}

/// Seconds of one encoder forward + backward on a batch of 64×160×160 patches (the PVT-UNet
/// encoder; the decoder is not built yet), as micro-batches of one accumulated: the stage-1 MLP
/// activation of one patch is [1, 51200, 512] = 105 MB, and two exceed lavapipe's 128 MiB storage
/// binding. One run: it is long on a software adapter.
fn seg_step_seconds(gpu: &Gpu, batch: usize) -> cads::Result<f64> {
    let enc = PvtEncoder::new(
        gpu,
        PvtConfig {
            with_image_path: false,
            ..PvtConfig::default()
        },
    )?;
    let mut rng = Rng::new(1);
    let shape = [1, 64, 160, 160, 1];
    let mut total = 0.0;
    for _ in 0..batch {
        let x = Tensor::from_slice(
            gpu,
            &rng.vec_uniform(shape.iter().product(), -1.0, 1.0),
            &shape,
        )?;
        gpu.synchronize()?;
        let t = Instant::now();
        let out = enc.forward(&x, Modality::Volume, true, &mut rng)?;
        let mut loss = ops::mean_all(&out.skip)?;
        for s in &out.stages {
            loss = ops::add(&loss, &ops::mean_all(s)?)?;
        }
        loss.backward()?;
        gpu.synchronize()?;
        total += t.elapsed().as_secs_f64();
    }
    Ok(total)
}
