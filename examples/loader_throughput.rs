//! Loader throughput: CADS samples/s and PVT-UNet patches/s through the background prefetcher,
//! on the LIDC sample CT when `data/cxr.nii.gz` exists (else the phantom). One JSON line per case.
//!
//! `cargo run --release --example loader_throughput [-- WORKERS]`
//!
//! A training step of the same batch is not timed here (the model lives elsewhere); compare these
//! figures with `batch / step_seconds` of the trainer: the GPU waits when the loader is slower.

use cads::data::cads_views::{CadsViewConfig, ParallelLineIntegral};
use cads::data::loader::{
    make_cads_batch, make_seg_batch, prepare_cads_volume, Prefetcher, SegCase, SegPatchConfig,
};
use cads::data::orientation::to_canonical;
use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::preprocess::{Patch, TilingConfig};
use cads::data::read_nifti;
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
    let vol = prepare_cads_volume(
        &ct,
        &TilingConfig::default(),
        &ParallelLineIntegral::default(),
    )?;
    let prep_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"case\": \"prepare\", \"source\": \"{source}\", \"read_s\": {read_s:.3}, \"resample_tile_drr_s\": {prep_s:.3}, \"tiles\": {}, \"tile_shape\": {:?}}}",
        vol.tiles.len(),
        vol.tiles[0].shape
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
    println!("{{\"case\": \"cads_views\", \"batch\": {batch}, \"workers\": {workers}, \"samples\": {got}, \"s\": {s:.3}, \"samples_per_s\": {:.2}}}", got as f64 / s);

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
    println!("{{\"case\": \"seg_patches_64x160x160\", \"batch\": {batch}, \"workers\": {workers}, \"patches\": {got}, \"s\": {s:.3}, \"patches_per_s\": {:.2}}}", got as f64 / s);
    Ok(())
}
