//! What a data-parallel CADS step makes global besides the gradients (`crate::dist`): the batch
//! mean of the teacher logits for the DINO center, the reported loss values, and the collapse
//! monitors, so that N replicas report what one device reports for the whole batch.
//!
//! With N equal shards of the R global teacher rows, a mean over the global rows is the mean
//! over the replicas of their row means. That gives directly:
//! - mean_rows(t), the center's batch term (the CADS authors' all-reduce in `update_center`);
//! - L, L_1..L_4 and the teacher entropy H(P_t): row means;
//! - P̄_t, the global batch-mean teacher distribution, and from it KL(P̄_t ‖ u) = log K − H(P̄_t).
//!   The mean of the replicas' KLs is not it: KL is convex in P̄, so that mean exceeds the global
//!   KL whenever the replicas' P̄_r differ;
//! - μ, the global mean of the teacher's pooled features.
//!
//! The feature std needs a second round: per channel c, σ²_c = (1/R) Σ_rows (x_c − μ_c)², the
//! mean over the replicas of each replica's mean squared deviation about the GLOBAL μ (each
//! replica centres its rows on μ before squaring, so there is no E[x²] − μ² cancellation, which
//! in f32 would swamp a std far below |μ|, as near a collapse). The monitor is mean_c σ_c. The mean
//! of the replicas' stds is not it: each replica's std misses the spread between the replicas'
//! means.
//!
//! Two all-reduces per step: [mean_rows(t), P̄_r, μ_r] (2K + C floats), then [the
//! `LOSS_VALUES` values, σ²_r about μ] (`LOSS_VALUES` + C floats).

use crate::dist::DataParallel;
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

use super::loss::{feature_variance, kl_to_uniform, mean_feature_std, CadsLoss, LOSS_VALUES};

/// A step's global numbers.
pub struct GlobalStepStats {
    /// mean_rows(t) over the global batch `[1, K]` (for `CadsLoss::update_center_with_mean`).
    pub batch_center: Tensor,
    /// `[LOSS_VALUES]`: L, L_1..L_4, H(P_t), KL(P̄_t ‖ u), feature std of the global batch.
    pub values: Tensor,
}

/// The global numbers of a step from this replica's teacher logits `[rows, K]`, teacher
/// probabilities P_t `[rows, K]`, pooled teacher features `[rows, C]` and its loss values
/// `[LOSS_VALUES]` (of which the last two, its own KL and std, are replaced). Every replica must
/// call it with the same shapes. Unrecorded.
pub fn global_step_stats(
    dp: &DataParallel,
    teacher_logits: &Tensor,
    teacher_probs: &Tensor,
    teacher_features: &Tensor,
    local_values: &Tensor,
) -> Result<GlobalStepStats> {
    let op = "pretrain::global_step_stats";
    let (rows, k) = match *teacher_logits.shape() {
        [rows, k] if rows > 0 => (rows, k),
        _ => {
            return Err(Error::shape(
                op,
                "[rows, K] teacher logits",
                teacher_logits.shape(),
            ))
        }
    };
    if teacher_probs.shape() != [rows, k] {
        return Err(Error::shape(op, [rows, k], teacher_probs.shape()));
    }
    let c = match *teacher_features.shape() {
        [r, c] if r == rows => c,
        _ => {
            return Err(Error::shape(
                op,
                format!("[{rows}, C] teacher features"),
                teacher_features.shape(),
            ))
        }
    };
    if local_values.shape() != [LOSS_VALUES] {
        return Err(Error::shape(op, [LOSS_VALUES], local_values.shape()));
    }
    let gpu = teacher_logits.gpu().clone();
    gpu.no_grad(|| {
        // Round 1: the global row means.
        let center = CadsLoss::batch_center(teacher_logits)?; // [1, K]
        let mean_probs = ops::mean(&teacher_probs.detach(), &[0], true)?; // [1, K]
        let feature_mean = ops::mean(&teacher_features.detach(), &[0], true)?; // [1, C]
        let means = dp.mean_tensor(&Tensor::concat(&[&center, &mean_probs, &feature_mean], 1)?)?; // [1, 2K + C]
        let batch_center = means.slice(1, 0, k)?;
        let mean_probs = means.slice(1, k, k)?;
        let feature_mean = means.slice(1, 2 * k, c)?;
        // Round 2: the row-mean values and the variance about the global feature mean.
        let variance = feature_variance(teacher_features, &feature_mean)?; // [C]
        let reduced = dp.mean_tensor(&Tensor::concat(&[&local_values.detach(), &variance], 0)?)?; // [LOSS_VALUES + C]
        let values = Tensor::concat(
            &[
                &reduced.slice(0, 0, LOSS_VALUES - 2)?, // L, L_1..L_4, H(P_t)
                &kl_to_uniform(&mean_probs)?,
                &mean_feature_std(&reduced.slice(0, LOSS_VALUES, c)?)?,
            ],
            0,
        )?;
        Ok(GlobalStepStats {
            batch_center,
            values,
        })
    })
}
