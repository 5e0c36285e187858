//! Reference for src/ops/reduce.rs.

use super::Array;

/// Sum over `axes` (non-negative, distinct), keeping them as extent 1; times `scale`.
pub fn sum_keepdim(x: &Array, axes: &[usize], scale: f64) -> Array {
    let shape: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    let mut out = Array::zeros(&shape);
    for i in 0..x.numel() {
        let mut idx = x.unravel(i);
        for &a in axes {
            idx[a] = 0;
        }
        let o = out.ravel(&idx);
        out.data[o] += x.data[i];
    }
    for v in &mut out.data {
        *v *= scale;
    }
    out
}

/// Backward of `sum_keepdim`: every input element receives `scale · g` of its output.
pub fn sum_keepdim_backward(x_shape: &[usize], axes: &[usize], scale: f64, g: &Array) -> Array {
    let mut gx = Array::zeros(x_shape);
    for i in 0..gx.numel() {
        let mut idx = gx.unravel(i);
        for &a in axes {
            idx[a] = 0;
        }
        gx.data[i] = scale * g.data[g.ravel(&idx)];
    }
    gx
}
