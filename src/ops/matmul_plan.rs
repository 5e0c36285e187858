//! The shape plan of one batched matmul (src/ops/matmul.rs): operand ranks and inner extents
//! checked, batch dims broadcast numpy-style and collapsed into at most two groups with one
//! stride per operand each, and the element strides of `op_a(A)` and `op_b(B)` as stored.

use super::shape::broadcast_shapes;
use crate::error::{Error, Result};

/// Shapes and strides of one batched matmul after validation and batch collapsing.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) out_shape: Vec<usize>,
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    /// Batch collapsed into (outer, inner) groups; each operand has one stride per group.
    pub(super) outer: usize,
    pub(super) inner: usize,
    pub(super) a_sb: [usize; 2],
    pub(super) b_sb: [usize; 2],
    pub(super) a_sm: usize,
    pub(super) a_sk: usize,
    pub(super) b_sk: usize,
    pub(super) b_sn: usize,
}

pub(super) fn plan(a: &[usize], b: &[usize], ta: bool, tb: bool) -> Result<Plan> {
    if a.len() < 2 || b.len() < 2 {
        return Err(Error::invalid(
            "matmul",
            "operands of rank >= 2",
            format!("a {a:?} and b {b:?}"),
        ));
    }
    let (ra, ca) = (a[a.len() - 2], a[a.len() - 1]);
    let (rb, cb) = (b[b.len() - 2], b[b.len() - 1]);
    let (m, k) = if ta { (ca, ra) } else { (ra, ca) };
    let (k2, n) = if tb { (cb, rb) } else { (rb, cb) };
    if k != k2 {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            expected: format!(
                "a {a:?} (transpose_a {ta}) and b {b:?} (transpose_b {tb}) with equal inner extents"
            ),
            got: format!("K = {k} for a and {k2} for b"),
        });
    }
    let ba = &a[..a.len() - 2];
    let bb = &b[..b.len() - 2];
    let batch = broadcast_shapes("matmul", ba, bb).map_err(|_| Error::ShapeMismatch {
        op: "matmul",
        expected: format!("batch dims that broadcast: a {a:?}, b {b:?}"),
        got: format!("batch {ba:?} and {bb:?}"),
    })?;
    // Element strides of each operand's batch axes inside the broadcast batch (0 = broadcast).
    let strides = |own: &[usize], mat: usize| -> Vec<usize> {
        let off = batch.len() - own.len();
        let mut s = vec![0; batch.len()];
        let mut acc = mat;
        for i in (0..own.len()).rev() {
            if own[i] != 1 {
                s[off + i] = acc;
            }
            acc *= own[i];
        }
        s
    };
    let sa = strides(ba, m * k);
    let sb = strides(bb, k * n);
    // Collapse batch axes into runs with the same (a broadcast?, b broadcast?) pattern; within a
    // run each operand is either contiguous or broadcast, so the run is one flat axis.
    let mut groups: Vec<(usize, usize, usize)> = Vec::new(); // (extent, a stride, b stride)
    let mut last: Option<(bool, bool)> = None;
    for i in 0..batch.len() {
        if batch[i] == 1 {
            continue;
        }
        let pat = (sa[i] != 0, sb[i] != 0);
        if last == Some(pat) {
            let g = groups
                .last_mut()
                .expect("a group exists when a pattern was seen");
            g.0 *= batch[i];
            g.1 = sa[i];
            g.2 = sb[i];
        } else {
            groups.push((batch[i], sa[i], sb[i]));
            last = Some(pat);
        }
    }
    if groups.len() > 2 {
        return Err(Error::invalid(
            "matmul",
            "batch broadcasting with at most two alternating broadcast patterns",
            format!("a {a:?}, b {b:?}"),
        ));
    }
    let (outer, inner, a_sb, b_sb) = match groups.as_slice() {
        [] => (1, 1, [0, 0], [0, 0]),
        [g] => (1, g.0, [0, g.1], [0, g.2]),
        [o, i] => (o.0, i.0, [o.1, i.1], [o.2, i.2]),
        _ => unreachable!("at most two groups"),
    };
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let (a_sm, a_sk) = if ta { (1, m) } else { (k, 1) };
    let (b_sk, b_sn) = if tb { (1, k) } else { (n, 1) };
    let mut p = Plan {
        out_shape,
        m,
        n,
        k,
        outer,
        inner,
        a_sb,
        b_sb,
        a_sm,
        a_sk,
        b_sk,
        b_sn,
    };
    // A weight shared across the batch with row-major A: the batch is just more rows of A.
    if p.outer == 1 && p.inner > 1 && p.b_sb[1] == 0 && !ta && p.a_sb[1] == m * k {
        p.m *= p.inner;
        p.inner = 1;
        p.a_sb = [0, 0];
    }
    Ok(p)
}
