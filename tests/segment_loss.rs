//! The segmentation loss: deep-supervision weights and label down-sampling by hand, the GPU
//! loss against its f64 CPU twin (per-sample and batch Dice), a hand-computed value, and a
//! finite-difference gradient check of the whole composition with a random upstream gradient.
//! Batch Dice over ranks (`segment::global_batch_dice`): the batch split into two shards with
//! their sums added by hand, against the f64 twin of the whole batch and its finite differences.

mod common;

use cads::segment::global_batch_dice::{seg_loss_over_ranks, RankDiceSums};
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

/// The f64 twin's loss of the whole batch and its central differences (h = 1e-5) per logit.
fn reference_and_gradient(
    logits: &[Vec<f32>],
    shapes: &[[usize; 5]],
    labels: &[usize],
    cfg: &SegLossConfig,
) -> (f64, Vec<Vec<f64>>) {
    let l64: Vec<Vec<f64>> = logits
        .iter()
        .map(|l| l.iter().map(|&v| v as f64).collect())
        .collect();
    let h = 1e-5;
    let fd = l64
        .iter()
        .enumerate()
        .map(|(o, l)| {
            (0..l.len())
                .map(|i| {
                    let mut plus = l64.clone();
                    plus[o][i] += h;
                    let mut minus = l64.clone();
                    minus[o][i] -= h;
                    (cpu_loss(&plus, shapes, labels, cfg) - cpu_loss(&minus, shapes, labels, cfg))
                        / (2.0 * h)
                })
                .collect()
        })
        .collect();
    (cpu_loss(&l64, shapes, labels, cfg), fd)
}

/// Sample `r` of the two of `case`: its logits per output and its labels.
fn shard(logits: &[Vec<f32>], labels: &[usize], r: usize) -> (Vec<Vec<f32>>, Vec<usize>) {
    let part = |v: &[f32]| v[r * v.len() / 2..(r + 1) * v.len() / 2].to_vec();
    (
        logits.iter().map(|l| part(l)).collect(),
        labels[r * 32..(r + 1) * 32].to_vec(),
    )
}

/// Per output, the gradient of shard 0's logits followed by shard 1's, each halved (what the
/// gradient all-reduce's average makes of the two ranks' gradients).
fn averaged(grads: &[Vec<Vec<f32>>; 2]) -> Vec<Vec<f32>> {
    (0..grads[0].len())
        .map(|o| {
            grads[0][o]
                .iter()
                .chain(&grads[1][o])
                .map(|g| g / 2.0)
                .collect()
        })
        .collect()
}

#[test]
fn batch_dice_over_two_ranks_is_the_whole_batch_loss_and_gradient() {
    let gpu = common::gpu();
    let (logits, shapes, labels) = case(11);
    let cfg = SegLossConfig {
        batch_dice: true,
        weights: vec![2.0 / 3.0, 1.0 / 3.0],
        smooth: 1e-5,
    };
    let (want_loss, want_grad) = reference_and_gradient(&logits, &shapes, &labels, &cfg);
    let shard_shapes: Vec<[usize; 5]> = shapes
        .iter()
        .map(|&[_, d, h, w, k]| [1, d, h, w, k])
        .collect();
    let upload = |l: &[Vec<f32>]| -> Vec<Tensor> {
        l.iter()
            .zip(&shard_shapes)
            .map(|(l, s)| Tensor::parameter(&gpu, l, s).unwrap())
            .collect()
    };
    let grads_of = |params: &[Tensor], loss: &Tensor| -> Vec<Vec<f32>> {
        let g = loss.backward().unwrap();
        params
            .iter()
            .map(|p| g.get(p).unwrap().to_vec().unwrap())
            .collect()
    };

    // Each rank's sums, added in rank order as the all-reduce does.
    let shards: Vec<_> = (0..2).map(|r| shard(&logits, &labels, r)).collect();
    let params: Vec<Vec<Tensor>> = shards.iter().map(|(l, _)| upload(l)).collect();
    let ranks: Vec<RankDiceSums> = (0..2)
        .map(|r| RankDiceSums::new(&params[r], &shards[r].1, [1, 2, 4, 4], &cfg).unwrap())
        .collect();
    let global: Vec<f32> = ranks[0]
        .local_sums()
        .iter()
        .zip(ranks[1].local_sums())
        .map(|(a, b)| a + b)
        .collect();
    let mut values = Vec::new();
    let mut grads: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
    for r in 0..2 {
        let loss = ranks[r].loss(&global, 2, cfg.smooth).unwrap();
        values.push(loss.to_scalar().unwrap());
        grads[r] = grads_of(&params[r], &loss);
    }
    // The mean of the ranks' values is the whole batch's loss; the averaged gradients its
    // gradient.
    common::assert_close(
        "mean of the ranks' losses",
        &[(values[0] + values[1]) / 2.0],
        &[want_loss],
        F32_ACCUM,
    );
    let got = averaged(&grads);
    for o in 0..2 {
        common::assert_close(
            &format!("averaged d loss / d output {o}"),
            &got[o],
            &want_grad[o],
            GRAD,
        );
    }

    // The same through seg_loss_over_ranks with the sum handed in.
    let other = ranks[1].local_sums().to_vec();
    let loss = seg_loss_over_ranks(&params[0], &shards[0].1, [1, 2, 4, 4], &cfg, 2, |v| {
        v.iter_mut().zip(&other).for_each(|(a, b)| *a += b);
        Ok(())
    })
    .unwrap();
    assert_eq!(loss.to_scalar().unwrap(), values[0]);

    // What this replaces would fail the check: each rank's own batch Dice, gradients averaged.
    let naive: [Vec<Vec<f32>>; 2] = [0, 1].map(|r| {
        let p = upload(&shards[r].0);
        let loss = seg_loss(&p, &shards[r].1, [1, 2, 4, 4], &cfg).unwrap();
        grads_of(&p, &loss)
    });
    let naive = averaged(&naive);
    let off = (0..2).any(|o| {
        let want: Vec<f64> = want_grad[o].clone();
        let got: Vec<f64> = naive[o].iter().map(|&v| v as f64).collect();
        cads::util::compare("naive", &got, &want, GRAD).is_err()
    });
    assert!(
        off,
        "the rank-local batch Dice matched too: the case cannot tell them apart"
    );
}

#[test]
fn batch_dice_over_one_rank_is_seg_loss_and_bad_sums_are_refused() {
    let gpu = common::gpu();
    let (logits, shapes, labels) = case(7);
    let cfg = SegLossConfig {
        batch_dice: true,
        weights: vec![2.0 / 3.0, 1.0 / 3.0],
        smooth: 1e-5,
    };
    let (value, grads) = gpu_loss(&gpu, &logits, &shapes, &labels, &cfg);
    let params: Vec<Tensor> = logits
        .iter()
        .zip(&shapes)
        .map(|(l, s)| Tensor::parameter(&gpu, l, s).unwrap())
        .collect();
    let loss = seg_loss_over_ranks(&params, &labels, [2, 2, 4, 4], &cfg, 1, |_| Ok(())).unwrap();
    common::assert_close(
        "one rank",
        &[loss.to_scalar().unwrap()],
        &[value as f64],
        F32_ACCUM,
    );
    let g = loss.backward().unwrap();
    for (o, p) in params.iter().enumerate() {
        let want: Vec<f64> = grads[o].iter().map(|&v| v as f64).collect();
        common::assert_close(
            &format!("one rank d loss / d output {o}"),
            &g.get(p).unwrap().to_vec().unwrap(),
            &want,
            GRAD,
        );
    }

    let rank = RankDiceSums::new(&params, &labels, [2, 2, 4, 4], &cfg).unwrap();
    // Per output: K intersection, K predicted, K target sums (T = the voxel counts).
    let sums = rank.local_sums();
    assert_eq!(sums.len(), 2 * 3 * 3);
    let counts = (0..3).map(|c| labels.iter().filter(|&&l| l == c).count() as f32);
    assert!(sums[6..9].iter().copied().eq(counts));
    for (global, ranks) in [
        (vec![0.0; 5], 2),
        (sums.to_vec(), 0),
        (vec![f32::NAN; 18], 2),
    ] {
        let e = rank
            .loss(&global, ranks, cfg.smooth)
            .unwrap_err()
            .to_string();
        assert!(e.contains("RankDiceSums::loss"), "{e}");
    }
    let per_sample = SegLossConfig {
        batch_dice: false,
        ..cfg
    };
    let e = RankDiceSums::new(&params, &labels, [2, 2, 4, 4], &per_sample)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("batch Dice"), "{e}");
}
