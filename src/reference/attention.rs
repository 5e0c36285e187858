//! Reference for src/ops/attention.rs: the textbook definition with an explicit score matrix.

use super::Array;

/// (out, probabilities P[n][h][i][j]) for q [N, L, C], k, v [N, M, C].
fn forward_full(q: &Array, k: &Array, v: &Array, heads: usize, scale: f64) -> (Array, Vec<f64>) {
    let (n, l, c) = (q.shape[0], q.shape[1], q.shape[2]);
    let m = k.shape[1];
    let hd = c / heads;
    let mut out = Array::zeros(&[n, l, c]);
    let mut probs = vec![0.0; n * heads * l * m];
    for b in 0..n {
        for h in 0..heads {
            for i in 0..l {
                let s: Vec<f64> = (0..m)
                    .map(|j| {
                        scale
                            * (0..hd)
                                .map(|d| {
                                    q.data[(b * l + i) * c + h * hd + d]
                                        * k.data[(b * m + j) * c + h * hd + d]
                                })
                                .sum::<f64>()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                for j in 0..m {
                    let pij = (s[j] - mx).exp() / z;
                    probs[((b * heads + h) * l + i) * m + j] = pij;
                    for d in 0..hd {
                        out.data[(b * l + i) * c + h * hd + d] +=
                            pij * v.data[(b * m + j) * c + h * hd + d];
                    }
                }
            }
        }
    }
    (out, probs)
}

pub fn attention(q: &Array, k: &Array, v: &Array, heads: usize, scale: f64) -> Array {
    forward_full(q, k, v, heads, scale).0
}

/// (dq, dk, dv) given dL/dout = g, through the softmax Jacobian.
pub fn attention_backward(
    q: &Array,
    k: &Array,
    v: &Array,
    heads: usize,
    scale: f64,
    g: &Array,
) -> (Array, Array, Array) {
    let (n, l, c) = (q.shape[0], q.shape[1], q.shape[2]);
    let m = k.shape[1];
    let hd = c / heads;
    let (_, probs) = forward_full(q, k, v, heads, scale);
    let mut dq = Array::zeros(&q.shape);
    let mut dk = Array::zeros(&k.shape);
    let mut dv = Array::zeros(&v.shape);
    for b in 0..n {
        for h in 0..heads {
            for i in 0..l {
                let qi = (b * l + i) * c + h * hd;
                let p = &probs[((b * heads + h) * l + i) * m..][..m];
                // dP_ij = g_i · v_j ; dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik)
                let dp: Vec<f64> = (0..m)
                    .map(|j| {
                        (0..hd)
                            .map(|d| g.data[qi + d] * v.data[(b * m + j) * c + h * hd + d])
                            .sum()
                    })
                    .collect();
                let mean: f64 = (0..m).map(|j| p[j] * dp[j]).sum();
                for j in 0..m {
                    let kj = (b * m + j) * c + h * hd;
                    let ds = p[j] * (dp[j] - mean);
                    for d in 0..hd {
                        dq.data[qi + d] += scale * ds * k.data[kj + d];
                        dk.data[kj + d] += scale * ds * q.data[qi + d];
                        dv.data[kj + d] += p[j] * g.data[qi + d];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}
