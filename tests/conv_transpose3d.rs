//! Transposed conv3d on the GPU (general path and the k2s2 fast path) against the reference,
//! forward and backward; adjoint identity; finite differences on the reference; bad input.

mod common;

use cads::nn::Layout;
use cads::ops::conv_transpose3d::{conv_transpose3d_with, resolve_path, ConvTransposePath};
use cads::ops::{conv_transpose3d, ConvTranspose3dConfig};
use cads::reference::{conv_transpose3d as refct, gradcheck, Array};
use cads::util::{Rng, F32_ACCUM, F32_GRAD, FD_F64};
use cads::Tensor;
use common::*;

fn check_case(
    x_shape: &[usize],
    co: usize,
    cfg: &ConvTranspose3dConfig,
    path: ConvTransposePath,
    seed: u64,
) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let ci = x_shape[4];
    let (x, tx) = random_param(&gpu, &mut rng, x_shape, -1.0, 1.0);
    let (w, tw) = random_param(
        &gpu,
        &mut rng,
        &[cfg.kernel[0], cfg.kernel[1], cfg.kernel[2], ci, co],
        -0.5,
        0.5,
    );
    let y = conv_transpose3d_with(&tx, &tw, None, cfg, path).unwrap();
    let want = refct::conv_transpose3d(&x, &w, cfg);
    let what = format!("{path:?} x{x_shape:?} co {co} {cfg:?}");
    assert_eq!(y.shape(), want.shape.as_slice(), "{what}");
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
    let (gx, gw) =
        refct::conv_transpose3d_backward(&x, &w, cfg, &Array::from_f32(&gdata, y.shape()));
    assert_close(
        &format!("{what} grad x"),
        &grads.get(&tx).unwrap().to_vec().unwrap(),
        &gx.data,
        F32_GRAD,
    );
    assert_close(
        &format!("{what} grad w"),
        &grads.get(&tw).unwrap().to_vec().unwrap(),
        &gw.data,
        F32_GRAD,
    );
}

#[test]
fn up2_fast_path_matches_reference() {
    // Voxel counts odd (tile tails), several split-K chunks (M > 256), batch > 1; the k2s2
    // kernels and the patch path, whichever Auto takes on this adapter.
    for path in [ConvTransposePath::K2s2, ConvTransposePath::Patches] {
        check_case(
            &[2, 3, 5, 7, 8],
            16,
            &ConvTranspose3dConfig::up2(),
            path,
            31,
        );
        check_case(&[1, 7, 9, 5, 4], 8, &ConvTranspose3dConfig::up2(), path, 32);
    }
    // Channels that are not multiples of 4/8 leave the k2s2 kernels: Auto takes the patch path,
    // K2s2 the general kernels.
    for path in [ConvTransposePath::Auto, ConvTransposePath::K2s2] {
        check_case(&[2, 3, 2, 5, 3], 5, &ConvTranspose3dConfig::up2(), path, 33);
    }
}

/// A config whose kernel is its stride (no padding, output padding or dilation).
fn tiling(k: [usize; 3]) -> ConvTranspose3dConfig {
    ConvTranspose3dConfig {
        kernel: k,
        stride: k,
        ..ConvTranspose3dConfig::up2()
    }
}

#[test]
fn patch_path_matches_reference_on_non_overlapping_kernels() {
    // PVT-UNet's [1, 2, 2] level, anisotropic and cubic kernels, the 1 × 1 × 1 case; odd and
    // vec4-friendly channel counts (the matmul's 4 × 4 tile and its vec4 tiles); batches.
    let cases: [(&[usize], usize, [usize; 3]); 6] = [
        (&[2, 3, 4, 5, 8], 16, [1, 2, 2]),
        (&[1, 2, 3, 2, 3], 5, [1, 2, 2]),
        (&[2, 2, 3, 3, 4], 6, [2, 1, 3]),
        (&[1, 2, 2, 3, 5], 4, [3, 3, 3]),
        (&[3, 2, 2, 2, 6], 7, [1, 1, 1]),
        (&[1, 2, 2, 2, 4], 8, [4, 4, 4]),
    ];
    for (i, (x_shape, co, k)) in cases.into_iter().enumerate() {
        for path in [ConvTransposePath::Auto, ConvTransposePath::Patches] {
            check_case(x_shape, co, &tiling(k), path, 60 + i as u64);
        }
    }
    // Patches on a config whose kernels overlap runs the general kernels.
    let overlapping = ConvTranspose3dConfig {
        kernel: [3, 2, 2],
        stride: [2, 2, 2],
        ..ConvTranspose3dConfig::up2()
    };
    check_case(
        &[1, 3, 2, 2, 3],
        4,
        &overlapping,
        ConvTransposePath::Patches,
        70,
    );
}

/// The kernels `path` runs for a forward and backward of `cfg` on a context of its own with
/// these tuning overrides.
fn kernels_run(
    cfg: &ConvTranspose3dConfig,
    path: ConvTransposePath,
    overrides: &[(&str, &str)],
) -> Vec<String> {
    let gpu = fresh_gpu();
    // A fixed matmul tile, so no matmul tuning shows in the profile.
    let mut overrides = overrides.to_vec();
    overrides.push(("matmul", "vec4_8x4"));
    gpu.set_tune_settings(memo_tuning(&overrides));
    let mut rng = Rng::new(71);
    let (_, tx) = random_param(&gpu, &mut rng, &[1, 2, 3, 3, 8], -1.0, 1.0);
    let k = cfg.kernel;
    let (_, tw) = random_param(&gpu, &mut rng, &[k[0], k[1], k[2], 8, 8], -1.0, 1.0);
    gpu.set_profiling(true);
    let y = conv_transpose3d_with(&tx, &tw, None, cfg, path).unwrap();
    let grads = cads::ops::sum_all(&y).unwrap().backward().unwrap();
    assert!(grads.get(&tx).is_some() && grads.get(&tw).is_some());
    gpu.synchronize().unwrap();
    gpu.set_profiling(false);
    gpu.take_profile().into_iter().map(|t| t.kernel).collect()
}

fn general(ks: &[String]) -> bool {
    ks.iter().any(|k| k.starts_with("conv_transpose3d::"))
}
fn k2s2(ks: &[String]) -> bool {
    ks.iter().any(|k| k.starts_with("conv_transpose3d_k2s2::"))
}
fn matmul(ks: &[String]) -> bool {
    ks.iter().any(|k| k.starts_with("matmul"))
}

#[test]
fn auto_takes_each_path_where_it_applies() {
    use ConvTransposePath::{Auto, General, K2s2, Patches};
    let up2 = ConvTranspose3dConfig::up2();
    // k2s2: the adapter's choice, here forced either way.
    let forced = [("conv_transpose3d", "k2s2")];
    let ran = kernels_run(&up2, Auto, &forced);
    assert!(k2s2(&ran) && !general(&ran) && !matmul(&ran), "{ran:?}");
    let forced = [("conv_transpose3d", "patches")];
    let ran = kernels_run(&up2, Auto, &forced);
    assert!(matmul(&ran) && !general(&ran) && !k2s2(&ran), "{ran:?}");
    // Other non-overlapping kernels: the patch path, whatever the k2s2 choice.
    let ran = kernels_run(&tiling([1, 2, 2]), Auto, &[("conv_transpose3d", "k2s2")]);
    assert!(matmul(&ran) && !general(&ran) && !k2s2(&ran), "{ran:?}");
    // Explicit paths; K2s2 on a config it does not cover runs the general kernels.
    let ran = kernels_run(&tiling([1, 2, 2]), General, &[]);
    assert!(general(&ran) && !matmul(&ran), "{ran:?}");
    let ran = kernels_run(&tiling([1, 2, 2]), K2s2, &[]);
    assert!(general(&ran) && !k2s2(&ran), "{ran:?}");
    let ran = kernels_run(&up2, Patches, &[]);
    assert!(matmul(&ran) && !k2s2(&ran), "{ran:?}");
}

#[test]
fn the_k2s2_choice_is_measured_once_per_context_and_named_by_overrides() {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[]));
    let up2 = ConvTranspose3dConfig::up2();
    let chosen = resolve_path(&gpu, &up2, 8, 8, ConvTransposePath::Auto).unwrap();
    assert!(
        matches!(chosen, ConvTransposePath::K2s2 | ConvTransposePath::Patches),
        "{chosen:?}"
    );
    let memo = gpu.remembered_choice("conv_transpose3d").unwrap();
    assert_eq!(memo.source, cads::gpu::ChoiceSource::Measured);
    assert_eq!(format!("{chosen:?}").to_ascii_lowercase(), memo.variant);
    // Channels the k2s2 kernels do not cover never consult it.
    let odd = resolve_path(&gpu, &up2, 3, 5, ConvTransposePath::Auto).unwrap();
    assert_eq!(odd, ConvTransposePath::Patches);
    gpu.set_tune_settings(memo_tuning(&[("conv_transpose3d", "sometimes")]));
    let err = resolve_path(&gpu, &up2, 8, 8, ConvTransposePath::Auto).unwrap_err();
    assert!(err.to_string().contains("k2s2"), "{err}");
}

#[test]
fn patch_path_under_autocast_stays_within_f16_rounding() {
    let gpu = gpu();
    let mut rng = Rng::new(73);
    let cfg = tiling([1, 2, 2]);
    let (x, tx) = random_pair(&gpu, &mut rng, &[2, 2, 3, 3, 8], -1.0, 1.0);
    let (w, tw) = random_pair(&gpu, &mut rng, &[1, 2, 2, 8, 12], -1.0, 1.0);
    gpu.set_profiling(true);
    let y = gpu
        .autocast(cads::gpu::Precision::Mixed, || {
            conv_transpose3d(&tx, &tw, None, &cfg)
        })
        .unwrap();
    let got = y.to_vec().unwrap();
    gpu.set_profiling(false);
    let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
    let want = refct::conv_transpose3d(&x, &w, &cfg);
    if !gpu.features().f16 {
        // Without SHADER_F16 autocast runs the f32 product.
        assert!(!ran.iter().any(|k| k.starts_with("matmul_f16")), "{ran:?}");
        assert_close(
            "patch path, autocast without f16",
            &got,
            &want.data,
            F32_ACCUM,
        );
        return;
    }
    assert!(ran.iter().any(|k| k.starts_with("matmul_f16")), "{ran:?}");
    // Each product of two f16-rounded operands in [-1, 1) is off by at most 2u|x||w| (u =
    // 2^-11), summed over 8 input channels: |error| ≤ 16u.
    let worst = got
        .iter()
        .zip(&want.data)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 16.0 / 2048.0, "worst {worst}");
    assert!(worst > 0.0, "f16 operands should round somewhere");
}

#[test]
fn general_path_matches_reference_on_awkward_geometry() {
    let cfg = ConvTranspose3dConfig {
        kernel: [3, 2, 3],
        stride: [1, 2, 3],
        padding: [1, 0, 2],
        output_padding: [0, 1, 2],
        dilation: [2, 1, 1],
    };
    check_case(&[2, 3, 4, 5, 3], 5, &cfg, ConvTransposePath::General, 34);
    check_case(
        &[1, 5, 3, 2, 2],
        7,
        &ConvTranspose3dConfig::up2(),
        ConvTransposePath::General,
        35,
    );
}

#[test]
fn adjoint_identity_and_fast_equals_general() {
    let gpu = gpu();
    let mut rng = Rng::new(36);
    let cfg = ConvTranspose3dConfig::up2();
    let (xa, x) = random_param(&gpu, &mut rng, &[1, 4, 3, 5, 8], -1.0, 1.0);
    let w = Tensor::from_slice(
        &gpu,
        &rng.vec_uniform(8 * 8 * 16, -0.5, 0.5),
        &[2, 2, 2, 8, 16],
    )
    .unwrap();
    let fast = conv_transpose3d_with(&x, &w, None, &cfg, ConvTransposePath::K2s2).unwrap();
    let general =
        conv_transpose3d_with(&x.detach(), &w, None, &cfg, ConvTransposePath::General).unwrap();
    let general_v: Vec<f64> = general
        .to_vec()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close(
        "fast vs general",
        &fast.to_vec().unwrap(),
        &general_v,
        F32_ACCUM,
    );
    // <T x, u> = <x, Tᵀ u>
    let u = rng.vec_uniform(fast.numel(), -1.0, 1.0);
    let tx_u: f64 = fast
        .to_vec()
        .unwrap()
        .iter()
        .zip(&u)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let grads = fast
        .backward_with(&Tensor::from_slice(&gpu, &u, fast.shape()).unwrap())
        .unwrap();
    let x_ttu: f64 = grads
        .get(&x)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .zip(&xa.data)
        .map(|(a, b)| *a as f64 * b)
        .sum();
    assert!(
        (tx_u - x_ttu).abs() < 1e-3 * tx_u.abs().max(1.0),
        "adjoint {tx_u} vs {x_ttu}"
    );
}

#[test]
fn bias_and_pytorch_weight_import() {
    let gpu = gpu();
    // PyTorch [Ci=1, Co=2, 1, 1, 2] → ours [1, 1, 2, 1, 2].
    let torch = [1.0, 2.0, 3.0, 4.0]; // w[0,0,0,0,0]=1, w[0,0,0,0,1]=2, w[0,1,0,0,0]=3, w[0,1,0,0,1]=4
    let ours = Layout::ConvTranspose3d
        .from_pytorch(&[1, 1, 2, 1, 2], &torch)
        .unwrap();
    assert_eq!(ours, vec![1.0, 3.0, 2.0, 4.0]);
    let cfg = ConvTranspose3dConfig {
        kernel: [1, 1, 2],
        stride: [1, 1, 2],
        padding: [0; 3],
        output_padding: [0; 3],
        dilation: [1; 3],
    };
    let x = Tensor::from_slice(&gpu, &[10.0], &[1, 1, 1, 1, 1]).unwrap();
    let w = Tensor::from_slice(&gpu, &ours, &[1, 1, 2, 1, 2]).unwrap();
    let b = Tensor::from_slice(&gpu, &[0.5, -0.5], &[2]).unwrap();
    let y = conv_transpose3d(&x, &w, Some(&b), &cfg).unwrap();
    // y[w=0] = 10·(1, 3) + b, y[w=1] = 10·(2, 4) + b
    assert_eq!(y.to_vec().unwrap(), vec![10.5, 29.5, 20.5, 39.5]);
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(37);
    let cfg = ConvTranspose3dConfig {
        kernel: [2, 3, 1],
        stride: [2, 1, 3],
        padding: [0, 1, 0],
        output_padding: [1, 0, 0],
        dilation: [1, 2, 1],
    };
    let x = Array::new(
        (0..2 * 2 * 3 * 2 * 2)
            .map(|_| rng.range(-1.0, 1.0))
            .collect(),
        &[2, 2, 3, 2, 2],
    );
    let w = Array::new(
        (0..2 * 3 * 2 * 3).map(|_| rng.range(-1.0, 1.0)).collect(),
        &[2, 3, 1, 2, 3],
    );
    let y = refct::conv_transpose3d(&x, &w, &cfg);
    let g: Vec<f64> = (0..y.numel()).map(|_| rng.range(-1.0, 1.0)).collect();
    let (gx, gw) = refct::conv_transpose3d_backward(&x, &w, &cfg, &Array::new(g.clone(), &y.shape));
    let fx = |v: &[f64]| {
        gradcheck::dot(
            &refct::conv_transpose3d(&Array::new(v.to_vec(), &x.shape), &w, &cfg).data,
            &g,
        )
    };
    let fw = |v: &[f64]| {
        gradcheck::dot(
            &refct::conv_transpose3d(&x, &Array::new(v.to_vec(), &w.shape), &cfg).data,
            &g,
        )
    };
    assert_close64(
        "fd x",
        &gx.data,
        &gradcheck::numeric_gradient(fx, &x.data, 1e-6),
        FD_F64,
    );
    assert_close64(
        "fd w",
        &gw.data,
        &gradcheck::numeric_gradient(fw, &w.data, 1e-6),
        FD_F64,
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[1, 2, 2, 2, 4]).unwrap();
    let w = Tensor::zeros(&gpu, &[2, 2, 2, 4, 8]).unwrap();
    let cfg = ConvTranspose3dConfig::up2();
    assert!(
        conv_transpose3d(&Tensor::zeros(&gpu, &[2, 2, 4]).unwrap(), &w, None, &cfg).is_err(),
        "rank"
    );
    assert!(
        conv_transpose3d(
            &x,
            &Tensor::zeros(&gpu, &[2, 2, 2, 3, 8]).unwrap(),
            None,
            &cfg
        )
        .is_err(),
        "Ci mismatch"
    );
    assert!(
        conv_transpose3d(&x, &w, Some(&Tensor::zeros(&gpu, &[7]).unwrap()), &cfg).is_err(),
        "bias"
    );
    let zero = ConvTranspose3dConfig {
        padding: [2; 3],
        ..cfg
    };
    let err = conv_transpose3d(&x, &w, None, &zero)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv_transpose3d") && err.contains("non-empty"),
        "{err}"
    );
}
