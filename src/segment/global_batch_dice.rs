//! nnU-Net's batch Dice when the batch is split over data-parallel ranks (`crate::dist`).
//!
//! Batch Dice is a ratio of sums over the whole batch, so the ranks' own Dice values cannot be
//! averaged: per class the sums must be global. Rank r holds the voxels V_r of the global batch
//! (equal shards); q = softmax of the logits, t = one-hot labels, s = the smoothing, class k:
//!
//! ```text
//!   I_k = Σ_r I_r,k   I_r,k = Σ_{v ∈ V_r} q_v,k·t_v,k     (intersection)
//!   P_k = Σ_r P_r,k   P_r,k = Σ_{v ∈ V_r} q_v,k           (predicted)
//!   T_k = Σ_r T_r,k   T_r,k = Σ_{v ∈ V_r} t_v,k           (target voxels, counted on the host)
//!   Dice_k = (2·I_k + s) / (P_k + T_k + s)
//!   L = CE + L_Dice,  L_Dice = 1 − (1/(K−1)) Σ_{k≥1} Dice_k,  CE = (1/N) Σ_r CE_r
//! ```
//!
//! (CE is a voxel mean, so with equal shards the mean of the ranks' CE_r.) Given the global sums
//! the gradient is local: for a voxel v of rank r,
//!
//! ```text
//!   ∂Dice_k/∂q_v,k = α_k·t_v,k − β_k,   α_k = 2/(P_k + T_k + s),   β_k = Dice_k/(P_k + T_k + s)
//! ```
//!
//! which is the gradient of the rank-local linear function S_r = Σ_{k≥1} α_k·I_r,k − β_k·P_r,k
//! with α, β held constant. So rank r backpropagates
//!
//! ```text
//!   ℓ_r = CE_r + L_Dice − (N/(K−1)) · Σ_{k≥1} [α_k·(I_r,k − I°_r,k) − β_k·(P_r,k − P°_r,k)]
//! ```
//!
//! with I°, P° the sums as read back (constants). The bracket is exactly 0 in value (x − x of the
//! same bits), so ℓ_r reads CE_r + L_Dice and the mean over the ranks is the global loss. Its
//! gradient is ∇CE_r − (N/(K−1))·∇S_r, and the gradient all-reduce averages:
//!
//! ```text
//!   (1/N) Σ_r ∇ℓ_r = ∇CE − (1/(K−1)) Σ_r ∇S_r = ∇CE + ∇L_Dice
//! ```
//!
//! (∇S_r is non-zero on rank r's voxels only, and there it is ∇Σ_k Dice_k): the one-device
//! gradient of the whole batch. The factor N undoes the average's 1/N for the Dice term, whose
//! per-rank gradients touch disjoint voxels and must add, where the CE's (each a mean over its
//! shard) must average.
//!
//! Deep supervision weights each output's ℓ_r as `segment::loss` weights its loss. Per step: one
//! device read of every weighted output's (I_r, P_r) and one all-reduce of 3·K floats per
//! weighted output. [`RankDiceSums`] splits the two halves so that a test can stand in for the
//! all-reduce.

use super::loss::{dice_sums, weighted_outputs, SegLossConfig};
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

/// One weighted output of a rank.
struct Term {
    weight: f64,
    /// CE_r `[1]`, recorded.
    cross_entropy: Tensor,
    /// (I_r ; P_r) `[2, K]`, recorded.
    sums: Tensor,
    classes: usize,
}

/// A rank's batch Dice loss before its sums are made global: the recorded pieces and the
/// rank's sums on the host.
pub struct RankDiceSums {
    terms: Vec<Term>,
    /// Per weighted output, in order: I_r (K), P_r (K), T_r (K).
    local: Vec<f32>,
}

impl RankDiceSums {
    /// The rank's pieces of the deep-supervised loss of its shard: `outputs` and `labels`
    /// `[n, D, H, W]` as `seg_loss` takes them (n = this rank's samples); `cfg.batch_dice`
    /// must be set (per-sample Dice is a mean over samples and needs no global sums).
    pub fn new(
        outputs: &[Tensor],
        labels: &[usize],
        ndhw: [usize; 4],
        cfg: &SegLossConfig,
    ) -> Result<RankDiceSums> {
        let op = "segment::RankDiceSums";
        if !cfg.batch_dice {
            return Err(Error::invalid(
                op,
                "a batch Dice loss (per-sample Dice needs no global sums: use seg_loss)",
                "batch_dice = false",
            ));
        }
        let mut terms = Vec::new();
        let mut targets = Vec::new();
        for (weight, out, lab) in weighted_outputs(outputs, labels, ndhw, cfg)? {
            let d = dice_sums(out, &lab, true)?;
            let k = d.classes;
            let sums = Tensor::concat(
                &[
                    &d.intersection.reshape(&[1, k])?,
                    &d.predicted.reshape(&[1, k])?,
                ],
                0,
            )?; // [2, K]
            terms.push(Term {
                weight,
                cross_entropy: d.cross_entropy,
                sums,
                classes: k,
            });
            targets.push(d.target);
        }
        // One device read for every output's (I_r ; P_r).
        let gpu = outputs[0].gpu().clone();
        let read = gpu.no_grad(|| -> Result<Vec<f32>> {
            let flat = terms
                .iter()
                .map(|t| t.sums.detach().reshape(&[2 * t.classes]))
                .collect::<Result<Vec<Tensor>>>()?;
            Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)?.to_vec()
        })?;
        let mut local = Vec::with_capacity(read.len() * 3 / 2);
        let mut at = 0;
        for (term, target) in terms.iter().zip(&targets) {
            let k = term.classes;
            local.extend_from_slice(&read[at..at + 2 * k]);
            local.extend_from_slice(target);
            at += 2 * k;
        }
        Ok(RankDiceSums { terms, local })
    }

    /// This rank's sums, to be summed over the ranks: per weighted output I_r, P_r, T_r (K
    /// each).
    pub fn local_sums(&self) -> &[f32] {
        &self.local
    }

    /// ℓ_r (module docs) from the sums over all `ranks` ranks (`global`, laid out as
    /// [`RankDiceSums::local_sums`]), summed over the weighted outputs with their weights.
    /// Backward from it, then average the gradients over the ranks.
    pub fn loss(&self, global: &[f32], ranks: usize, smooth: f64) -> Result<Tensor> {
        let op = "segment::RankDiceSums::loss";
        if global.len() != self.local.len() || ranks == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "{} global sums (laid out as the local ones) and at least one rank",
                    self.local.len()
                ),
                format!("{} sums, {ranks} ranks", global.len()),
            ));
        }
        if global.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                op,
                "finite global Dice sums",
                "a non-finite sum",
            ));
        }
        let mut total: Option<Tensor> = None;
        let mut at = 0;
        for term in &self.terms {
            let k = term.classes;
            let g = &global[at..at + 3 * k];
            let (intersection, predicted, target) = (&g[..k], &g[k..2 * k], &g[2 * k..]);
            let read = &self.local[at..at + 2 * k];
            at += 3 * k;
            // Host f64: Dice_k, α_k, β_k of the global sums; row 0 of `coefficients` multiplies
            // I_r − I°_r, row 1 multiplies P_r − P°_r (background k = 0 left out).
            let fg = (k - 1) as f64;
            let scale = ranks as f64 / fg;
            let mut dice_sum = 0.0;
            let mut coefficients = vec![0.0f32; 2 * k];
            for c in 1..k {
                let union = predicted[c] as f64 + target[c] as f64 + smooth;
                let dice = (2.0 * intersection[c] as f64 + smooth) / union;
                dice_sum += dice;
                coefficients[c] = (-scale * 2.0 / union) as f32;
                coefficients[k + c] = (scale * dice / union) as f32;
            }
            let dice_loss = 1.0 - dice_sum / fg;
            let gpu = term.sums.gpu();
            let fixed = Tensor::from_slice(gpu, read, &[2, k])?;
            let coefficients = Tensor::from_slice(gpu, &coefficients, &[2, k])?;
            // Value exactly 0 (x − x of the same bits), gradient −(N/(K−1))·∇S_r.
            let surrogate =
                ops::sum_all(&ops::mul(&ops::sub(&term.sums, &fixed)?, &coefficients)?)?; // [1]
            let rank_loss = ops::add(
                &ops::add_scalar(&term.cross_entropy, dice_loss as f32)?,
                &surrogate,
            )?;
            let weighted = ops::scale(&rank_loss, term.weight as f32)?;
            total = Some(match total {
                None => weighted,
                Some(t) => ops::add(&t, &weighted)?,
            });
        }
        total.ok_or_else(|| Error::invalid(op, "at least one weighted output", "none"))
    }
}

/// The deep-supervised batch Dice loss ℓ_r of this rank's shard (module docs), its sums made
/// global by `sum_over_ranks` (an element-wise all-reduce sum over the `ranks` ranks, e.g.
/// `dist::Communicator::all_reduce_sum`). Its value is CE_r + the global Dice term; the mean
/// of the ranks' gradients is the gradient of the whole batch's loss.
pub fn seg_loss_over_ranks(
    outputs: &[Tensor],
    labels: &[usize],
    ndhw: [usize; 4],
    cfg: &SegLossConfig,
    ranks: usize,
    sum_over_ranks: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Result<Tensor> {
    let rank = RankDiceSums::new(outputs, labels, ndhw, cfg)?;
    let mut global = rank.local_sums().to_vec();
    sum_over_ranks(&mut global)?;
    rank.loss(&global, ranks, cfg.smooth)
}
