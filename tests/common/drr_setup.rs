//! Setup shared by tests/drr.rs and tests/drr_backward.rs: the tolerance against the f64
//! reference, reference images, a small cone geometry, test poses, a small grid with a random
//! volume, a host render and the projectors. Included with
//! `#[path = "common/drr_setup.rs"] mod drr_setup;` next to the test's own `mod common;`.
#![allow(dead_code)]

use crate::common::gpu;
use cads::drr::{self, Beam, Detector, Geometry, Pose, Projector, Volume, VolumeGrid};
use cads::reference::drr::{project, RefProjector};
use cads::reference::Array;
use cads::util::{Rng, Tolerance};

pub const TOL: Tolerance = Tolerance {
    abs: 2e-3,
    rel: 1e-3,
};

pub fn ref_projector(p: Projector) -> RefProjector {
    match p {
        Projector::Siddon => RefProjector::Siddon,
        Projector::Trilinear { step_mm } => RefProjector::Trilinear {
            step_mm: step_mm as f64,
        },
    }
}

/// Reference images [B, H, W] for host poses.
pub fn reference(
    vol: &Array,
    grid: &VolumeGrid,
    geom: &Geometry,
    poses: &[Pose],
    p: Projector,
) -> Vec<f64> {
    let inv = grid.inverse_affine("test").unwrap();
    poses
        .iter()
        .flat_map(|pose| project(vol, &inv, &geom.world_rays(grid, pose), ref_projector(p)))
        .collect()
}

pub fn cone(h: usize, w: usize, pixel: f64) -> Geometry {
    Geometry {
        detector: Detector {
            height: h,
            width: w,
            pixel_mm: [pixel, pixel * 0.9],
            principal_mm: [0.3, -0.4],
        },
        sdd_mm: 60.0,
        sid_mm: 40.0,
        beam: Beam::Cone,
        isocentre: None,
    }
}

pub fn test_poses() -> Vec<Pose> {
    vec![
        Pose::new([0.1, -0.2, 0.3], [1.0, -0.5, 0.7]),
        Pose::new([-0.3, 0.25, -0.15], [-1.0, 0.4, 0.2]),
    ]
}

pub fn small_grid() -> VolumeGrid {
    VolumeGrid::new([7, 9, 11], [1.0, 1.3, 0.8], [-5.0, -5.5, -2.5])
}

pub fn random_volume(rng: &mut Rng, grid: &VolumeGrid) -> (Array, Vec<f32>) {
    let data = rng.vec_uniform(grid.numel(), 0.0, 1.0);
    (Array::from_f32(&data, &grid.dims), data)
}

pub fn render_host(vol: &Volume, poses: &[Pose], geom: &Geometry, p: Projector) -> Vec<f32> {
    let t = drr::pose_tensor(&gpu(), poses).unwrap();
    drr::render(vol, &t, geom, p).unwrap().to_vec().unwrap()
}

pub const PROJECTORS: [Projector; 2] = [Projector::Siddon, Projector::Trilinear { step_mm: 0.37 }];
