//! The segmentation loss: deep-supervision weights and label down-sampling by hand, the GPU
//! loss against its f64 CPU twin (per-sample and batch Dice), a hand-computed value, and a
//! finite-difference gradient check of the whole composition with a random upstream gradient.

mod common;

use cads::segment::loss::{
    deep_supervision_weights, downsample_labels, reference_loss, seg_loss, ReferenceOutput,
    SegLossConfig,
};
use cads::util::{Rng, Tolerance, F32_ACCUM};

/// The gradients are O(1/V) = O(1e-2): an absolute floor well under that, f32 rounding above.
const GRAD: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 2e-3,
};
use cads::Tensor;

#[test]
fn weights_halve_per_level_and_the_lowest_is_off() {
    let w = deep_supervision_weights(5, 1).unwrap();
    // 1, 1/2, 1/4, 1/8, 0 over 15/8.
    let want = [8.0 / 15.0, 4.0 / 15.0, 2.0 / 15.0, 1.0 / 15.0, 0.0];
    for (a, b) in w.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{w:?}");
    }
    assert_eq!(deep_supervision_weights(1, 0).unwrap(), vec![1.0]);
    assert!(deep_supervision_weights(3, 3).is_err());
}

#[test]
fn labels_downsample_to_the_voxel_past_each_block_centre() {
    // [1, 2, 4, 4] labels = their flat index; stride (2, 2, 2) → [1, 1, 2, 2] reading
    // (z, y, x) = (1, 1 + 2j, 1 + 2i).
    let labels: Vec<usize> = (0..32).collect();
    let out = downsample_labels(&labels, [1, 2, 4, 4], [2, 2, 2]).unwrap();
    assert_eq!(out, vec![16 + 5, 16 + 7, 16 + 13, 16 + 15]);
    // Stride (1, 2, 2) keeps D.
    let out = downsample_labels(&labels, [1, 2, 4, 4], [1, 2, 2]).unwrap();
    assert_eq!(out, vec![5, 7, 13, 15, 21, 23, 29, 31]);
    assert!(downsample_labels(&labels, [1, 2, 4, 4], [1, 3, 2]).is_err());
}

/// Two outputs of a [2, 2, 4, 4] batch with K = 3: full resolution and stride (1, 2, 2).
fn case(seed: u64) -> (Vec<Vec<f32>>, Vec<[usize; 5]>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let shapes = vec![[2, 2, 4, 4, 3], [2, 2, 2, 2, 3]];
    let logits = shapes
        .iter()
        .map(|s| rng.vec_uniform(s.iter().product(), -2.0, 2.0))
        .collect();
    // Class 2 absent from sample 1 (an empty foreground class in one sample).
    let labels = (0..64)
        .map(|i| {
            let c = rng.below(3);
            if i >= 32 && c == 2 {
                1
            } else {
                c
            }
        })
        .collect();
    (logits, shapes, labels)
}

fn gpu_loss(
    gpu: &cads::Gpu,
    logits: &[Vec<f32>],
    shapes: &[[usize; 5]],
    labels: &[usize],
    cfg: &SegLossConfig,
) -> (f32, Vec<Vec<f32>>) {
    let params: Vec<Tensor> = logits
        .iter()
        .zip(shapes)
        .map(|(l, s)| Tensor::parameter(gpu, l, s).unwrap())
        .collect();
    let loss = seg_loss(&params, labels, [2, 2, 4, 4], cfg).unwrap();
    let grads = loss.backward().unwrap();
    let g = params
        .iter()
        .map(|p| match grads.get(p) {
            Some(g) => g.to_vec().unwrap(),
            None => vec![0.0; p.numel()],
        })
        .collect();
    (loss.to_scalar().unwrap(), g)
}

fn cpu_loss(
    logits: &[Vec<f64>],
    shapes: &[[usize; 5]],
    labels: &[usize],
    cfg: &SegLossConfig,
) -> f64 {
    let outs: Vec<ReferenceOutput> = logits
        .iter()
        .zip(shapes)
        .map(|(l, &shape)| ReferenceOutput { logits: l, shape })
        .collect();
    reference_loss(&outs, labels, [2, 2, 4, 4], cfg).unwrap()
}

#[test]
fn gpu_loss_matches_the_f64_twin_and_its_finite_differences() {
    let gpu = common::gpu();
    for batch_dice in [false, true] {
        let (logits, shapes, labels) = case(11);
        let cfg = SegLossConfig {
            batch_dice,
            weights: vec![2.0 / 3.0, 1.0 / 3.0],
            smooth: 1e-5,
        };
        let (value, grads) = gpu_loss(&gpu, &logits, &shapes, &labels, &cfg);
        let l64: Vec<Vec<f64>> = logits
            .iter()
            .map(|l| l.iter().map(|&v| v as f64).collect())
            .collect();
        let want = cpu_loss(&l64, &shapes, &labels, &cfg);
        common::assert_close("loss", &[value], &[want], F32_ACCUM);
        // Central differences of the f64 twin, h = 1e-5, on every logit of both outputs.
        let h = 1e-5;
        for (o, g) in grads.iter().enumerate() {
            let mut fd = Vec::with_capacity(g.len());
            for i in 0..g.len() {
                let mut plus = l64.clone();
                plus[o][i] += h;
                let mut minus = l64.clone();
                minus[o][i] -= h;
                fd.push(
                    (cpu_loss(&plus, &shapes, &labels, &cfg)
                        - cpu_loss(&minus, &shapes, &labels, &cfg))
                        / (2.0 * h),
                );
            }
            common::assert_close(
                &format!("d loss / d output {o} (batch Dice {batch_dice})"),
                g,
                &fd,
                GRAD,
            );
        }
    }
}

#[test]
fn a_random_upstream_gradient_scales_the_backward() {
    // L' = g · L with a random g: the gradient must be g times the plain one (the composition
    // does not assume a unit upstream gradient).
    let gpu = common::gpu();
    let (logits, shapes, labels) = case(5);
    let cfg = SegLossConfig::nnunet(2, false).unwrap();
    assert_eq!(cfg.weights, vec![1.0, 0.0]);
    let (_, plain) = gpu_loss(&gpu, &logits, &shapes, &labels, &cfg);
    let p = Tensor::parameter(&gpu, &logits[0], &shapes[0]).unwrap();
    let q = Tensor::parameter(&gpu, &logits[1], &shapes[1]).unwrap();
    let loss = seg_loss(&[p.clone(), q.clone()], &labels, [2, 2, 4, 4], &cfg).unwrap();
    let g = 0.37f32;
    let grads = loss
        .backward_with(&Tensor::from_slice(&gpu, &[g], &[1]).unwrap())
        .unwrap();
    let want: Vec<f64> = plain[0].iter().map(|&v| (v * g) as f64).collect();
    common::assert_close(
        "g · dL",
        &grads.get(&p).unwrap().to_vec().unwrap(),
        &want,
        F32_ACCUM,
    );
    // The weight-0 output is not computed at all.
    assert!(grads.get(&q).is_none());
}

#[test]
fn a_hand_computed_case() {
    // One sample, 2 voxels, K = 2, logits 0 everywhere: q = 1/2 each. Labels (0, 1).
    // CE = ln 2. Foreground Dice = (2·½ + s) / (1 + 1 + s) = (1 + s) / (2 + s).
    let gpu = common::gpu();
    let logits = Tensor::parameter(&gpu, &[0.0; 4], &[1, 1, 1, 2, 2]).unwrap();
    let cfg = SegLossConfig::nnunet(1, false).unwrap();
    let loss = seg_loss(&[logits], &[0, 1], [1, 1, 1, 2], &cfg).unwrap();
    let s = 1e-5;
    let want = 2f64.ln() + 1.0 - (1.0 + s) / (2.0 + s);
    common::assert_close("loss", &[loss.to_scalar().unwrap()], &[want], F32_ACCUM);
}
