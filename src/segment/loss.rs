//! nnU-Net's segmentation loss: cross-entropy + soft Dice over the foreground classes, summed over
//! the deep-supervision outputs with weights halving per level.
//!
//! One output, logits z `[N, D, H, W, K]`, labels y (one class per voxel), q = softmax(z) over K,
//! t = one-hot(y), V = N·D·H·W voxels, s = 1e-5 (nnU-Net's smoothing):
//!
//! ```text
//! CE   = −(1/V) Σ_v log q_v[y_v]
//! Dice_{n,k} = (2·Σ_v q_{n,v,k}·t_{n,v,k} + s) / (Σ_v q_{n,v,k} + Σ_v t_{n,v,k} + s)
//!        (sums over the voxels v of sample n; with batch Dice over all N samples at once)
//! L    = CE + 1 − mean_{n, k ≥ 1} Dice_{n,k}          (background k = 0 left out)
//! ```
//!
//! nnU-Net writes the Dice term as −mean Dice; we add 1 so the loss reads as a distance ≥ 0
//! (same gradient). Deep supervision: output i (0 = full resolution, strides from
//! `PvtUnet::output_strides`) gets weight w_i ∝ 2^−i, the `lowest_off` coarsest outputs weight
//! 0 (nnU-Net: the lowest one), normalised to Σ w_i = 1, and `L_total = Σ_i w_i L_i`. Outputs
//! with weight 0 are not computed at all. Labels of output i are the full-resolution labels
//! sampled at voxel `j·s + ⌊s/2⌋` per axis (nearest, stride s), which is the voxel whose
//! centre is nearest the centre of the s-wide block that output voxel j up-sampled from (ties
//! to the later voxel), as nnU-Net's order-0 down-sampling of the segmentation does.
//!
//! Composed of recorded ops (softmax, the fused cross-entropy, products, sums, divisions), which
//! carry the backward. [`reference_loss`] is its f64 CPU twin, written independently of the ops.

use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

/// Soft Dice smoothing s (nnU-Net's value).
pub const DICE_SMOOTH: f64 = 1e-5;

/// Loss settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SegLossConfig {
    /// Dice pooled over the batch (nnU-Net's "batch Dice") instead of per sample.
    pub batch_dice: bool,
    /// Weight of each output, full resolution first (see [`deep_supervision_weights`]).
    pub weights: Vec<f64>,
    pub smooth: f64,
}

impl SegLossConfig {
    /// nnU-Net's: `outputs` outputs (1: no deep supervision), the coarsest one off.
    pub fn nnunet(outputs: usize, batch_dice: bool) -> Result<SegLossConfig> {
        Ok(SegLossConfig {
            batch_dice,
            weights: deep_supervision_weights(outputs, usize::from(outputs > 1))?,
            smooth: DICE_SMOOTH,
        })
    }
}

/// w_i = 2^−i for i < outputs − lowest_off, 0 for the `lowest_off` coarsest, normalised to sum 1.
pub fn deep_supervision_weights(outputs: usize, lowest_off: usize) -> Result<Vec<f64>> {
    if outputs == 0 || lowest_off >= outputs {
        return Err(Error::invalid(
            "deep_supervision_weights",
            "at least one output and fewer outputs off than outputs",
            format!("{outputs} outputs, {lowest_off} off"),
        ));
    }
    let raw: Vec<f64> = (0..outputs)
        .map(|i| {
            if i < outputs - lowest_off {
                0.5f64.powi(i as i32)
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = raw.iter().sum();
    Ok(raw.into_iter().map(|w| w / total).collect())
}

/// Nearest down-sampling of labels `[N, D, H, W]` by `stride` per axis (each extent a multiple
/// of its stride): output voxel j takes input voxel `j·s + ⌊s/2⌋`.
pub fn downsample_labels(
    labels: &[usize],
    ndhw: [usize; 4],
    stride: [usize; 3],
) -> Result<Vec<usize>> {
    let op = "downsample_labels";
    let [n, d, h, w] = ndhw;
    if labels.len() != n * d * h * w {
        return Err(Error::shape(op, ndhw, labels.len()));
    }
    let dhw = [d, h, w];
    if (0..3).any(|a| stride[a] == 0 || dhw[a] % stride[a] != 0) {
        return Err(Error::invalid(
            op,
            format!("extents {dhw:?} divisible by the stride"),
            format!("stride {stride:?}"),
        ));
    }
    let o = [d / stride[0], h / stride[1], w / stride[2]];
    let mut out = Vec::with_capacity(n * o[0] * o[1] * o[2]);
    for b in 0..n {
        for z in 0..o[0] {
            let zi = z * stride[0] + stride[0] / 2;
            for y in 0..o[1] {
                let yi = y * stride[1] + stride[1] / 2;
                let row = ((b * d + zi) * h + yi) * w;
                for x in 0..o[2] {
                    out.push(labels[row + x * stride[2] + stride[2] / 2]);
                }
            }
        }
    }
    Ok(out)
}

/// One output's recorded pieces of the loss: the cross-entropy and the soft Dice sums per
/// (group, class), group = sample (per-sample Dice) or the whole batch (batch Dice).
pub(crate) struct DiceSums {
    /// CE `[1]`, recorded.
    pub cross_entropy: Tensor,
    /// Σ_v q_v,k·t_v,k `[N, K]` or `[K]`, recorded.
    pub intersection: Tensor,
    /// Σ_v q_v,k `[N, K]` or `[K]`, recorded.
    pub predicted: Tensor,
    /// Σ_v t_v,k (voxel counts per class, counted on the host), same shape, a constant.
    pub target: Vec<f32>,
    pub classes: usize,
}

/// The CE and Dice sums of one output: logits `[N, D, H, W, K]`, labels per voxel.
pub(crate) fn dice_sums(logits: &Tensor, labels: &[usize], batch_dice: bool) -> Result<DiceSums> {
    let op = "segment::output_loss";
    let (n, k) = match *logits.shape() {
        [n, _, _, _, k] if k >= 2 => (n, k),
        _ => {
            return Err(Error::shape(
                op,
                "[N, D, H, W, K] with K >= 2",
                logits.shape(),
            ))
        }
    };
    let voxels = logits.numel() / k;
    if labels.len() != voxels {
        return Err(Error::shape(op, format!("{voxels} labels"), labels.len()));
    }
    let rows = logits.reshape(&[voxels, k])?; // [V, K]
    let cross_entropy = ops::cross_entropy_labels(&rows, labels)?; // [1]
    let l = voxels / n;
    let groups = if batch_dice { 1 } else { n };
    let mut one_hot = vec![0.0f32; voxels * k];
    let mut target = vec![0.0f32; groups * k];
    for (v, &c) in labels.iter().enumerate() {
        one_hot[v * k + c] = 1.0; // c < K: checked by cross_entropy_labels
        let g = if batch_dice { 0 } else { v / l };
        target[g * k + c] += 1.0; // exact: integers below 2^24 per (group, class)
    }
    let q = ops::softmax(&rows)?.reshape(&[n, l, k])?; // [N, L, K]
    let t = Tensor::from_slice(logits.gpu(), &one_hot, &[n, l, k])?;
    let axes: &[isize] = if batch_dice { &[0, 1] } else { &[1] };
    Ok(DiceSums {
        cross_entropy,
        intersection: ops::sum(&ops::mul(&q, &t)?, axes, false)?, // [N, K] or [K]
        predicted: ops::sum(&q, axes, false)?,
        target,
        classes: k,
    })
}

/// CE + (1 − mean foreground Dice) of one output: logits `[N, D, H, W, K]`, labels per voxel.
pub fn output_loss(
    logits: &Tensor,
    labels: &[usize],
    batch_dice: bool,
    smooth: f64,
) -> Result<Tensor> {
    let sums = dice_sums(logits, labels, batch_dice)?;
    let k = sums.classes;
    let target = Tensor::from_slice(logits.gpu(), &sums.target, sums.predicted.shape())?;
    let union = ops::add(&sums.predicted, &target)?;
    let s = smooth as f32;
    let dice = ops::div(
        &ops::add_scalar(&ops::scale(&sums.intersection, 2.0)?, s)?,
        &ops::add_scalar(&union, s)?,
    )?;
    let foreground = dice.slice(-1, 1, k - 1)?; // [N, K−1] or [K−1]
    let dice_loss = ops::add_scalar(&ops::scale(&ops::mean_all(&foreground)?, -1.0)?, 1.0)?;
    ops::add(&sums.cross_entropy, &dice_loss)
}

/// The outputs with weight > 0, each with its weight and the full-resolution `labels`
/// `[N, D, H, W]` down-sampled to its grid.
pub(crate) fn weighted_outputs<'a>(
    outputs: &'a [Tensor],
    labels: &[usize],
    ndhw: [usize; 4],
    cfg: &SegLossConfig,
) -> Result<Vec<(f64, &'a Tensor, Vec<usize>)>> {
    let op = "segment::seg_loss";
    if outputs.len() != cfg.weights.len() || outputs.is_empty() {
        return Err(Error::invalid(
            op,
            format!("{} outputs (one per weight)", cfg.weights.len()),
            outputs.len(),
        ));
    }
    let mut weighted = Vec::with_capacity(outputs.len());
    for (out, &w) in outputs.iter().zip(&cfg.weights) {
        if w == 0.0 {
            continue;
        }
        let s = out.shape();
        if s.len() != 5
            || s[0] != ndhw[0]
            || (1..4).any(|a| s[a] == 0 || !ndhw[a].is_multiple_of(s[a]))
        {
            return Err(Error::shape(
                op,
                format!("[{}, D/s, H/s, W/s, K]", ndhw[0]),
                s,
            ));
        }
        let stride = [ndhw[1] / s[1], ndhw[2] / s[2], ndhw[3] / s[3]];
        let lab = if stride == [1, 1, 1] {
            labels.to_vec()
        } else {
            downsample_labels(labels, ndhw, stride)?
        };
        weighted.push((w, out, lab));
    }
    if weighted.is_empty() {
        return Err(Error::invalid(
            op,
            "at least one output with weight > 0",
            "none",
        ));
    }
    Ok(weighted)
}

/// The deep-supervised loss: `Σ_i w_i · output_loss(outputs[i], labels_i)` with labels_i the
/// full-resolution `labels` `[N, D, H, W]` down-sampled to output i's grid. Outputs whose weight
/// is 0 are skipped.
pub fn seg_loss(
    outputs: &[Tensor],
    labels: &[usize],
    ndhw: [usize; 4],
    cfg: &SegLossConfig,
) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (w, out, lab) in weighted_outputs(outputs, labels, ndhw, cfg)? {
        let term = ops::scale(
            &output_loss(out, &lab, cfg.batch_dice, cfg.smooth)?,
            w as f32,
        )?;
        total = Some(match total {
            None => term,
            Some(t) => ops::add(&t, &term)?,
        });
    }
    total.ok_or_else(|| {
        Error::invalid(
            "segment::seg_loss",
            "at least one output with weight > 0",
            "none",
        )
    })
}

/// One output for [`reference_loss`]: logits `[N, D, H, W, K]` row-major, and its shape.
pub struct ReferenceOutput<'a> {
    pub logits: &'a [f64],
    pub shape: [usize; 5],
}

/// f64 CPU twin of [`seg_loss`] (shares no code with the ops; the labels are down-sampled
/// with [`downsample_labels`], itself checked by hand in the tests).
pub fn reference_loss(
    outputs: &[ReferenceOutput],
    labels: &[usize],
    ndhw: [usize; 4],
    cfg: &SegLossConfig,
) -> Result<f64> {
    let mut total = 0.0;
    for (out, &w) in outputs.iter().zip(&cfg.weights) {
        if w == 0.0 {
            continue;
        }
        let [n, d, h, wd, k] = out.shape;
        let stride = [ndhw[1] / d, ndhw[2] / h, ndhw[3] / wd];
        let lab = downsample_labels(labels, ndhw, stride)?;
        let l = d * h * wd;
        let mut ce = 0.0;
        // Per (group, class) sums, group = sample (or one group with batch Dice).
        let groups = if cfg.batch_dice { 1 } else { n };
        let mut tp = vec![0.0; groups * k];
        let mut qs = vec![0.0; groups * k];
        let mut ts = vec![0.0; groups * k];
        for b in 0..n {
            let g = if cfg.batch_dice { 0 } else { b };
            for v in 0..l {
                let row = &out.logits[(b * l + v) * k..(b * l + v + 1) * k];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
                let y = lab[b * l + v];
                ce -= row[y] - m - z.ln();
                for c in 0..k {
                    let q = (row[c] - m).exp() / z;
                    let t = if c == y { 1.0 } else { 0.0 };
                    tp[g * k + c] += q * t;
                    qs[g * k + c] += q;
                    ts[g * k + c] += t;
                }
            }
        }
        ce /= (n * l) as f64;
        let mut dice = 0.0;
        for g in 0..groups {
            for c in 1..k {
                let i = g * k + c;
                dice += (2.0 * tp[i] + cfg.smooth) / (qs[i] + ts[i] + cfg.smooth);
            }
        }
        dice /= (groups * (k - 1)) as f64;
        total += w * (ce + 1.0 - dice);
    }
    Ok(total)
}
