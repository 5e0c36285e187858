//! The Dice coefficient of one class, and argmax over channels-last logits (host side).
//!
//! For a predicted set P and a target set T of voxels (those labelled `class`):
//!   Dice(P, T) = 2·|P ∩ T| / (|P| + |T|),
//! and Dice = 1 when both sets are empty (nothing to find, nothing found — the nnU-Net/MONAI
//! "ignore empty" convention would drop the case instead; we count it as perfect).
//! [`DiceCounts`] keeps the three counts so that Dice can be pooled over many volumes
//! (Σ intersections over Σ sizes), which differs from the mean of per-volume Dice.

use crate::error::{Error, Result};

/// `|P ∩ T|`, `|P|`, `|T|` for one class, summed over as many volumes as were added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiceCounts {
    pub intersection: u64,
    pub predicted: u64,
    pub target: u64,
}

impl DiceCounts {
    /// Counts of `class` in `predicted` and `target` (same length, one label per voxel).
    pub fn of(predicted: &[usize], target: &[usize], class: usize) -> Result<DiceCounts> {
        if predicted.len() != target.len() {
            return Err(Error::shape(
                "dice",
                format!("{} target labels (as many as predicted)", predicted.len()),
                format!("{} target labels", target.len()),
            ));
        }
        let mut c = DiceCounts::default();
        for (&p, &t) in predicted.iter().zip(target) {
            let (p, t) = (p == class, t == class);
            c.intersection += (p && t) as u64;
            c.predicted += p as u64;
            c.target += t as u64;
        }
        Ok(c)
    }

    /// Pool with another volume's counts.
    pub fn add(&mut self, other: DiceCounts) {
        self.intersection += other.intersection;
        self.predicted += other.predicted;
        self.target += other.target;
    }

    /// `2·|P ∩ T| / (|P| + |T|)`, 1 when both are empty.
    pub fn value(&self) -> f64 {
        let denominator = self.predicted + self.target;
        if denominator == 0 {
            1.0
        } else {
            2.0 * self.intersection as f64 / denominator as f64
        }
    }
}

/// Dice of `class` between two label maps of equal length.
pub fn dice(predicted: &[usize], target: &[usize], class: usize) -> Result<f64> {
    Ok(DiceCounts::of(predicted, target, class)?.value())
}

/// `argmax_k logits[v, k]` for channels-last logits `[.., K]` flattened (K fastest); ties go to
/// the lower class. Comparisons with NaN are false, so a NaN never displaces the best so far
/// (a NaN in class 0 keeps class 0).
pub fn argmax_classes(logits: &[f32], classes: usize) -> Result<Vec<usize>> {
    if classes == 0 || !logits.len().is_multiple_of(classes) {
        return Err(Error::shape(
            "argmax_classes",
            format!("a multiple of {classes} logits (K = {classes} classes, K >= 1)"),
            format!("{} logits", logits.len()),
        ));
    }
    Ok(logits
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate().skip(1) {
                if v > row[best] {
                    best = k;
                }
            }
            best
        })
        .collect())
}
