//! The CADS loss (../shared/CADS.md, "Heads and loss"; the authors' `CADSLoss`):
//!
//!   P_s = softmax(s / τs),  P_t = softmax((t − c) / τt)  (no gradient),
//!   H(a, b) = −Σ_k a_k log b_k, averaged over the batch,
//!   L_k = [H(P_t(x1), P_sk(x2)) + H(P_t(x1), P_sk(xD)) + H(P_t(x2), P_sk(x1)) + H(P_t(x2), P_sk(xD))] / 4,
//!   L = (L_1 + L_2 + L_3 + L_4) / 4,
//!   c ← m·c + (1 − m)·mean_rows(t)   (m = 0.9; t = teacher logits of x1 and x2, 2B rows).
//!
//! The four terms of L_k have B rows each, so L_k is ONE soft cross-entropy averaged over 4B
//! rows: targets [P_t(x1); P_t(x1); P_t(x2); P_t(x2)] against student logits
//! [s(x2); s(xD); s(x1); s(xD)] / τs (the mean of four equal-sized means is the mean of their
//! union). `ops::soft_cross_entropy` takes log_softmax inside (stable logsumexp).
//!
//! Collapse monitors (on the GPU, no host read): the teacher's mean output entropy
//! H(P_t) = −Σ P_t log P_t (→ log K when it collapses to uniform), KL(P̄_t ‖ uniform) =
//! log K − H(P̄_t) with P̄_t the batch-mean distribution (→ log K when one prototype wins
//! everywhere), and the standard deviation across the batch of the teacher's pooled stage-4
//! features, averaged over channels (→ 0 when every input maps to the same feature).
//!
//! Only the entropy is a row mean. KL(P̄_t ‖ u) and the std are functions of batch statistics,
//! which is why they are computed in pieces: P̄_t ([`kl_to_uniform`] takes it), the feature mean
//! μ, and the variance about a given μ ([`feature_variance`], [`mean_feature_std`]). Data-parallel
//! training averages those pieces over the replicas and so gets the global batch's monitors
//! (`pretrain::replica_stats`).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Layout, Module, StateEntry};
use crate::ops::{self, UnaryOp};
use crate::tensor::Tensor;

use super::model::StudentOutput;

/// Number of values in [`LossOutput::values`]: total, L_1..L_4, teacher entropy,
/// KL(P̄_t ‖ uniform), feature std.
pub const LOSS_VALUES: usize = 8;

/// The loss state: the center (a buffer, saved with checkpoints as `center`).
pub struct CadsLoss {
    /// c `[1, K]`, zeros at the start.
    pub center: Tensor,
    pub student_temp: f64,
    pub center_momentum: f64,
}

/// What one loss evaluation gives.
pub struct LossOutput {
    /// L `[1]`, recorded (backward from it trains the student).
    pub total: Tensor,
    /// `[LOSS_VALUES]` detached: L, L_1..L_4, H(P_t), KL(P̄_t ‖ u), feature std. Read it once
    /// (one host round trip) when logging.
    pub values: Tensor,
    /// P_t `[2B, K]`, unrecorded (for the monitors over several replicas).
    pub teacher_probs: Tensor,
}

impl CadsLoss {
    pub fn new(gpu: &Gpu, out_dim: usize, student_temp: f64, center_momentum: f64) -> Result<Self> {
        if out_dim < 2
            || !(student_temp.is_finite() && student_temp > 0.0)
            || !(0.0..=1.0).contains(&center_momentum)
        {
            return Err(Error::invalid(
                "CadsLoss::new",
                "K >= 2, τs > 0, center momentum in [0, 1]",
                format!("K {out_dim}, τs {student_temp}, momentum {center_momentum}"),
            ));
        }
        Ok(CadsLoss {
            center: Tensor::zeros(gpu, &[1, out_dim])?,
            student_temp,
            center_momentum,
        })
    }

    fn out_dim(&self) -> usize {
        self.center.shape()[1]
    }

    /// (t − c)/τt `[rows, K]` and P_t = softmax of it, unrecorded.
    pub fn teacher_probs(
        &self,
        teacher_logits: &Tensor,
        teacher_temp: f64,
    ) -> Result<(Tensor, Tensor)> {
        let op = "CadsLoss::teacher_probs";
        let k = self.out_dim();
        if teacher_logits.rank() != 2 || teacher_logits.shape()[1] != k {
            return Err(Error::shape(
                op,
                format!("[rows, {k}]"),
                teacher_logits.shape(),
            ));
        }
        if !(teacher_temp.is_finite() && teacher_temp > 0.0) {
            return Err(Error::invalid(
                op,
                "a finite teacher temperature > 0",
                teacher_temp,
            ));
        }
        let gpu = teacher_logits.gpu().clone();
        gpu.no_grad(|| {
            let t = teacher_logits.detach();
            let z = ops::scale(&ops::sub(&t, &self.center)?, (1.0 / teacher_temp) as f32)?;
            let p = ops::softmax(&z)?;
            Ok((z, p))
        })
    }

    /// The loss of one step. `student`: logits `[3B, K]` per stage with rows x1, x2, xD;
    /// `teacher_logits` `[2B, K]` with rows x1, x2; `teacher_features` `[2B, C]` (monitor only).
    /// Does not move the center (see [`CadsLoss::update_center`]).
    pub fn forward(
        &self,
        student: &StudentOutput,
        teacher_logits: &Tensor,
        teacher_features: &Tensor,
        teacher_temp: f64,
    ) -> Result<LossOutput> {
        let op = "CadsLoss::forward";
        let k = self.out_dim();
        let rows_t = teacher_logits.shape()[0];
        if !rows_t.is_multiple_of(2) || rows_t == 0 {
            return Err(Error::shape(
                op,
                "[2B, K] teacher logits (x1 then x2)",
                teacher_logits.shape(),
            ));
        }
        let b = rows_t / 2;
        for (i, s) in student.logits.iter().enumerate() {
            if s.shape() != [3 * b, k] {
                return Err(Error::shape(
                    op,
                    format!(
                        "stage {} student logits [3B = {}, {k}] (x1, x2, xD)",
                        i + 1,
                        3 * b
                    ),
                    s.shape(),
                ));
            }
        }
        let gpu = teacher_logits.gpu().clone();
        let (z, p) = self.teacher_probs(teacher_logits, teacher_temp)?;
        // Targets of the four terms, 4B rows: P_t(x1), P_t(x1), P_t(x2), P_t(x2).
        let targets = gpu.no_grad(|| -> Result<Tensor> {
            let (p1, p2) = (p.slice(0, 0, b)?, p.slice(0, b, b)?);
            Tensor::concat(&[&p1, &p1, &p2, &p2], 0)
        })?;
        let inv_ts = (1.0 / self.student_temp) as f32;
        let mut stage_losses = Vec::with_capacity(4);
        for s in &student.logits {
            let s = ops::scale(s, inv_ts)?;
            let (x1, x2, xd) = (s.slice(0, 0, b)?, s.slice(0, b, b)?, s.slice(0, 2 * b, b)?);
            let paired = Tensor::concat(&[&x2, &xd, &x1, &xd], 0)?; // [4B, K]
            stage_losses.push(ops::soft_cross_entropy(&targets, &paired)?);
        }
        let sum = ops::add(
            &ops::add(&stage_losses[0], &stage_losses[1])?,
            &ops::add(&stage_losses[2], &stage_losses[3])?,
        )?;
        let total = ops::scale(&sum, 0.25)?;
        let values = gpu.no_grad(|| -> Result<Tensor> {
            let monitors = collapse_monitors(&z, &p, teacher_features)?;
            let parts: Vec<Tensor> = std::iter::once(total.detach())
                .chain(stage_losses.iter().map(Tensor::detach))
                .chain(monitors)
                .collect();
            Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
        })?;
        Ok(LossOutput {
            total,
            values,
            teacher_probs: p,
        })
    }

    /// c ← m·c + (1 − m)·mean_rows(t), in place on the GPU (no host round trip).
    pub fn update_center(&self, teacher_logits: &Tensor) -> Result<()> {
        let batch_center = Self::batch_center(teacher_logits)?;
        self.update_center_with_mean(&batch_center)
    }

    /// mean_rows(t) `[1, K]`, unrecorded: this replica's share of the center update (data
    /// parallel training averages it over the replicas, as the authors' all-reduce does).
    pub fn batch_center(teacher_logits: &Tensor) -> Result<Tensor> {
        let gpu = teacher_logits.gpu().clone();
        gpu.no_grad(|| ops::mean(&teacher_logits.detach(), &[0], true))
    }

    /// c ← m·c + (1 − m)·batch_center, with the batch mean `[1, K]` given (the global one in
    /// data-parallel training).
    pub fn update_center_with_mean(&self, batch_center: &Tensor) -> Result<()> {
        if batch_center.shape() != self.center.shape() {
            return Err(Error::shape(
                "CadsLoss::update_center",
                self.center.shape(),
                batch_center.shape(),
            ));
        }
        ops::ema::ema_update_(
            std::slice::from_ref(&self.center),
            std::slice::from_ref(batch_center),
            self.center_momentum,
        )
    }
}

impl Module for CadsLoss {
    /// `center` (the authors' `cads_loss.center`, `[1, K]`).
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        out.push(StateEntry::buffer(
            prefix,
            "center",
            &self.center,
            Layout::Plain,
        ));
    }
}

/// [H(P_t), KL(P̄_t ‖ u), feature std], three `[1]` tensors, unrecorded. `z` = (t − c)/τt and
/// `p` = softmax(z), `[rows, K]`; `features` `[rows, C]`.
pub fn collapse_monitors(z: &Tensor, p: &Tensor, features: &Tensor) -> Result<Vec<Tensor>> {
    let gpu = z.gpu().clone();
    gpu.no_grad(|| {
        // H(P_t) = −Σ p log softmax(z), mean over rows.
        let entropy = ops::soft_cross_entropy(p, z)?;
        let kl = kl_to_uniform(&ops::mean(p, &[0], true)?)?;
        let mean = ops::mean(features, &[0], true)?; // [1, C]
        let std = mean_feature_std(&feature_variance(features, &mean)?)?;
        Ok(vec![entropy, kl, std])
    })
}

/// KL(P̄ ‖ uniform) = log K − H(P̄) `[1]` of a distribution P̄ `[1, K]` (the batch mean of P_t),
/// unrecorded. H(P̄) takes log P̄ as log_softmax(log(P̄ + 1e-12)) (≈ log P̄; 0·log 0 → 0).
pub fn kl_to_uniform(mean_probs: &Tensor) -> Result<Tensor> {
    let gpu = mean_probs.gpu().clone();
    gpu.no_grad(|| {
        let k = mean_probs.shape()[mean_probs.rank() - 1] as f64;
        let log_mean = ops::log(&ops::add_scalar(mean_probs, 1e-12)?)?;
        let mean_entropy = ops::soft_cross_entropy(mean_probs, &log_mean)?;
        ops::add_scalar(&ops::scale(&mean_entropy, -1.0)?, k.ln() as f32)
    })
}

/// Per channel, the mean over rows of (x − μ)² `[C]`: `features` `[rows, C]` about a given mean
/// μ `[1, C]` (the batch's own, or the global batch's over several replicas; centred first, so
/// no cancellation when the std is far below |μ|, as near a collapse). Unrecorded.
pub fn feature_variance(features: &Tensor, mean: &Tensor) -> Result<Tensor> {
    let gpu = features.gpu().clone();
    gpu.no_grad(|| {
        let centered = ops::sub(&features.detach(), mean)?;
        ops::mean(&ops::unary(UnaryOp::Square, &centered)?, &[0], false)
    })
}

/// The population std per channel √variance, averaged over channels, `[1]`. Unrecorded.
pub fn mean_feature_std(variance: &Tensor) -> Result<Tensor> {
    let gpu = variance.gpu().clone();
    gpu.no_grad(|| ops::mean_all(&ops::unary(UnaryOp::Sqrt, variance)?))
}
