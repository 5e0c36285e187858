//! DRR checks: both projectors forward on cone and parallel beams, and every volume-gradient
//! method (the float-atomic scatter where the adapter has float atomics, the compare-and-swap and
//! fixed-point scatters, the gather) against the f64 reference backprojection, on a small
//! anisotropic grid cut into slabs (the tiled path) under three poses.

use super::{Comparison, Run};
use crate::drr::VolumeGrid;
use crate::drr::{self, Backprojection, Beam, Detector, Geometry, Pose, Projector, Volume};
use crate::error::Result;
use crate::reference::drr::{backproject, project, RefProjector};
use crate::tensor::Tensor;
use crate::util::Tolerance;

/// Line integrals of O(10) through a random volume: f32 steps and intersections against f64.
const DRR_TOL: Tolerance = Tolerance {
    abs: 2e-3,
    rel: 1e-3,
};

const PROJECTORS: [(Projector, &str); 2] = [
    (Projector::Siddon, "siddon"),
    (Projector::Trilinear { step_mm: 0.37 }, "trilinear"),
];

const METHODS: [(Backprojection, &str); 5] = [
    (Backprojection::Auto, "auto"),
    (Backprojection::ScatterAtomic, "scatter_atomic"),
    (Backprojection::ScatterCas, "scatter_cas"),
    (Backprojection::ScatterFixed, "scatter_fixed"),
    (Backprojection::Gather, "gather"),
];

fn geometry(beam: Beam) -> Geometry {
    Geometry {
        detector: Detector {
            height: 6,
            width: 5,
            pixel_mm: [2.1, 1.89],
            principal_mm: [0.3, -0.4],
        },
        sdd_mm: 60.0,
        sid_mm: 40.0,
        beam,
        isocentre: None,
    }
}

fn poses() -> Vec<Pose> {
    vec![
        Pose::new([0.1, -0.2, 0.3], [1.0, -0.5, 0.7]),
        Pose::new([-0.3, 0.25, -0.15], [-1.0, 0.4, 0.2]),
        Pose::default(),
    ]
}

pub(super) fn drr_variants(run: &mut Run) -> Result<()> {
    let atomics = run.gpu.features().float_atomics;
    for (projector, pname) in PROJECTORS {
        for beam in [Beam::Cone, Beam::Parallel] {
            let case = format!("{beam:?} beam, 3 poses, 7x9x11 grid in slabs").to_lowercase();
            if run.wants("drr_forward", pname) {
                run.check("drr_forward", pname, pname, &case, |run, cmp| {
                    forward(run, cmp, projector, beam)
                });
            }
            for (method, mname) in METHODS {
                let family = "drr_backproject";
                if !run.wants(family, &format!("{pname}_{mname}")) {
                    continue;
                }
                let ran = match (method, atomics) {
                    (Backprojection::ScatterAtomic, false) => continue,
                    (Backprojection::Auto, true) => "scatter_atomic",
                    (Backprojection::Auto, false) => "scatter_cas",
                    _ => mname,
                };
                let variant = format!("{pname}_{mname}");
                let ran = format!("{pname}_{ran}");
                run.check(family, &variant, &ran, &case, |run, cmp| {
                    backward(run, cmp, projector, beam, method)
                });
            }
        }
    }
    Ok(())
}

/// The grid (anisotropic spacing, off-centre origin), its random volume on the device in slabs
/// of 3 planes, and the same values as f64.
fn volume(run: &mut Run) -> Result<(VolumeGrid, Volume, Vec<f64>)> {
    let grid = VolumeGrid::new([7, 9, 11], [1.0, 1.3, 0.8], [-5.0, -5.5, -2.5]);
    let data: Vec<f32> = run
        .rng
        .vec_uniform(grid.numel(), -1.0, 1.0)
        .iter()
        .map(|v| 0.5 * (v + 1.0))
        .collect();
    let vol = Volume::from_host_tiled(run.gpu, grid.clone(), &data, 3 * 9 * 11)?;
    Ok((grid, vol, data.iter().map(|&v| v as f64).collect()))
}

fn reference_projector(p: Projector) -> RefProjector {
    match p {
        Projector::Siddon => RefProjector::Siddon,
        Projector::Trilinear { step_mm } => RefProjector::Trilinear {
            step_mm: step_mm as f64,
        },
    }
}

fn forward(run: &mut Run, cmp: &mut Comparison, p: Projector, beam: Beam) -> Result<()> {
    let (grid, vol, data) = volume(run)?;
    let geom = geometry(beam);
    let poses = poses();
    let pose_t = drr::pose_tensor(run.gpu, &poses)?;
    let img = run.gpu.no_grad(|| drr::render(&vol, &pose_t, &geom, p))?;
    let inv = grid.inverse_affine("cads check")?;
    let vol_ref = crate::reference::Array::new(data, &grid.dims);
    let want: Vec<f64> = poses
        .iter()
        .flat_map(|pose| {
            project(
                &vol_ref,
                &inv,
                &geom.world_rays(&grid, pose),
                reference_projector(p),
            )
        })
        .collect();
    cmp.close("image", &img.to_vec()?, &want, DRR_TOL);
    Ok(())
}

fn backward(
    run: &mut Run,
    cmp: &mut Comparison,
    p: Projector,
    beam: Beam,
    method: Backprojection,
) -> Result<()> {
    let (grid, vol, _) = volume(run)?;
    let geom = geometry(beam);
    let poses = poses();
    let pose_t = drr::pose_tensor(run.gpu, &poses)?;
    let n = poses.len() * geom.detector.height * geom.detector.width;
    let u = run.rng.vec_uniform(n, -1.0, 1.0);
    let shape = [poses.len(), geom.detector.height, geom.detector.width];
    let u_t = Tensor::from_slice(run.gpu, &u, &shape)?;
    let grad = drr::backproject(&vol, &pose_t, &u_t, &geom, p, method)?;
    let inv = grid.inverse_affine("cads check")?;
    let rays: Vec<_> = poses
        .iter()
        .flat_map(|pose| geom.world_rays(&grid, pose))
        .collect();
    let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
    let want = backproject(grid.dims, &inv, &rays, &u64, reference_projector(p));
    cmp.close("volume gradient", &grad.to_host()?, &want.data, DRR_TOL);
    Ok(())
}
