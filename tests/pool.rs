//! Pooling and resampling on the GPU against src/reference/{pool,resample}.rs, forward and
//! backward, on awkward shapes; finite differences on the references; identities.

mod common;

use cads::ops::{self, Pool3dConfig, ResampleMode};
use cads::reference::{gradcheck, pool as refpool, resample as refrs, Array};
use cads::util::{Rng, F32_ACCUM, F32_GRAD, F32_POINTWISE, FD_F64};
use cads::Tensor;
use common::*;

fn pool_cases() -> Vec<(Vec<usize>, Pool3dConfig)> {
    vec![
        (vec![2, 4, 6, 8, 3], Pool3dConfig::cube(2)),
        (
            vec![1, 5, 7, 11, 2],
            Pool3dConfig {
                kernel: [3, 3, 3],
                stride: [1, 2, 3],
                padding: [1, 1, 0],
                count_include_pad: true,
            },
        ),
        (
            vec![3, 7, 5, 9, 1],
            Pool3dConfig {
                kernel: [2, 3, 4],
                stride: [2, 2, 3],
                padding: [1, 0, 2],
                count_include_pad: false,
            },
        ),
        (
            vec![2, 3, 13, 13, 5],
            Pool3dConfig {
                kernel: [1, 3, 3],
                stride: [1, 2, 2],
                padding: [0, 1, 1],
                count_include_pad: true,
            },
        ),
    ]
}

#[test]
fn max_and_avg_pool_match_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    for max in [true, false] {
        for (shape, cfg) in pool_cases() {
            let (x, tx) = random_param(&gpu, &mut rng, &shape, -2.0, 2.0);
            let y = if max {
                ops::max_pool3d(&tx, &cfg)
            } else {
                ops::avg_pool3d(&tx, &cfg)
            }
            .unwrap();
            let want = refpool::pool3d(&x, &cfg, max);
            assert_eq!(y.shape(), want.shape.as_slice(), "{shape:?} {cfg:?}");
            let what = format!("{} {shape:?} {cfg:?}", if max { "max" } else { "avg" });
            assert_close(
                &format!("{what} forward"),
                &y.to_vec().unwrap(),
                &want.data,
                F32_ACCUM,
            );
            let gdata = rng.vec_uniform(y.numel(), -1.0, 1.0);
            let grads = y
                .backward_with(&Tensor::from_slice(&gpu, &gdata, y.shape()).unwrap())
                .unwrap();
            let gx = refpool::pool3d_backward(&x, &cfg, max, &Array::from_f32(&gdata, y.shape()));
            assert_close(
                &format!("{what} backward"),
                &grads.get(&tx).unwrap().to_vec().unwrap(),
                &gx.data,
                F32_GRAD,
            );
        }
    }
}

#[test]
fn pooling_2d_images_and_global_pool() {
    let gpu = gpu();
    let mut rng = Rng::new(22);
    let (x, tx) = random_pair(&gpu, &mut rng, &[2, 9, 7, 3], -1.0, 1.0);
    let y = ops::avg_pool3d(&tx, &Pool3dConfig::cube(2)).unwrap();
    assert_eq!(y.shape(), &[2, 4, 3, 3]);
    let x5 = Array::new(x.data.clone(), &[2, 1, 9, 7, 3]);
    let cfg = Pool3dConfig {
        kernel: [1, 2, 2],
        stride: [1, 2, 2],
        padding: [0; 3],
        count_include_pad: true,
    };
    assert_close(
        "2d avg pool",
        &y.to_vec().unwrap(),
        &refpool::pool3d(&x5, &cfg, false).data,
        F32_ACCUM,
    );
    // Global average pooling = mean over space per channel.
    let g = ops::global_avg_pool(&tx).unwrap();
    assert_eq!(g.shape(), &[2, 3]);
    let mut want = vec![0.0; 6];
    for (i, v) in x.data.iter().enumerate() {
        want[(i / (63 * 3)) * 3 + i % 3] += v / 63.0;
    }
    assert_close("global avg pool", &g.to_vec().unwrap(), &want, F32_ACCUM);
}

#[test]
fn pool_bad_input_is_a_typed_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[1, 2, 2, 2, 1]).unwrap();
    assert!(
        ops::max_pool3d(&x, &Pool3dConfig::cube(3)).is_err(),
        "kernel larger than input"
    );
    assert!(
        ops::avg_pool3d(
            &Tensor::zeros(&gpu, &[2, 2]).unwrap(),
            &Pool3dConfig::cube(2)
        )
        .is_err(),
        "rank"
    );
    let bad = Pool3dConfig {
        kernel: [2; 3],
        stride: [0; 3],
        padding: [0; 3],
        count_include_pad: true,
    };
    assert!(ops::avg_pool3d(&x, &bad).is_err(), "zero stride");
}

const MODES: [ResampleMode; 3] = [
    ResampleMode::Nearest,
    ResampleMode::Linear {
        align_corners: false,
    },
    ResampleMode::Linear {
        align_corners: true,
    },
];

#[test]
fn resample_matches_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(23);
    let cases: &[(&[usize], [usize; 3])] = &[
        (&[2, 5, 7, 3, 2], [9, 4, 3]),
        (&[1, 1, 6, 11, 3], [1, 13, 5]),
        (&[1, 4, 4, 4, 1], [8, 8, 8]),
        (&[2, 7, 3, 5, 1], [2, 1, 17]),
    ];
    for mode in MODES {
        for (shape, size) in cases {
            let (x, tx) = random_param(&gpu, &mut rng, shape, -1.0, 1.0);
            let y = ops::resample(&tx, *size, mode).unwrap();
            let want = refrs::resample(&x, *size, mode);
            let what = format!("{mode:?} {shape:?} -> {size:?}");
            assert_close(
                &format!("{what} forward"),
                &y.to_vec().unwrap(),
                &want.data,
                F32_ACCUM,
            );
            let gdata = rng.vec_uniform(y.numel(), -1.0, 1.0);
            let grads = y
                .backward_with(&Tensor::from_slice(&gpu, &gdata, y.shape()).unwrap())
                .unwrap();
            let gx =
                refrs::resample_backward(shape, *size, mode, &Array::from_f32(&gdata, y.shape()));
            assert_close(
                &format!("{what} backward"),
                &grads.get(&tx).unwrap().to_vec().unwrap(),
                &gx.data,
                F32_GRAD,
            );
        }
    }
}

#[test]
fn resample_identities() {
    let gpu = gpu();
    let mut rng = Rng::new(24);
    // Same size is the identity for every mode.
    let (x, tx) = random_pair(&gpu, &mut rng, &[1, 3, 5, 7, 2], -1.0, 1.0);
    for mode in MODES {
        let y = ops::resample(&tx, [3, 5, 7], mode).unwrap();
        assert_close(
            &format!("{mode:?} identity"),
            &y.to_vec().unwrap(),
            &x.data,
            F32_POINTWISE,
        );
    }
    // Linear interpolation reproduces a linear ramp exactly (align-corners: endpoints included).
    let ramp: Vec<f32> = (0..5).map(|i| 2.0 * i as f32 + 1.0).collect();
    let t = Tensor::from_slice(&gpu, &ramp, &[1, 1, 1, 5, 1]).unwrap();
    let y = ops::resample(
        &t,
        [1, 1, 9],
        ResampleMode::Linear {
            align_corners: true,
        },
    )
    .unwrap();
    let want: Vec<f64> = (0..9).map(|i| 1.0 + i as f64).collect();
    assert_close("ramp", &y.to_vec().unwrap(), &want, F32_POINTWISE);
    // Adjoint: <R x, u> = <x, R^T u>.
    let (xa, xt) = random_param(&gpu, &mut rng, &[1, 4, 6, 5, 3], -1.0, 1.0);
    let y = ops::resample(
        &xt,
        [7, 3, 8],
        ResampleMode::Linear {
            align_corners: false,
        },
    )
    .unwrap();
    let u = rng.vec_uniform(y.numel(), -1.0, 1.0);
    let rx: f64 = y
        .to_vec()
        .unwrap()
        .iter()
        .zip(&u)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let grads = y
        .backward_with(&Tensor::from_slice(&gpu, &u, y.shape()).unwrap())
        .unwrap();
    let rtu: f64 = grads
        .get(&xt)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .zip(&xa.data)
        .map(|(a, b)| *a as f64 * b)
        .sum();
    assert!(
        (rx - rtu).abs() < 1e-4 * rx.abs().max(1.0),
        "adjoint {rx} vs {rtu}"
    );
}

#[test]
fn reference_pool_and_resample_backward_match_finite_differences() {
    let mut rng = Rng::new(25);
    let shape = [1, 3, 4, 5, 2];
    let x = Array::new((0..120).map(|_| rng.range(-1.0, 1.0)).collect(), &shape);
    let cfg = Pool3dConfig {
        kernel: [2, 3, 2],
        stride: [1, 2, 2],
        padding: [1, 1, 0],
        count_include_pad: false,
    };
    for max in [true, false] {
        let y = refpool::pool3d(&x, &cfg, max);
        let g: Vec<f64> = (0..y.numel()).map(|_| rng.range(-1.0, 1.0)).collect();
        let analytic = refpool::pool3d_backward(&x, &cfg, max, &Array::new(g.clone(), &y.shape));
        let f = |v: &[f64]| {
            gradcheck::dot(
                &refpool::pool3d(&Array::new(v.to_vec(), &shape), &cfg, max).data,
                &g,
            )
        };
        assert_close64(
            &format!("pool max={max} fd"),
            &analytic.data,
            &gradcheck::numeric_gradient(f, &x.data, 1e-6),
            FD_F64,
        );
    }
    for mode in MODES {
        let size = [5, 3, 7];
        let y = refrs::resample(&x, size, mode);
        let g: Vec<f64> = (0..y.numel()).map(|_| rng.range(-1.0, 1.0)).collect();
        let analytic =
            refrs::resample_backward(&shape, size, mode, &Array::new(g.clone(), &y.shape));
        let f = |v: &[f64]| {
            gradcheck::dot(
                &refrs::resample(&Array::new(v.to_vec(), &shape), size, mode).data,
                &g,
            )
        };
        assert_close64(
            &format!("{mode:?} fd"),
            &analytic.data,
            &gradcheck::numeric_gradient(f, &x.data, 1e-6),
            FD_F64,
        );
    }
}
