//! Reference for src/ops/loss.rs: soft cross-entropy, mean-squared error, L2 normalisation (f64).

use super::softmax::softmax;
use super::Array;

/// Per-row `−Σ_k p[b, k]·log_softmax(s)[b, k]` for p, s of shape [.., K]; one value per row.
pub fn soft_cross_entropy_rows(p: &Array, s: &Array) -> Vec<f64> {
    let k = *s.shape.last().expect("rank >= 1");
    let ls = softmax(s, true);
    (0..s.numel() / k)
        .map(|r| {
            -(0..k)
                .map(|j| p.data[r * k + j] * ls.data[r * k + j])
                .sum::<f64>()
        })
        .collect()
}

/// Mean over rows of `soft_cross_entropy_rows`.
pub fn soft_cross_entropy(p: &Array, s: &Array) -> f64 {
    let rows = soft_cross_entropy_rows(p, s);
    rows.iter().sum::<f64>() / rows.len() as f64
}

/// Gradients of `Σ_b g[b]·H_b(p, s)` to (p, s): gp = −g·log_softmax(s),
/// gs = g·(softmax(s)·Σ_k p − p).
pub fn soft_cross_entropy_rows_backward(p: &Array, s: &Array, g: &[f64]) -> (Array, Array) {
    let k = *s.shape.last().expect("rank >= 1");
    let ls = softmax(s, true);
    let mut gp = Array::zeros(&s.shape);
    let mut gs = Array::zeros(&s.shape);
    for (r, &gr) in g.iter().enumerate() {
        let psum: f64 = p.data[r * k..(r + 1) * k].iter().sum();
        for j in 0..k {
            let i = r * k + j;
            gp.data[i] = -gr * ls.data[i];
            gs.data[i] = gr * (ls.data[i].exp() * psum - p.data[i]);
        }
    }
    (gp, gs)
}

/// mean((a − b)²).
pub fn mse(a: &Array, b: &Array) -> f64 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        / a.numel() as f64
}

/// Gradient of `g·mse(a, b)` to a (the gradient to b is its negative): 2g(a − b)/n.
pub fn mse_backward(a: &Array, b: &Array, g: f64) -> Array {
    let n = a.numel() as f64;
    Array::new(
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| 2.0 * g * (x - y) / n)
            .collect(),
        &a.shape,
    )
}

/// Flat indices of each line along `axis`.
fn lines(shape: &[usize], axis: usize) -> Vec<Vec<usize>> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape[axis];
    let mut out = Vec::new();
    for o in 0..outer {
        for i in 0..inner {
            out.push((0..len).map(|a| (o * len + a) * inner + i).collect());
        }
    }
    out
}

/// x / max(‖x‖₂, eps) along `axis`.
pub fn l2_normalize(x: &Array, axis: usize, eps: f64) -> Array {
    let mut y = Array::zeros(&x.shape);
    for line in lines(&x.shape, axis) {
        let n = line
            .iter()
            .map(|&i| x.data[i] * x.data[i])
            .sum::<f64>()
            .sqrt();
        for &i in &line {
            y.data[i] = x.data[i] / n.max(eps);
        }
    }
    y
}

/// Gradient to x: (g − y·(y·g))/‖x‖ where ‖x‖ > eps, else g/eps.
pub fn l2_normalize_backward(x: &Array, axis: usize, eps: f64, g: &Array) -> Array {
    let mut gx = Array::zeros(&x.shape);
    for line in lines(&x.shape, axis) {
        let n = line
            .iter()
            .map(|&i| x.data[i] * x.data[i])
            .sum::<f64>()
            .sqrt();
        if n > eps {
            let yg: f64 = line.iter().map(|&i| x.data[i] / n * g.data[i]).sum();
            for &i in &line {
                gx.data[i] = (g.data[i] - x.data[i] / n * yg) / n;
            }
        } else {
            for &i in &line {
                gx.data[i] = g.data[i] / eps;
            }
        }
    }
    gx
}
