//! Reference for src/ops/matmul.rs: batched matmul with transposes and numpy batch broadcasting.
//!
//! `C[b, m, n] = Σ_k A(b, m, k) · B(b, k, n)` where `A(b, m, k)` reads `a` at `[.., m, k]`, or at
//! `[.., k, m]` when `transpose_a`, with `a`'s batch index broadcast from `b` (likewise `B`).

use super::Array;

/// Shape bookkeeping shared by the forward and backward loops.
struct Dims {
    batch: Vec<usize>,
    m: usize,
    n: usize,
    k: usize,
}

fn dims(a: &Array, b: &Array, ta: bool, tb: bool) -> Dims {
    let (ra, ca) = (a.shape[a.shape.len() - 2], a.shape[a.shape.len() - 1]);
    let (rb, cb) = (b.shape[b.shape.len() - 2], b.shape[b.shape.len() - 1]);
    let (m, k) = if ta { (ca, ra) } else { (ra, ca) };
    let (k2, n) = if tb { (cb, rb) } else { (rb, cb) };
    assert_eq!(k, k2, "reference matmul: inner extents");
    let batch = super::elementwise::broadcast_shape(
        &a.shape[..a.shape.len() - 2],
        &b.shape[..b.shape.len() - 2],
    );
    Dims { batch, m, n, k }
}

/// Flat index of the matrix that batch multi-index `idx` (of the broadcast batch) reads in an
/// operand whose batch shape is `own` (right-aligned; extent-1 axes stay at 0).
fn batch_matrix(own: &[usize], idx: &[usize]) -> usize {
    let off = idx.len() - own.len();
    own.iter().enumerate().fold(0, |flat, (d, &n)| {
        flat * n + if n == 1 { 0 } else { idx[off + d] }
    })
}

fn unravel(shape: &[usize], mut i: usize) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Element offset of A(m, k) inside one matrix of `a` (stored [M, K] or, transposed, [K, M]).
fn at(t: bool, rows: usize, cols: usize, r: usize, c: usize) -> usize {
    // Logical (r, c) of a [rows, cols] matrix stored either as is or transposed.
    if t {
        c * rows + r
    } else {
        r * cols + c
    }
}

/// `op_a(a) · op_b(b)`, output `[batch..., M, N]`.
pub fn matmul(a: &Array, b: &Array, ta: bool, tb: bool) -> Array {
    let d = dims(a, b, ta, tb);
    let nb: usize = d.batch.iter().product();
    let mut shape = d.batch.clone();
    shape.extend([d.m, d.n]);
    let mut out = Array::zeros(&shape);
    let a_batch = &a.shape[..a.shape.len() - 2];
    let b_batch = &b.shape[..b.shape.len() - 2];
    for bi in 0..nb {
        let idx = unravel(&d.batch, bi);
        let a0 = batch_matrix(a_batch, &idx) * d.m * d.k;
        let b0 = batch_matrix(b_batch, &idx) * d.k * d.n;
        for m in 0..d.m {
            for n in 0..d.n {
                let mut s = 0.0;
                for k in 0..d.k {
                    s += a.data[a0 + at(ta, d.m, d.k, m, k)] * b.data[b0 + at(tb, d.k, d.n, k, n)];
                }
                out.data[(bi * d.m + m) * d.n + n] = s;
            }
        }
    }
    out
}

/// Gradients of `L = Σ C·g` with respect to `a` and `b`, in their stored layouts and shapes:
/// dA(m, k) = Σ_n g[m, n] B(k, n),  dB(k, n) = Σ_m A(m, k) g[m, n], each summed over every
/// batch index that reads the same matrix (broadcast batch dims).
pub fn matmul_backward(a: &Array, b: &Array, ta: bool, tb: bool, g: &Array) -> (Array, Array) {
    let d = dims(a, b, ta, tb);
    let nb: usize = d.batch.iter().product();
    let mut ga = Array::zeros(&a.shape);
    let mut gb = Array::zeros(&b.shape);
    let a_batch = &a.shape[..a.shape.len() - 2];
    let b_batch = &b.shape[..b.shape.len() - 2];
    for bi in 0..nb {
        let idx = unravel(&d.batch, bi);
        let a0 = batch_matrix(a_batch, &idx) * d.m * d.k;
        let b0 = batch_matrix(b_batch, &idx) * d.k * d.n;
        for m in 0..d.m {
            for n in 0..d.n {
                let gv = g.data[(bi * d.m + m) * d.n + n];
                for k in 0..d.k {
                    let ai = a0 + at(ta, d.m, d.k, m, k);
                    let bj = b0 + at(tb, d.k, d.n, k, n);
                    ga.data[ai] += gv * b.data[bj];
                    gb.data[bj] += gv * a.data[ai];
                }
            }
        }
    }
    (ga, gb)
}
