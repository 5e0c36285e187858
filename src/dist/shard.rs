//! Which samples a rank makes, and with which random numbers.
//!
//! The global batch of step t has samples i = 0 .. B−1; rank r makes the samples of its window
//! (`DataParallel::window`: i ∈ [r·B/N, (r+1)·B/N)). Everything random about sample i (which
//! item it is, its augmentation) comes from [`sample_rng`]`(seed, t, i)`, a pure function of the
//! global step and index: N ranks together make exactly the batch one device makes, and a
//! resumed run (any rank count) makes the same batches as a straight one.
//!
//! [`EpochSampler`] is the data sharding of PyTorch's `DistributedSampler` (what the CADS
//! authors use) with its `set_epoch`: every epoch a new permutation of the dataset, seeded by
//! (seed, epoch); global sample position p = (t mod T)·B + i of the epoch reads item
//! perm_e[p mod n], so an epoch of T = n/B steps visits every item once, the ranks' windows are
//! disjoint, and the order changes from epoch to epoch.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::util::Rng;

/// The generator of global sample `index` of global step `step` (independent of the rank).
pub fn sample_rng(seed: u64, step: u64, index: usize) -> Rng {
    Rng::new(seed).fork(step).fork(index as u64)
}

/// The permutation of one epoch, kept for the next call: `(epoch, permutation)`.
type CachedPermutation = Arc<Mutex<Option<(u64, Arc<Vec<usize>>)>>>;

/// A fresh permutation of `0..items` per epoch (see the module docs).
#[derive(Clone, Debug)]
pub struct EpochSampler {
    pub items: usize,
    pub seed: u64,
    /// Global samples per step (B).
    pub batch: usize,
    /// Steps per epoch (T).
    pub steps_per_epoch: u64,
    /// The last epoch's permutation, shared by the loader threads.
    cache: CachedPermutation,
}

impl EpochSampler {
    pub fn new(items: usize, seed: u64, batch: usize, steps_per_epoch: u64) -> Result<Self> {
        if items == 0 || batch == 0 || steps_per_epoch == 0 {
            return Err(Error::invalid(
                "EpochSampler::new",
                "items, batch and steps per epoch >= 1",
                format!("{items} items, batch {batch}, {steps_per_epoch} steps per epoch"),
            ));
        }
        Ok(EpochSampler {
            items,
            seed,
            batch,
            steps_per_epoch,
            cache: Arc::new(Mutex::new(None)),
        })
    }

    /// Epoch `epoch`'s permutation (Fisher–Yates from (seed, epoch)).
    pub fn permutation(&self, epoch: u64) -> Arc<Vec<usize>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((e, perm)) = cache.as_ref() {
            if *e == epoch {
                return perm.clone();
            }
        }
        let mut rng = Rng::new(self.seed ^ 0x5A4D_91E0_0C11_7A5E).fork(epoch);
        let mut perm: Vec<usize> = (0..self.items).collect();
        for i in (1..self.items).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        let perm = Arc::new(perm);
        *cache = Some((epoch, perm.clone()));
        perm
    }

    /// The item read by global sample `index` of global step `step`.
    pub fn item(&self, step: u64, index: usize) -> usize {
        let epoch = step / self.steps_per_epoch;
        let position = (step % self.steps_per_epoch) as usize * self.batch + index;
        self.permutation(epoch)[position % self.items]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_visits_every_item_once_and_the_next_reorders() {
        let s = EpochSampler::new(12, 7, 4, 3).unwrap();
        let epoch = |e: u64| -> Vec<usize> {
            (0..3)
                .flat_map(|t| (0..4).map(move |i| (t, i)))
                .map(|(t, i)| s.item(e * 3 + t, i))
                .collect()
        };
        let (a, b) = (epoch(0), epoch(1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>());
        assert_ne!(a, b);
        // Rank-independent: the same (step, index) gives the same item and the same draws.
        assert_eq!(s.item(4, 2), s.clone().item(4, 2));
        assert_eq!(
            sample_rng(1, 4, 2).next_u64(),
            sample_rng(1, 4, 2).next_u64()
        );
        assert_ne!(
            sample_rng(1, 4, 2).next_u64(),
            sample_rng(1, 4, 3).next_u64()
        );
    }
}
