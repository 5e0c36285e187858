//! Conv weights through `cads::nn`: a conv with PyTorch-layout weights imported equals the conv
//! evaluated from that layout on the CPU; the `Conv3d` / `Conv2d` layers initialise like torch,
//! import PyTorch weights and train their parameters. The conv ops themselves are in
//! tests/conv3d.rs.

mod common;

use cads::ops::{conv3d, Conv2dConfig, Conv3dConfig};
use cads::reference::{conv3d as rc, Array};
use cads::util::{Rng, F32_ACCUM};
use cads::Tensor;
use common::*;

#[test]
fn pytorch_weight_import_gives_the_same_conv() {
    // A conv with PyTorch-layout weights, evaluated directly from that layout on the CPU.
    let gpu = gpu();
    let mut rng = Rng::new(47);
    let (cout, cin, k) = (4, 3, [2, 3, 1]);
    let pt = rng.vec_uniform(cout * cin * 6, -1.0, 1.0);
    let shape = vec![k[0], k[1], k[2], cin, cout];
    let layout = cads::nn::Layout::Conv3d;
    assert_eq!(
        layout.pytorch_shape(&shape).unwrap(),
        vec![cout, cin, 2, 3, 1]
    );
    let ours = layout.from_pytorch(&shape, &pt).unwrap();
    let (x, tx) = random_pair(&gpu, &mut rng, &[1, 3, 4, 2, cin], -1.0, 1.0);
    let y = conv3d(
        &tx,
        &Tensor::from_slice(&gpu, &ours, &shape).unwrap(),
        None,
        &Conv3dConfig::new(k),
    )
    .unwrap();
    let yv = y.to_vec().unwrap();
    // y[0, od, oh, ow, co] = Σ x[od+a, oh+b, ow, ci] · pt[co, ci, a, b, 0]
    for od in 0..2 {
        for oh in 0..2 {
            for ow in 0..2 {
                for co in 0..cout {
                    let mut s = 0.0;
                    for ci in 0..cin {
                        for a in 0..2 {
                            for b in 0..3 {
                                s += x.data[(((od + a) * 4 + oh + b) * 2 + ow) * cin + ci]
                                    * pt[((co * cin + ci) * 2 + a) * 3 + b] as f64;
                            }
                        }
                    }
                    let got = yv[((od * 2 + oh) * 2 + ow) * cout + co] as f64;
                    assert!(
                        (got - s).abs() < 1e-4,
                        "({od},{oh},{ow},{co}): {got} vs {s}"
                    );
                }
            }
        }
    }
}

#[test]
fn nn_layers_init_import_and_train_their_parameters() {
    use cads::nn::{Conv2d, Conv3d, ConvInit, Module};
    let gpu = gpu();
    let mut rng = Rng::new(48);
    // Torch default: |w| <= 1/sqrt(fan_in), fan_in = 4·27; bias the same bound.
    let layer = Conv3d::new(
        &gpu,
        &mut rng,
        4,
        6,
        Conv3dConfig::cube(3, 1, 1),
        true,
        ConvInit::TorchDefault,
    )
    .unwrap();
    let bound = 1.0 / (4.0f32 * 27.0).sqrt();
    let w = layer.weight.to_vec().unwrap();
    assert_eq!(layer.weight.shape(), &[3, 3, 3, 4, 6]);
    assert!(
        w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| v.abs() > 0.5 * bound),
        "weights outside U(±{bound})"
    );
    assert!(layer
        .bias
        .as_ref()
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|v| v.abs() <= bound));
    // Fan-out normal: sample std close to sqrt(2 / (Cout · 27)).
    let big = Conv3d::new(
        &gpu,
        &mut rng,
        16,
        32,
        Conv3dConfig::cube(3, 1, 1),
        false,
        ConvInit::KaimingNormalFanOut,
    )
    .unwrap();
    let v = big.weight.to_vec().unwrap();
    let std = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let want = (2.0 / (32.0 * 27.0f64)).sqrt();
    assert!((std / want - 1.0).abs() < 0.05, "std {std} vs {want}");
    assert!(big.bias.is_none() && big.parameter_tensors().len() == 1);
    // PyTorch import then forward equals the reference with the converted weight; grads reach both.
    let pt = rng.vec_uniform(6 * 4 * 27, -0.5, 0.5);
    let pb = rng.vec_uniform(6, -0.5, 0.5);
    layer.import_pytorch(&pt, Some(&pb)).unwrap();
    let ours = rc::import_pytorch_weight(
        &pt.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        6,
        4,
        [3, 3, 3],
    );
    let (x, tx) = random_pair(&gpu, &mut rng, &[2, 3, 4, 5, 4], -1.0, 1.0);
    let y = layer.forward(&tx).unwrap();
    let want = rc::conv3d(
        &x,
        &Array::new(ours, &[3, 3, 3, 4, 6]),
        Some(&Array::from_f32(&pb, &[6])),
        &Conv3dConfig::cube(3, 1, 1),
    );
    assert_close(
        "Conv3d layer forward",
        &y.to_vec().unwrap(),
        &want.data,
        F32_ACCUM,
    );
    let (_, tg) = random_pair(&gpu, &mut rng, y.shape(), -1.0, 1.0);
    let grads = y.backward_with(&tg).unwrap();
    for p in layer.parameter_tensors() {
        assert_eq!(grads.get(&p).unwrap().shape(), p.shape());
    }
    // Conv2d: import + forward against the 3D reference at depth 1.
    let l2 = Conv2d::new(
        &gpu,
        &mut rng,
        3,
        8,
        Conv2dConfig::square(3, 2, 1),
        true,
        ConvInit::TorchDefault,
    )
    .unwrap();
    assert_eq!(l2.weight.shape(), &[3, 3, 3, 8]);
    let pt2 = rng.vec_uniform(8 * 3 * 9, -0.5, 0.5);
    l2.import_pytorch(&pt2, Some(&[0.0; 8])).unwrap();
    let ours2 = rc::import_pytorch_weight(
        &pt2.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        8,
        3,
        [1, 3, 3],
    );
    let (x2, tx2) = random_pair(&gpu, &mut rng, &[1, 7, 6, 3], -1.0, 1.0);
    let y2 = l2.forward(&tx2).unwrap();
    let want2 = rc::conv3d(
        &Array::new(x2.data, &[1, 1, 7, 6, 3]),
        &Array::new(ours2, &[1, 3, 3, 3, 8]),
        None,
        &Conv2dConfig::square(3, 2, 1).to_3d(),
    );
    assert_close(
        "Conv2d layer forward",
        &y2.to_vec().unwrap(),
        &want2.data,
        F32_ACCUM,
    );
    assert!(l2.import_pytorch(&pt2, None).is_err());
}
