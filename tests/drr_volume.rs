//! One gradient value for a whole DRR volume, whatever its slab tiling: with the storage-binding
//! limit lowered so a small volume is cut into 4 z-slabs, the autograd gradient and the direct
//! backprojection come back as one `Volume` equal to the single-tensor volume's and to the f64
//! reference; reconstruction steps (axpy on volumes, or SGD over the slabs) stay on the GPU and
//! give the same volume tiled or whole; mismatched tilings and missing gradients are typed errors.
mod common;

use cads::drr::{
    self, Backprojection, Beam, Detector, Geometry, Pose, Projector, Volume, VolumeGrid,
};
use cads::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use cads::reference::drr::{backproject, RefProjector};
use cads::util::{Rng, Tolerance};
use cads::{Error, Tensor};
use common::{assert_close, gpu};

const TOL: Tolerance = Tolerance {
    abs: 2e-3,
    rel: 1e-3,
};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn grid() -> VolumeGrid {
    VolumeGrid::new([7, 9, 11], [1.0, 1.3, 0.8], [-5.0, -5.5, -2.5])
}

/// 2 z-planes of 9 × 11 voxels per binding: the 7-plane volume becomes slabs of 2, 2, 2, 1.
const LOWERED_LIMIT: usize = 2 * 9 * 11;

fn geometry() -> Geometry {
    Geometry {
        detector: Detector {
            height: 6,
            width: 5,
            pixel_mm: [2.1, 1.9],
            principal_mm: [0.3, -0.4],
        },
        sdd_mm: 60.0,
        sid_mm: 40.0,
        beam: Beam::Cone,
        isocentre: None,
    }
}

fn poses() -> Vec<Pose> {
    vec![
        Pose::new([0.1, -0.2, 0.3], [1.0, -0.5, 0.7]),
        Pose::new([-0.3, 0.25, -0.15], [-1.0, 0.4, 0.2]),
    ]
}

const PROJECTORS: [Projector; 2] = [Projector::Siddon, Projector::Trilinear { step_mm: 0.37 }];

fn ref_projector(p: Projector) -> RefProjector {
    match p {
        Projector::Siddon => RefProjector::Siddon,
        Projector::Trilinear { step_mm } => RefProjector::Trilinear {
            step_mm: step_mm as f64,
        },
    }
}

/// The whole volume as one tensor, and the same voxels cut into slabs by the lowered limit.
fn whole_and_tiled(data: &[f32]) -> (Volume, Volume) {
    let gpu = gpu();
    let g = grid();
    let one = Tensor::from_slice(&gpu, data, &g.dims).unwrap();
    let whole = Volume::from_tensor(g.clone(), &one).unwrap();
    let tiled = Volume::from_host_tiled(&gpu, g, data, LOWERED_LIMIT).unwrap();
    assert_eq!(whole.slabs().len(), 1);
    assert_eq!(tiled.slabs().len(), 4);
    (whole, tiled)
}

#[test]
fn slabbed_gradient_is_one_volume_equal_to_the_whole_and_the_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let data = rng.vec_uniform(grid().numel(), 0.0, 1.0);
    let (whole, tiled) = whole_and_tiled(&data);
    let geom = geometry();
    let pose_t = drr::pose_tensor(&gpu, &poses()).unwrap();
    let inv = grid().inverse_affine("test").unwrap();
    let rays: Vec<_> = poses()
        .iter()
        .flat_map(|pose| geom.world_rays(&grid(), pose))
        .collect();
    for p in PROJECTORS {
        let u = rng.vec_uniform(poses().len() * 30, -1.0, 1.0);
        let u_t = Tensor::from_slice(&gpu, &u, &[poses().len(), 6, 5]).unwrap();
        let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
        let want = backproject(grid().dims, &inv, &rays, &u64, ref_projector(p)).data;
        let mut got = Vec::new();
        for vol in [&whole, &tiled] {
            // autograd: one gradient value with the volume's own tiling
            let leaf = vol.clone().requires_grad_(true);
            let img = drr::render(&leaf, &pose_t, &geom, p).unwrap();
            let grads = img.backward_with(&u_t).unwrap();
            let grad = leaf.gradient(&grads).unwrap();
            assert_eq!(grad.slabs().len(), vol.slabs().len());
            assert_eq!(grad.grid().dims, grid().dims);
            let host = grad.to_host().unwrap();
            assert_close(&format!("{p:?} autograd, {vol:?}"), &host, &want, TOL);
            // the direct backprojection is the same value
            let direct = drr::backproject(vol, &pose_t, &u_t, &geom, p, Backprojection::Auto)
                .unwrap()
                .to_host()
                .unwrap();
            assert_close(&format!("{p:?} backproject, {vol:?}"), &direct, &want, TOL);
            got.push(host);
        }
        assert_close(
            &format!("{p:?} tiled vs whole"),
            &got[1],
            &f64s(&got[0]),
            TOL,
        );
    }
}

/// Gradient descent on ½‖P v − b‖² from v = 0, all on the GPU: v ← v − lr·Pᵀ(P v − b) with
/// `axpy_`, and the same with SGD over the slab tensors. Tiled and whole give the same volume,
/// the loss falls, and `dot` / `scale_` / `fill_` agree with the host.
#[test]
fn reconstruction_steps_stay_whole_volume_operations() {
    let gpu = gpu();
    let mut rng = Rng::new(32);
    let truth = rng.vec_uniform(grid().numel(), 0.0, 1.0);
    let (truth_whole, _) = whole_and_tiled(&truth);
    let geom = geometry();
    let pose_t = drr::pose_tensor(&gpu, &poses()).unwrap();
    let p = Projector::Trilinear { step_mm: 0.37 };
    let target = gpu
        .no_grad(|| drr::render(&truth_whole, &pose_t, &geom, p))
        .unwrap();
    let lr = 2e-3;
    let zeros = vec![0.0; grid().numel()];
    // zeros made on the device: the whole grid fits one binding, the lowered limit cuts 4 slabs
    let whole = Volume::zeros(&gpu, grid()).unwrap();
    let tiled = Volume::zeros_tiled(&gpu, grid(), LOWERED_LIMIT).unwrap();
    assert_eq!(whole.slabs().len(), 1);
    assert_eq!(tiled.zeros_like().unwrap().slabs().len(), 4);
    assert!(tiled.to_host().unwrap().iter().all(|&v| v == 0.0));
    let mut finals = Vec::new();
    for vol in [&whole, &tiled] {
        let mut losses = Vec::new();
        for _ in 0..4 {
            let residual = gpu
                .no_grad(|| {
                    let img = drr::render(vol, &pose_t, &geom, p)?;
                    cads::ops::sub(&img, &target)
                })
                .unwrap();
            losses.push(
                residual
                    .to_vec()
                    .unwrap()
                    .iter()
                    .map(|r| r * r)
                    .sum::<f32>(),
            );
            let g =
                drr::backproject(vol, &pose_t, &residual, &geom, p, Backprojection::Auto).unwrap();
            vol.axpy_(-lr, &g).unwrap();
        }
        assert!(
            losses.windows(2).all(|w| w[1] < w[0]),
            "{vol:?}: the loss must fall, {losses:?}"
        );
        finals.push(vol.to_host().unwrap());
    }
    assert!(finals[0].iter().any(|&v| v != 0.0));
    assert_close(
        "axpy steps: tiled vs whole",
        &finals[1],
        &f64s(&finals[0]),
        TOL,
    );

    // The same steps through an optimizer over the slabs, gradients from autograd.
    let mut sgd_finals = Vec::new();
    let (whole, tiled) = whole_and_tiled(&zeros);
    for vol in [whole, tiled] {
        let leaf = vol.requires_grad_(true);
        let mut sgd = Sgd::new(
            vec![ParamGroup::new(leaf.tensors())],
            SgdConfig {
                lr: lr as f64,
                ..SgdConfig::default()
            },
        )
        .unwrap();
        for _ in 0..4 {
            let img = drr::render(&leaf, &pose_t, &geom, p).unwrap();
            let residual = cads::ops::sub(&img, &target).unwrap();
            let grads = residual.backward_with(&residual.detach()).unwrap();
            sgd.step(&grads).unwrap();
        }
        sgd_finals.push(leaf.to_host().unwrap());
    }
    assert_close(
        "sgd: tiled vs whole",
        &sgd_finals[1],
        &f64s(&sgd_finals[0]),
        TOL,
    );
    assert_close("sgd vs axpy", &sgd_finals[1], &f64s(&finals[0]), TOL);

    // dot, scale_, fill_ against the host
    let (a, b) = whole_and_tiled(&truth);
    let b2 = Volume::from_host_tiled(&gpu, grid(), &finals[0], LOWERED_LIMIT).unwrap();
    let want: f64 = truth
        .iter()
        .zip(&finals[0])
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let got = b.dot(&b2).unwrap().to_vec().unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        (got[0] as f64 - want).abs() <= 1e-4 * want.abs(),
        "dot {} vs {want}",
        got[0]
    );
    b.scale_(-2.0).unwrap();
    let twice: Vec<f32> = truth.iter().map(|v| -2.0 * v).collect();
    assert_close("scale_", &b.to_host().unwrap(), &f64s(&twice), TOL);
    a.fill_(0.5).unwrap();
    assert!(a.to_host().unwrap().iter().all(|&v| v == 0.5));
}

#[test]
fn mismatched_volumes_and_missing_gradients_are_typed_errors() {
    let gpu = gpu();
    let data = vec![1.0; grid().numel()];
    let (whole, tiled) = whole_and_tiled(&data);
    // different tilings do not combine slab by slab
    assert!(matches!(
        whole.axpy_(1.0, &tiled),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        tiled.dot(&whole),
        Err(Error::ShapeMismatch { .. })
    ));
    // a volume that does not require grad has no gradient in the result
    let pose_t = drr::pose_tensor(&gpu, &poses())
        .unwrap()
        .requires_grad_(true);
    let img = drr::render(&tiled, &pose_t, &geometry(), Projector::Siddon).unwrap();
    let grads = img
        .backward_with(&Tensor::full(&gpu, img.shape(), 1.0).unwrap())
        .unwrap();
    assert!(matches!(
        tiled.gradient(&grads),
        Err(Error::InvalidArgument { .. })
    ));
    // slabs that do not tile D are refused
    let slab = Tensor::zeros(&gpu, &[2, 9, 11]).unwrap();
    assert!(matches!(
        Volume::from_slabs(grid(), vec![(0, slab.clone()), (3, slab)]),
        Err(Error::ShapeMismatch { .. })
    ));
}
