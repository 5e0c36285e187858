//! Reference for src/optim/: the torch.optim.SGD / AdamW update rules and gradient clipping in
//! f64 on flat parameter vectors, written to be read.

/// Momentum buffer of one parameter (`None` before its first step), as torch's
/// `state["momentum_buffer"]`.
pub type MomentumBuffer = Option<Vec<f64>>;

/// One torch.optim.SGD step on one parameter, in place.
///
/// g' = g + λ·p; with μ ≠ 0: b = g' at the first step, else b = μ·b + (1 − dampening)·g';
/// d = g' + μ·b (Nesterov) or b; without momentum d = g'. Then p ← p − lr·d.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    param: &mut [f64],
    grad: &[f64],
    buf: &mut MomentumBuffer,
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
) {
    assert_eq!(
        param.len(),
        grad.len(),
        "reference sgd_step: param/grad length"
    );
    let g: Vec<f64> = grad
        .iter()
        .zip(param.iter())
        .map(|(g, p)| g + weight_decay * p)
        .collect();
    let d = if momentum != 0.0 {
        let b = match buf.take() {
            None => g.clone(),
            Some(b) => b
                .iter()
                .zip(&g)
                .map(|(b, g)| momentum * b + (1.0 - dampening) * g)
                .collect(),
        };
        let d = if nesterov {
            g.iter().zip(&b).map(|(g, b)| g + momentum * b).collect()
        } else {
            b.clone()
        };
        *buf = Some(b);
        d
    } else {
        g
    };
    for (p, d) in param.iter_mut().zip(d) {
        *p -= lr * d;
    }
}

/// AdamW state of one parameter: m, v and the steps taken.
#[derive(Clone, Debug, Default)]
pub struct AdamWState {
    pub m: Vec<f64>,
    pub v: Vec<f64>,
    pub step: u64,
}

/// One torch.optim.AdamW step (amsgrad off) on one parameter, in place.
///
/// t ← t + 1; p ← p·(1 − lr·λ); m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²;
/// p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε).
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    param: &mut [f64],
    grad: &[f64],
    state: &mut AdamWState,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
) {
    assert_eq!(
        param.len(),
        grad.len(),
        "reference adamw_step: param/grad length"
    );
    if state.step == 0 {
        state.m = vec![0.0; param.len()];
        state.v = vec![0.0; param.len()];
    }
    state.step += 1;
    let t = state.step as f64;
    let bias_correction1 = 1.0 - beta1.powf(t);
    let bias_correction2 = 1.0 - beta2.powf(t);
    for i in 0..param.len() {
        let g = grad[i];
        param[i] *= 1.0 - lr * weight_decay;
        state.m[i] = beta1 * state.m[i] + (1.0 - beta1) * g;
        state.v[i] = beta2 * state.v[i] + (1.0 - beta2) * g * g;
        let denom = state.v[i].sqrt() / bias_correction2.sqrt() + eps;
        param[i] -= lr / bias_correction1 * state.m[i] / denom;
    }
}

/// ‖x‖₂.
pub fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// min(1, max_norm / (norm + 1e-6)), the clip coefficient of DINO and torch.
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// DINO `clip_gradients`: scale each gradient by its own coefficient; returns the norms before.
pub fn clip_per_tensor(grads: &mut [Vec<f64>], max_norm: f64) -> Vec<f64> {
    grads
        .iter_mut()
        .map(|g| {
            let n = norm(g);
            let c = clip_coefficient(n, max_norm);
            g.iter_mut().for_each(|v| *v *= c);
            n
        })
        .collect()
}

/// torch `clip_grad_norm_`: one coefficient from the total norm; returns the total before.
pub fn clip_global(grads: &mut [Vec<f64>], max_norm: f64) -> f64 {
    let total = grads.iter().map(|g| norm(g).powi(2)).sum::<f64>().sqrt();
    let c = clip_coefficient(total, max_norm);
    grads
        .iter_mut()
        .for_each(|g| g.iter_mut().for_each(|v| *v *= c));
    total
}
