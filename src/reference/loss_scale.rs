//! Reference for src/optim/loss_scale.rs: torch.amp.GradScaler's scale update and the unscale
//! with its inf / NaN check, on host vectors, written to be read.
//!
//! Unlike the other twins this one works in f32, not f64: what is specified is f32 arithmetic
//! (the scale is an f32 tensor in torch, and unscaling a power-of-two scale is exact), so the
//! GPU must match it bit for bit, not within a tolerance.

/// torch.amp.GradScaler's state: `_scale` (f32) and `_growth_tracker` (i32), with its factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScalerModel {
    pub scale: f32,
    pub growth_tracker: i32,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i32,
}

impl GradScalerModel {
    pub fn new(init_scale: f64, growth_factor: f64, backoff_factor: f64, interval: i32) -> Self {
        GradScalerModel {
            scale: init_scale as f32,
            growth_tracker: 0,
            growth_factor,
            backoff_factor,
            growth_interval: interval,
        }
    }

    /// `scaler.update()` after a step whose gradients had (`found_inf`) or had no inf / NaN:
    /// ATen's `_amp_update_scale_`, where `float * double` is evaluated in double and stored
    /// back to float.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale = (self.scale as f64 * self.backoff_factor) as f32;
            self.growth_tracker = 0;
            return;
        }
        // A successful step: count it before comparing with the interval.
        let successful = self.growth_tracker + 1;
        if successful == self.growth_interval {
            let new_scale = (self.scale as f64 * self.growth_factor) as f32;
            // Do not grow past f32's range to inf.
            if new_scale.is_finite() {
                self.scale = new_scale;
            }
            self.growth_tracker = 0;
        } else {
            self.growth_tracker = successful;
        }
    }
}

/// `_amp_foreach_non_finite_check_and_unscale_` on one gradient with torch's
/// `inv_scale = scale.double().reciprocal().float()`: every value multiplied by inv_scale in
/// f32; returns whether any value was inf or NaN. cads also flags a product that overflows
/// (see shaders/optim_loss_scale.wgsl), which this twin does too.
pub fn unscale_and_check(grad: &mut [f32], scale: f32) -> bool {
    let inv_scale = (1.0 / scale as f64) as f32;
    let mut found_inf = false;
    for g in grad.iter_mut() {
        let unscaled = *g * inv_scale;
        found_inf |= !g.is_finite() || !unscaled.is_finite();
        *g = unscaled;
    }
    found_inf
}
