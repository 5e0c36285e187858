//! DRR engine, backward: adjoint identities and backprojection vs the f64 reference (every
//! backprojection method, the fixed-point scatter's determinism), pose gradients vs finite
//! differences. The forward projectors are in tests/drr.rs.
mod common;
#[path = "common/drr_setup.rs"]
mod drr_setup;

use cads::drr::{self, Backprojection, Beam, Geometry, Pose, Projector, Volume};
use cads::reference::drr::backproject;
use cads::reference::gradcheck::{dot, numeric_gradient};
use cads::util::{Rng, Tolerance};
use cads::Tensor;
use common::{assert_close, gpu};
use drr_setup::*;

#[test]
fn adjoint_identity_and_backprojection_vs_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    let grid = small_grid();
    let (vol_ref, data) = random_volume(&mut rng, &grid);
    let inv = grid.inverse_affine("test").unwrap();
    for beam in [Beam::Cone, Beam::Parallel] {
        let geom = Geometry {
            beam,
            ..cone(6, 5, 2.1)
        };
        for p in PROJECTORS {
            for max_slab in [usize::MAX / 8, 3 * 9 * 11] {
                let vol = Volume::from_host_tiled(&gpu, grid.clone(), &data, max_slab)
                    .unwrap()
                    .requires_grad_(true);
                let poses = drr::pose_tensor(&gpu, &test_poses()).unwrap();
                let img = drr::render(&vol, &poses, &geom, p).unwrap();
                let u = rng.vec_uniform(img.numel(), -1.0, 1.0);
                let grads = img
                    .backward_with(&Tensor::from_slice(&gpu, &u, img.shape()).unwrap())
                    .unwrap();
                let mut pt_u = Vec::new();
                for (_, slab) in vol.slabs() {
                    pt_u.extend(grads.get(slab).expect("slab grad").to_vec().unwrap());
                }
                let pv: Vec<f64> = img.to_vec().unwrap().iter().map(|&v| v as f64).collect();
                let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
                let lhs = dot(&pv, &u64);
                let rhs = dot(
                    &vol_ref.data,
                    &pt_u.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                );
                assert!(
                    (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
                    "{beam:?} {p:?}: <Pv,u> = {lhs}, <v,P^T u> = {rhs}"
                );
                // and the gather equals the reference's ray-driven scatter
                let rays: Vec<_> = test_poses()
                    .iter()
                    .flat_map(|pose| geom.world_rays(&grid, pose))
                    .collect();
                let want = backproject(grid.dims, &inv, &rays, &u64, ref_projector(p));
                assert_close(
                    &format!("{beam:?} {p:?} backprojection"),
                    &pt_u,
                    &want.data,
                    TOL,
                );
            }
        }
    }
}

/// Every volume-gradient method (float-atomic scatter where the adapter has it, CAS scatter,
/// fixed-point scatter, gather) equals the f64 reference backprojection and satisfies ⟨Pv, u⟩ = ⟨v, Pᵀu⟩, on cone and
/// parallel beams, tiled and whole volumes, including the identity pose (parallel rays run
/// exactly along the grid axes), beams running towards −y and along z, and a batch of poses.
/// The trilinear steps cover the scatter's corner carrying: 0.37 mm (several samples per cell,
/// steps of one cell along any axis and both signs) and 1.9 mm (jumps of two cells, no carry).
#[test]
fn every_backprojection_method_is_the_adjoint() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    let grid = small_grid();
    let (vol_ref, data) = random_volume(&mut rng, &grid);
    let inv = grid.inverse_affine("test").unwrap();
    let mut methods = vec![
        Backprojection::ScatterCas,
        Backprojection::ScatterFixed,
        Backprojection::Gather,
        Backprojection::Auto,
    ];
    if gpu.features().float_atomics {
        methods.push(Backprojection::ScatterAtomic);
    }
    let mut poses = test_poses();
    poses.push(Pose::default());
    poses.push(Pose::new([0.2, -0.1, 3.0], [0.5, 0.3, -0.4]));
    poses.push(Pose::new([1.45, 0.2, 0.1], [-0.3, 0.2, 0.6]));
    let projectors = [
        PROJECTORS[0],
        PROJECTORS[1],
        Projector::Trilinear { step_mm: 1.9 },
    ];
    for beam in [Beam::Cone, Beam::Parallel] {
        let geom = Geometry {
            beam,
            ..cone(6, 5, 2.1)
        };
        for p in projectors {
            for max_slab in [usize::MAX / 8, 2 * 9 * 11] {
                let vol = Volume::from_host_tiled(&gpu, grid.clone(), &data, max_slab).unwrap();
                let pose_t = drr::pose_tensor(&gpu, &poses).unwrap();
                let img = gpu
                    .no_grad(|| drr::render(&vol, &pose_t, &geom, p))
                    .unwrap();
                let u = rng.vec_uniform(img.numel(), -1.0, 1.0);
                let u_t = Tensor::from_slice(&gpu, &u, img.shape()).unwrap();
                let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
                let rays: Vec<_> = poses
                    .iter()
                    .flat_map(|pose| geom.world_rays(&grid, pose))
                    .collect();
                let want = backproject(grid.dims, &inv, &rays, &u64, ref_projector(p));
                let pv: Vec<f64> = img.to_vec().unwrap().iter().map(|&v| v as f64).collect();
                let lhs = dot(&pv, &u64);
                for &method in &methods {
                    let grad = drr::backproject(&vol, &pose_t, &u_t, &geom, p, method).unwrap();
                    assert_eq!(grad.slabs().len(), vol.slabs().len());
                    let pt_u = grad.to_host().unwrap();
                    let what = format!("{beam:?} {p:?} {method:?} slab {max_slab}");
                    assert_close(&what, &pt_u, &want.data, TOL);
                    let rhs = dot(
                        &vol_ref.data,
                        &pt_u.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                    );
                    assert!(
                        (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
                        "{what}: <Pv,u> = {lhs}, <v,P^T u> = {rhs}"
                    );
                }
            }
        }
    }
}

/// The fixed-point scatter is order-independent: two runs give bit-identical gradients (the
/// float scatters may not). Its scale follows max |g| over 60 orders of magnitude (g = 1e±30 · u
/// still matches the reference to the usual tolerance, relative to the scale of g), an all-zero
/// g gives exact zeros, and a non-finite g gives an all-NaN gradient rather than wrong numbers.
#[test]
fn fixed_point_scatter_is_deterministic_and_scales_with_g() {
    let gpu = gpu();
    let mut rng = Rng::new(33);
    let grid = small_grid();
    let (_, data) = random_volume(&mut rng, &grid);
    let inv = grid.inverse_affine("test").unwrap();
    let geom = cone(6, 5, 2.1);
    let poses = test_poses();
    let pose_t = drr::pose_tensor(&gpu, &poses).unwrap();
    let rays: Vec<_> = poses
        .iter()
        .flat_map(|pose| geom.world_rays(&grid, pose))
        .collect();
    let n = poses.len() * 6 * 5;
    let u = rng.vec_uniform(n, -1.0, 1.0);
    let fixed = Backprojection::ScatterFixed;
    for p in PROJECTORS {
        let vol = Volume::from_host_tiled(&gpu, grid.clone(), &data, 2 * 9 * 11).unwrap();
        let run = |g: &[f32]| {
            let g_t = Tensor::from_slice(&gpu, g, &[poses.len(), 6, 5]).unwrap();
            drr::backproject(&vol, &pose_t, &g_t, &geom, p, fixed)
                .unwrap()
                .to_host()
                .unwrap()
        };
        let first = run(&u);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first), bits(&run(&u)), "{p:?}: two runs differ");
        let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
        let want = backproject(grid.dims, &inv, &rays, &u64, ref_projector(p));
        assert_close(&format!("{p:?} fixed"), &first, &want.data, TOL);
        for k in [1e30f32, 1e-30] {
            let scaled: Vec<f32> = u.iter().map(|v| v * k).collect();
            let got: Vec<f32> = run(&scaled).iter().map(|v| v / k).collect();
            assert_close(&format!("{p:?} fixed, g × {k}"), &got, &want.data, TOL);
        }
        assert!(
            run(&vec![0.0; n]).iter().all(|v| v.to_bits() == 0),
            "{p:?}: zero g"
        );
        let mut bad = u.clone();
        bad[7] = f32::INFINITY;
        assert!(run(&bad).iter().all(|v| v.is_nan()), "{p:?}: inf in g");
        bad[7] = f32::NAN;
        assert!(run(&bad).iter().all(|v| v.is_nan()), "{p:?}: NaN in g");
    }
}

#[test]
fn pose_gradient_matches_finite_differences() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    let grid = small_grid();
    let (vol_ref, data) = random_volume(&mut rng, &grid);
    for beam in [Beam::Cone, Beam::Parallel] {
        let geom = Geometry {
            beam,
            ..cone(6, 5, 2.1)
        };
        for p in [Projector::Siddon, Projector::Trilinear { step_mm: 0.37 }] {
            for max_slab in [usize::MAX / 8, 2 * 9 * 11] {
                let vol = Volume::from_host_tiled(&gpu, grid.clone(), &data, max_slab).unwrap();
                let poses = drr::pose_tensor(&gpu, &test_poses())
                    .unwrap()
                    .requires_grad_(true);
                let img = drr::render(&vol, &poses, &geom, p).unwrap();
                let g = rng.vec_uniform(img.numel(), -1.0, 1.0);
                let grads = img
                    .backward_with(&Tensor::from_slice(&gpu, &g, img.shape()).unwrap())
                    .unwrap();
                let got = grads.get(&poses).unwrap().to_vec().unwrap();
                // the image from the forward+Jacobian walk equals the reference too
                let want_img = reference(&vol_ref, &grid, &geom, &test_poses(), p);
                assert_close(
                    "forward with jacobian",
                    &img.to_vec().unwrap(),
                    &want_img,
                    TOL,
                );
                let n_pix = 30;
                let mut want = Vec::new();
                for (b, pose) in test_poses().iter().enumerate() {
                    let gb: Vec<f64> = g[b * n_pix..(b + 1) * n_pix]
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    let loss = |x: &[f64]| {
                        dot(
                            &reference(&vol_ref, &grid, &geom, &[Pose::from_params(x)], p),
                            &gb,
                        )
                    };
                    want.extend(numeric_gradient(loss, &pose.to_params(), 1e-6));
                }
                let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                let tol = Tolerance {
                    abs: 5e-3 * scale,
                    rel: 5e-3,
                };
                assert_close(
                    &format!("{beam:?} {p:?} slab {max_slab} pose grad"),
                    &got,
                    &want,
                    tol,
                );
            }
        }
    }
}
