//! Reference for src/ops/softmax.rs: softmax / log-softmax over the last axis, in f64.

use super::Array;

fn rows(x: &Array) -> (usize, usize) {
    let cols = *x.shape.last().expect("softmax reference: rank >= 1");
    (x.numel().checked_div(cols).unwrap_or(0), cols)
}

/// y = exp(x − max) / Σ exp(x − max) (or its log when `log`), row by row.
pub fn softmax(x: &Array, log: bool) -> Array {
    let (r, k) = rows(x);
    let mut y = Array::zeros(&x.shape);
    for row in 0..r {
        let xs = &x.data[row * k..(row + 1) * k];
        let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = xs.iter().map(|v| (v - m).exp()).sum();
        for (out, &v) in y.data[row * k..(row + 1) * k].iter_mut().zip(xs) {
            *out = if log {
                v - m - s.ln()
            } else {
                (v - m).exp() / s
            };
        }
    }
    y
}

/// Gradient to x given upstream g: softmax `y·(g − Σ g·y)`, log-softmax `g − softmax(x)·Σ g`.
pub fn softmax_backward(x: &Array, g: &Array, log: bool) -> Array {
    let (r, k) = rows(x);
    let p = softmax(x, false);
    let mut gx = Array::zeros(&x.shape);
    for row in 0..r {
        let o = row * k;
        let (ps, gs) = (&p.data[o..o + k], &g.data[o..o + k]);
        if log {
            let sg: f64 = gs.iter().sum();
            for j in 0..k {
                gx.data[o + j] = gs[j] - ps[j] * sg;
            }
        } else {
            let dot: f64 = gs.iter().zip(ps).map(|(a, b)| a * b).sum();
            for j in 0..k {
                gx.data[o + j] = ps[j] * (gs[j] - dot);
            }
        }
    }
    gx
}
