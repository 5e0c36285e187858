//! `nn::ConvTranspose3d`: PyTorch weight import (element placement, typed shape errors), default
//! initialisation statistics, named parameters, and forward equal to the functional op and to
//! the CPU reference.

mod common;

use cads::nn::{ConvInit, ConvTranspose3d, Module};
use cads::ops::conv_transpose3d::{conv_transpose3d_with, ConvTransposePath};
use cads::ops::{conv_transpose3d, ConvTranspose3dConfig};
use cads::reference::conv_transpose3d as refct;
use cads::util::{Rng, F32_ACCUM};
use cads::{Error, Tensor};
use common::*;

/// Row-major flat index of `idx` in `shape`.
fn flat(shape: &[usize], idx: &[usize]) -> usize {
    shape.iter().zip(idx).fold(0, |acc, (s, i)| acc * s + i)
}

#[test]
fn import_places_pytorch_elements_at_the_cads_position() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    let cfg = ConvTranspose3dConfig {
        kernel: [2, 3, 1],
        stride: [2, 1, 1],
        padding: [0; 3],
        output_padding: [0; 3],
        dilation: [1; 3],
    };
    let (ci, co) = (3, 5);
    let layer =
        ConvTranspose3d::new(&gpu, &mut rng, ci, co, cfg, true, ConvInit::default()).unwrap();
    let pt_shape = [ci, co, 2, 3, 1];
    assert_eq!(layer.pytorch_weight_shape(), pt_shape);
    // Every PyTorch element holds its own flat index, so a misplaced element is identifiable.
    let pt: Vec<f32> = (0..ci * co * 6).map(|v| v as f32).collect();
    let bias: Vec<f32> = (0..co).map(|v| 100.0 + v as f32).collect();
    layer.import_pytorch(&pt, &pt_shape, Some(&bias)).unwrap();
    let ours = layer.weight.to_vec().unwrap();
    let ours_shape = [2, 3, 1, ci, co];
    // The brief's spot check: PyTorch w[i=2, o=4, a=1, b=2, c=0] → cads w[1, 2, 0, 2, 4].
    assert_eq!(
        ours[flat(&ours_shape, &[1, 2, 0, 2, 4])],
        pt[flat(&pt_shape, &[2, 4, 1, 2, 0])]
    );
    for i in 0..ci {
        for o in 0..co {
            for a in 0..2 {
                for b in 0..3 {
                    assert_eq!(
                        ours[flat(&ours_shape, &[a, b, 0, i, o])],
                        pt[flat(&pt_shape, &[i, o, a, b, 0])],
                        "element (i {i}, o {o}, a {a}, b {b})"
                    );
                }
            }
        }
    }
    assert_eq!(layer.bias.as_ref().unwrap().to_vec().unwrap(), bias);
}

#[test]
fn import_rejects_wrong_shapes_and_bias_and_writes_nothing() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    let layer = ConvTranspose3d::new(
        &gpu,
        &mut rng,
        4,
        8,
        ConvTranspose3dConfig::up2(),
        true,
        ConvInit::default(),
    )
    .unwrap();
    let before = layer.weight.to_vec().unwrap();
    let data = vec![1.0; 4 * 8 * 8];
    // A Conv3d-style [Cout, Cin, k...] shape has the same element count but must be refused.
    let err = layer
        .import_pytorch(&data, &[8, 4, 2, 2, 2], Some(&[0.0; 8]))
        .unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op, .. } if op == "ConvTranspose3d::import_pytorch"),
        "{err}"
    );
    assert!(err.to_string().contains("[4, 8, 2, 2, 2]"), "{err}");
    // Right shape, too few values.
    let err = layer
        .import_pytorch(&data[1..], &[4, 8, 2, 2, 2], Some(&[0.0; 8]))
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // Missing bias, bias of the wrong length.
    assert!(layer.import_pytorch(&data, &[4, 8, 2, 2, 2], None).is_err());
    let err = layer
        .import_pytorch(&data, &[4, 8, 2, 2, 2], Some(&[0.0; 7]))
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert_eq!(
        layer.weight.to_vec().unwrap(),
        before,
        "a failed import wrote"
    );
}

/// (mean, variance, max |v|).
fn stats(v: &[f32]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let max = v.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    (mean, var, max)
}

#[test]
fn default_init_is_pytorchs_kaiming_uniform_with_transposed_fan_in() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    // Cin 16, Cout 32, k 2³: PyTorch fan_in = Cout·8 = 256 → bound 1/16 (Cin·8 = 128 would give
    // 0.088, so the max check below tells the two apart).
    let layer = ConvTranspose3d::new(
        &gpu,
        &mut rng,
        16,
        32,
        ConvTranspose3dConfig::up2(),
        true,
        ConvInit::TorchDefault,
    )
    .unwrap();
    let bound = 1.0 / 256f64.sqrt();
    let w = layer.weight.to_vec().unwrap();
    assert_eq!(w.len(), 16 * 32 * 8);
    let (mean, var, max) = stats(&w);
    assert!(max <= bound, "max |w| {max} > bound {bound}");
    assert!(max > 0.99 * bound, "max |w| {max} far below bound {bound}");
    // U(−b, b): variance b²/3; with n = 4096 its relative standard error is √(0.8/n) ≈ 1.4%.
    let want_var = bound * bound / 3.0;
    assert!(
        (var / want_var - 1.0).abs() < 0.08,
        "variance {var} vs {want_var}"
    );
    // Standard error of the mean: √(var/n) ≈ 5.6e-4.
    assert!(mean.abs() < 4.0 * (want_var / 4096.0).sqrt(), "mean {mean}");
    let b = layer.bias.as_ref().unwrap().to_vec().unwrap();
    assert!(b.iter().all(|v| (v.abs() as f64) <= bound), "{b:?}");
    assert!(b.iter().any(|&v| v != 0.0));

    // Kaiming normal, fan_out = Cin·8 = 128: std √(2/128) = 0.125; zero bias.
    let layer = ConvTranspose3d::new(
        &gpu,
        &mut rng,
        16,
        32,
        ConvTranspose3dConfig::up2(),
        true,
        ConvInit::KaimingNormalFanOut,
    )
    .unwrap();
    let (_, var, _) = stats(&layer.weight.to_vec().unwrap());
    let want_var = 2.0 / 128.0;
    // Normal: relative standard error of the variance √(2/n) ≈ 2.2%.
    assert!(
        (var / want_var - 1.0).abs() < 0.1,
        "variance {var} vs {want_var}"
    );
    assert!(layer
        .bias
        .as_ref()
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn parameters_are_named_weight_and_bias() {
    let gpu = gpu();
    let mut rng = Rng::new(4);
    let cfg = ConvTranspose3dConfig::up2();
    let with = ConvTranspose3d::new(&gpu, &mut rng, 4, 8, cfg, true, ConvInit::default()).unwrap();
    let mut named = Vec::new();
    with.parameters("decoder.up.", &mut named);
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["decoder.up.weight", "decoder.up.bias"]);
    assert_eq!(named[0].1.shape(), [2, 2, 2, 4, 8]);
    assert!(named.iter().all(|(_, t)| t.requires_grad()));
    let without =
        ConvTranspose3d::new(&gpu, &mut rng, 4, 8, cfg, false, ConvInit::default()).unwrap();
    assert_eq!(without.parameter_tensors().len(), 1);
    assert!(ConvTranspose3d::new(&gpu, &mut rng, 0, 8, cfg, false, ConvInit::default()).is_err());
}

/// Layer forward against the functional op (same call, bitwise), the general kernel and the
/// CPU reference plus bias.
fn check_forward(x_shape: [usize; 5], co: usize, cfg: ConvTranspose3dConfig, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let ci = x_shape[4];
    let layer =
        ConvTranspose3d::new(&gpu, &mut rng, ci, co, cfg, true, ConvInit::default()).unwrap();
    let (xa, x) = random_pair(&gpu, &mut rng, &x_shape, -1.0, 1.0);
    let y = layer.forward(&x).unwrap();
    let bias = layer.bias.as_ref().unwrap();
    let op = conv_transpose3d(&x, &layer.weight, Some(bias), &cfg).unwrap();
    assert_eq!(y.shape(), op.shape());
    assert_eq!(y.to_vec().unwrap(), op.to_vec().unwrap(), "layer vs op");
    let general = conv_transpose3d_with(
        &x,
        &layer.weight,
        Some(bias),
        &cfg,
        ConvTransposePath::General,
    )
    .unwrap();
    let general: Vec<f64> = general
        .to_vec()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close(
        "layer vs general kernel",
        &y.to_vec().unwrap(),
        &general,
        F32_ACCUM,
    );
    let w = cads::reference::Array::from_f32(&layer.weight.to_vec().unwrap(), layer.weight.shape());
    let mut want = refct::conv_transpose3d(&xa, &w, &cfg);
    let b = bias.to_vec().unwrap();
    for (i, v) in want.data.iter_mut().enumerate() {
        *v += b[i % co] as f64;
    }
    assert_eq!(y.shape(), want.shape.as_slice());
    assert_close(
        "layer vs reference",
        &y.to_vec().unwrap(),
        &want.data,
        F32_ACCUM,
    );
}

#[test]
fn forward_matches_the_functional_op() {
    // k2s2 with Cin % 4 == 0 and Cout % 8 == 0: the fast path.
    check_forward([2, 3, 2, 5, 8], 16, ConvTranspose3dConfig::up2(), 5);
    // A geometry only the general kernel takes.
    let cfg = ConvTranspose3dConfig {
        kernel: [3, 3, 3],
        stride: [2, 2, 2],
        padding: [1, 1, 1],
        output_padding: [1, 1, 1],
        dilation: [1, 1, 1],
    };
    check_forward([1, 3, 4, 2, 3], 5, cfg, 6);
    // Gradients reach both parameters.
    let gpu = gpu();
    let mut rng = Rng::new(7);
    let layer = ConvTranspose3d::new(
        &gpu,
        &mut rng,
        4,
        8,
        ConvTranspose3dConfig::up2(),
        true,
        ConvInit::default(),
    )
    .unwrap();
    let x =
        Tensor::from_slice(&gpu, &rng.vec_uniform(4 * 27, -1.0, 1.0), &[1, 3, 3, 3, 4]).unwrap();
    let loss = cads::ops::sum_all(&layer.forward(&x).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    for p in layer.parameter_tensors() {
        assert!(grads.get(&p).is_some(), "no gradient for {:?}", p.shape());
    }
    // d(Σy)/db = number of output voxels per channel = 6³.
    let gb = grads
        .get(layer.bias.as_ref().unwrap())
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(gb.iter().all(|&v| (v - 216.0).abs() < 1e-3), "{gb:?}");
}
