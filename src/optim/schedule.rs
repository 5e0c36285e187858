//! Schedules for learning rate, weight decay, teacher temperature and EMA momentum (CPU, f64).
//!
//! A schedule maps a step index (an iteration or an epoch, whichever the caller counts) to a
//! value. Past the last step every schedule holds its last value.
//!
//! CADS (DINO) uses, per iteration: lr = warm-up 10 epochs from 0 then cosine to 2e-6; weight
//! decay cosine 0.04 → 0.4; EMA momentum cosine 0.996 → 1; per epoch: teacher temperature
//! linear 0.04 → 0.07 over 50 epochs then constant. nnU-Net / PVT-UNet: poly lr, power 0.9.

use crate::error::{Error, Result};

fn check_finite(op: &'static str, what: &str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(op, format!("a finite {what}"), v))
    }
}

/// numpy `linspace(start, stop, count)[i]`: `i·((stop − start)/(count − 1)) + start`, the last
/// element exactly `stop`, and `[start]` when `count` = 1.
fn linspace_at(start: f64, stop: f64, count: u64, i: u64) -> f64 {
    if count <= 1 {
        return start;
    }
    if i + 1 >= count {
        return stop;
    }
    i as f64 * ((stop - start) / (count - 1) as f64) + start
}

/// DINO `cosine_scheduler`: `warmup_steps` values linearly from `start_warmup` to `base`
/// (numpy linspace, endpoint included), then for i = 0 .. L−1 with L = total − warmup:
/// `final + ½·(base − final)·(1 + cos(π·i/L))` (starts at `base`, approaches `final`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    pub base: f64,
    pub final_value: f64,
    pub total_steps: u64,
    pub warmup_steps: u64,
    pub start_warmup: f64,
}

impl WarmupCosine {
    /// Per-step form (`total_steps` ≥ 1, `warmup_steps` ≤ `total_steps`).
    pub fn new(
        base: f64,
        final_value: f64,
        total_steps: u64,
        warmup_steps: u64,
        start_warmup: f64,
    ) -> Result<Self> {
        const OP: &str = "WarmupCosine";
        check_finite(OP, "base value", base)?;
        check_finite(OP, "final value", final_value)?;
        check_finite(OP, "warm-up start value", start_warmup)?;
        if total_steps == 0 {
            return Err(Error::invalid(OP, "at least one step", 0));
        }
        if warmup_steps > total_steps {
            return Err(Error::invalid(
                OP,
                format!("warm-up steps <= total steps ({total_steps})"),
                warmup_steps,
            ));
        }
        Ok(WarmupCosine {
            base,
            final_value,
            total_steps,
            warmup_steps,
            start_warmup,
        })
    }

    /// DINO's signature: `cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs,
    /// start_warmup_value)`, one value per iteration. Use `niter_per_ep = 1` for a per-epoch
    /// schedule.
    pub fn dino(
        base: f64,
        final_value: f64,
        epochs: u64,
        niter_per_epoch: u64,
        warmup_epochs: u64,
        start_warmup: f64,
    ) -> Result<Self> {
        Self::new(
            base,
            final_value,
            epochs * niter_per_epoch,
            warmup_epochs * niter_per_epoch,
            start_warmup,
        )
    }

    /// The EMA teacher momentum: cosine from `base` (0.996 in CADS) to 1 over `total_steps`
    /// iterations, no warm-up.
    pub fn ema_momentum(base: f64, total_steps: u64) -> Result<Self> {
        Self::new(base, 1.0, total_steps, 0, 0.0)
    }

    /// The value at `step` (the last value past the end).
    pub fn at(&self, step: u64) -> f64 {
        let step = step.min(self.total_steps - 1);
        if step < self.warmup_steps {
            return linspace_at(self.start_warmup, self.base, self.warmup_steps, step);
        }
        let i = (step - self.warmup_steps) as f64;
        let len = (self.total_steps - self.warmup_steps) as f64;
        self.final_value
            + 0.5 * (self.base - self.final_value) * (1.0 + (std::f64::consts::PI * i / len).cos())
    }

    /// Every value, as DINO's array of length `total_steps`.
    pub fn to_vec(&self) -> Vec<f64> {
        (0..self.total_steps).map(|s| self.at(s)).collect()
    }
}

/// nnU-Net `poly_lr`: `base · (1 − t/T)^power` for t in 0..=T (power 0.9); 0 from T on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolyDecay {
    pub base: f64,
    pub total_steps: u64,
    pub power: f64,
}

impl PolyDecay {
    pub fn new(base: f64, total_steps: u64, power: f64) -> Result<Self> {
        const OP: &str = "PolyDecay";
        check_finite(OP, "base value", base)?;
        if !(power.is_finite() && power > 0.0) {
            return Err(Error::invalid(OP, "a finite power > 0", power));
        }
        if total_steps == 0 {
            return Err(Error::invalid(OP, "at least one step", 0));
        }
        Ok(PolyDecay {
            base,
            total_steps,
            power,
        })
    }

    /// nnU-Net's setting: power 0.9.
    pub fn nnunet(base: f64, total_steps: u64) -> Result<Self> {
        Self::new(base, total_steps, 0.9)
    }

    /// The value at `step` (clamped to `total_steps`, where it is 0).
    pub fn at(&self, step: u64) -> f64 {
        let t = step.min(self.total_steps) as f64;
        self.base * (1.0 - t / self.total_steps as f64).powf(self.power)
    }
}

/// DINO's teacher-temperature schedule: `linspace(start, end, ramp_steps)` then `end`
/// (CADS: 0.04 → 0.07 over 50 epochs, i.e. 0.04 at epoch 0 and 0.07 from epoch 49 on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearRamp {
    pub start: f64,
    pub end: f64,
    pub ramp_steps: u64,
}

impl LinearRamp {
    pub fn new(start: f64, end: f64, ramp_steps: u64) -> Result<Self> {
        const OP: &str = "LinearRamp";
        check_finite(OP, "start value", start)?;
        check_finite(OP, "end value", end)?;
        Ok(LinearRamp {
            start,
            end,
            ramp_steps,
        })
    }

    /// The value at `step`; `end` from `ramp_steps` on (and always, when `ramp_steps` = 0).
    pub fn at(&self, step: u64) -> f64 {
        if step >= self.ramp_steps {
            return self.end;
        }
        linspace_at(self.start, self.end, self.ramp_steps, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_hand_computed_values() {
        let close = |what: &str, got: f64, want: f64| {
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{what}: {got} vs {want}"
            )
        };
        // CADS lr: 10 warm-up epochs from 0 to 5.625e-4, then cosine to 2e-6; 150 epochs × 4 iterations.
        let lr = WarmupCosine::dino(5.625e-4, 2e-6, 150, 4, 10, 0.0).unwrap();
        assert_eq!(lr.to_vec().len(), 600);
        close("warm-up start", lr.at(0), 0.0);
        close("warm-up end", lr.at(39), 5.625e-4); // linspace includes its endpoint
        close("warm-up step", lr.at(1), 5.625e-4 / 39.0);
        close("cosine start", lr.at(40), 5.625e-4);
        // Cosine midpoint: i = L/2 = 280 of L = 560 → (base + final)/2.
        close("cosine midpoint", lr.at(40 + 280), (5.625e-4 + 2e-6) / 2.0);
        let last =
            2e-6 + 0.5 * (5.625e-4 - 2e-6) * (1.0 + (std::f64::consts::PI * 559.0 / 560.0).cos());
        close("cosine last", lr.at(599), last);
        close("past the end holds", lr.at(10_000), last);
        // Weight decay 0.04 → 0.4: rises, midpoint 0.22.
        let wd = WarmupCosine::dino(0.04, 0.4, 100, 1, 0, 0.0).unwrap();
        close("wd start", wd.at(0), 0.04);
        close("wd midpoint", wd.at(50), 0.22);
        // EMA momentum 0.996 → 1.
        let m = WarmupCosine::ema_momentum(0.996, 1000).unwrap();
        close("ema start", m.at(0), 0.996);
        close("ema midpoint", m.at(500), 0.998);
        assert!(m.at(999) > 0.99999 && m.at(999) < 1.0);
        // nnU-Net poly: base·(1 − t/T)^0.9.
        let poly = PolyDecay::nnunet(0.01, 1000).unwrap();
        close("poly at 0", poly.at(0), 0.01);
        close("poly at T/2", poly.at(500), 0.01 * 0.5f64.powf(0.9));
        close("poly at T", poly.at(1000), 0.0);
        close("poly past T", poly.at(2000), 0.0);
        // Teacher temperature: 0.04 → 0.07 over 50 epochs, then 0.07.
        let temp = LinearRamp::new(0.04, 0.07, 50).unwrap();
        close("temp 0", temp.at(0), 0.04);
        close("temp 49", temp.at(49), 0.07);
        close("temp 1", temp.at(1), 0.04 + 0.03 / 49.0);
        close("temp 120", temp.at(120), 0.07);
        // Degenerate single-step warm-up is numpy's linspace(a, b, 1) = [a].
        close(
            "one warm-up step",
            WarmupCosine::new(1.0, 0.0, 3, 1, 0.25).unwrap().at(0),
            0.25,
        );
    }
}
