//! Reference for src/ops/ema.rs: the exponential moving average of one flat tensor into
//! another, in f64.

/// `target ← momentum·target + (1 − momentum)·source`, element by element.
pub fn ema_update(target: &mut [f64], source: &[f64], momentum: f64) {
    assert_eq!(
        target.len(),
        source.len(),
        "reference ema_update: target/source length"
    );
    for (t, s) in target.iter_mut().zip(source) {
        *t = momentum * *t + (1.0 - momentum) * s;
    }
}
