//! DropPath (stochastic depth): in training, each sample's residual branch is zeroed with
//! probability p and the survivors scaled by 1/(1 − p); identity in evaluation.
//!
//! Data parallelism: a replica that holds rows `offset .. offset + count` of a global batch must
//! draw the masks the single-device run draws for those rows, or N replicas of batch B/N would
//! not train like one device with batch B. Inside [`with_sample_window`] every `drop_path` draws
//! the masks of the whole global batch, in the global row order, and keeps its own rows: the
//! generator then advances identically on every replica (and as on one device), and the mask of
//! a sample is a function of its global index only. Outside a window the rows of `x` are the
//! whole batch (the single-device case, unchanged).

use std::cell::Cell;

use super::state::{Module, StateEntry};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::util::Rng;

/// The rows of a global batch that this replica's tensors hold. A tensor's rows may be several
/// stacked views of the same samples (CADS runs x1 and x2 as one batch): its `n` rows are then
/// `n / count` blocks, block j holding the global rows `j·global + offset .. j·global + offset +
/// count` of a global tensor of `n / count · global` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleWindow {
    pub offset: usize,
    pub count: usize,
    pub global: usize,
}

impl SampleWindow {
    /// The whole batch of `n` samples (one device).
    pub fn whole(n: usize) -> SampleWindow {
        SampleWindow {
            offset: 0,
            count: n,
            global: n,
        }
    }

    /// Check `offset + count <= global` and `count > 0`.
    pub fn validate(&self) -> Result<()> {
        if self.count == 0 || self.offset + self.count > self.global {
            return Err(Error::invalid(
                "SampleWindow",
                "0 < count and offset + count <= global",
                format!("{self:?}"),
            ));
        }
        Ok(())
    }
}

thread_local! {
    static WINDOW: Cell<Option<SampleWindow>> = const { Cell::new(None) };
}

/// Run `f` with every `drop_path` on this thread drawing for `window` (see the module docs).
/// Scoped like `Gpu::no_grad`: the previous window is restored when `f` returns.
pub fn with_sample_window<R>(window: SampleWindow, f: impl FnOnce() -> Result<R>) -> Result<R> {
    window.validate()?;
    let previous = WINDOW.with(|w| w.replace(Some(window)));
    let out = f();
    WINDOW.with(|w| w.set(previous));
    out
}

/// The mask of the rows this replica holds: `n` local rows under the current window, drawn
/// for the global rows in their global order.
fn draw_mask(n: usize, keep: f32, rng: &mut Rng) -> Result<Vec<f32>> {
    let window = WINDOW.with(Cell::get).unwrap_or(SampleWindow::whole(n));
    if !n.is_multiple_of(window.count) {
        return Err(Error::shape(
            "drop_path",
            format!(
                "rows in blocks of the sample window's {} samples",
                window.count
            ),
            [n],
        ));
    }
    let blocks = n / window.count;
    let mut mask = Vec::with_capacity(n);
    for _ in 0..blocks {
        for row in 0..window.global {
            let value = if rng.bernoulli(keep as f64) {
                1.0 / keep
            } else {
                0.0
            };
            if (window.offset..window.offset + window.count).contains(&row) {
                mask.push(value);
            }
        }
    }
    Ok(mask)
}

/// `x` of shape `[N, ...]`; one Bernoulli draw per sample from `rng` (seeded by the caller),
/// per global sample inside a [`with_sample_window`].
pub fn drop_path(x: &Tensor, prob: f32, training: bool, rng: &mut Rng) -> Result<Tensor> {
    if !(0.0..1.0).contains(&prob) {
        return Err(Error::invalid("drop_path", "probability in [0, 1)", prob));
    }
    if !training || prob == 0.0 {
        return Ok(x.clone());
    }
    if x.rank() == 0 {
        return Err(Error::shape("drop_path", "[N, ...]", x.shape()));
    }
    let n = x.shape()[0];
    let mask = draw_mask(n, 1.0 - prob, rng)?;
    let mut mask_shape = vec![1; x.rank()];
    mask_shape[0] = n;
    let mask = Tensor::from_slice(x.gpu(), &mask, &mask_shape)?;
    crate::ops::mul(x, &mask)
}

/// DropPath as a layer: holds its probability, no state (timm's `DropPath` has none either, so
/// no key appears in a checkpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropPath {
    pub prob: f32,
}

impl DropPath {
    pub fn new(prob: f32) -> Result<DropPath> {
        if !(0.0..1.0).contains(&prob) {
            return Err(Error::invalid(
                "DropPath::new",
                "probability in [0, 1)",
                prob,
            ));
        }
        Ok(DropPath { prob })
    }

    pub fn forward(&self, x: &Tensor, training: bool, rng: &mut Rng) -> Result<Tensor> {
        drop_path(x, self.prob, training, rng)
    }
}

impl Module for DropPath {
    fn state(&self, _prefix: &str, _out: &mut Vec<StateEntry>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas with one sample each, on a tensor of two stacked views (CADS's x1, x2), draw
    /// exactly the rows one device draws for the whole batch, and advance the generator alike.
    #[test]
    fn windows_draw_the_global_rows_of_their_samples() {
        let keep = 0.5;
        let mut one = Rng::new(9);
        // One device: batch 2, two views → rows [x1_0, x1_1, x2_0, x2_1].
        let whole =
            with_sample_window(SampleWindow::whole(2), || draw_mask(4, keep, &mut one)).unwrap();
        for offset in 0..2 {
            let mut rng = Rng::new(9);
            let window = SampleWindow {
                offset,
                count: 1,
                global: 2,
            };
            let mine = with_sample_window(window, || draw_mask(2, keep, &mut rng)).unwrap();
            assert_eq!(mine, vec![whole[offset], whole[2 + offset]]);
            assert_eq!(
                rng.state(),
                one.state(),
                "the generator advanced differently"
            );
        }
        // Rows that are not whole blocks of the window are an error, not a silent draw.
        let window = SampleWindow {
            offset: 0,
            count: 2,
            global: 4,
        };
        let mut rng = Rng::new(1);
        assert!(with_sample_window(window, || draw_mask(3, keep, &mut rng)).is_err());
        // Outside a window: n draws in row order, as before windows existed.
        let mut a = Rng::new(3);
        let mut b = Rng::new(3);
        let plain = draw_mask(3, keep, &mut a).unwrap();
        let by_hand: Vec<f32> = (0..3)
            .map(|_| if b.bernoulli(0.5) { 2.0 } else { 0.0 })
            .collect();
        assert_eq!(plain, by_hand);
    }
}
