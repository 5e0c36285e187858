//! Shape helpers shared by the launch wrappers: broadcasting and rank-6 right-alignment of the
//! shape/stride fields that kernels take as scalar params.

use crate::error::{Error, Result};

// The rank-6 packing lives with the tensor layer (its region-copy kernel needs it too).
pub use crate::tensor::{rank6, MAX_RANK};

/// The numpy broadcast of two shapes (right-aligned; an extent-1 axis stretches).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(op, a, b));
        };
    }
    Ok(out)
}

/// Strides of `shape` viewed inside the broadcast `out` shape: 0 on stretched or missing axes.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = crate::tensor::contiguous_strides(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                own[i - off]
            }
        })
        .collect()
}

/// One axis of a broadcast: its extent and each operand's stride along it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BroadcastAxis {
    pub(crate) extent: usize,
    pub(crate) a_stride: usize,
    pub(crate) b_stride: usize,
}

/// The broadcast of two operands over `out` (strides from [`broadcast_strides`]) as the fewest
/// axes that visit the same elements in the same order: extent-1 axes are dropped, and an axis
/// is merged into the next inner one where both operands' strides continue across it
/// (stride = inner stride · inner extent; two broadcast zeros continue too). Outer axis first;
/// empty when the output has one element. Same-shape operands collapse to one axis, a bias over
/// rows or a per-sample factor to two.
pub(crate) fn collapse_broadcast(
    out: &[usize],
    a_strides: &[usize],
    b_strides: &[usize],
) -> Vec<BroadcastAxis> {
    let mut inner_first: Vec<BroadcastAxis> = Vec::new();
    for k in (0..out.len()).rev() {
        let axis = BroadcastAxis {
            extent: out[k],
            a_stride: a_strides[k],
            b_stride: b_strides[k],
        };
        if axis.extent == 1 {
            continue;
        }
        match inner_first.last_mut() {
            Some(cur)
                if axis.a_stride == cur.a_stride * cur.extent
                    && axis.b_stride == cur.b_stride * cur.extent =>
            {
                cur.extent *= axis.extent;
            }
            _ => inner_first.push(axis),
        }
    }
    inner_first.reverse();
    inner_first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shapes("t", &[2, 1, 3], &[4, 1]).unwrap(),
            vec![2, 4, 3]
        );
        assert_eq!(broadcast_shapes("t", &[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_shapes("t", &[2, 3], &[4]).is_err());
        assert_eq!(broadcast_strides(&[4, 1], &[2, 4, 3]), vec![0, 1, 0]);
        assert_eq!(rank6("t", &[2, 3], 1).unwrap(), [1, 1, 1, 1, 2, 3]);
    }

    /// Every output index visits the same (a, b) offsets through the collapsed axes as through
    /// the full ones.
    fn same_offsets(a: &[usize], b: &[usize]) -> usize {
        let out = broadcast_shapes("t", a, b).unwrap();
        let (sa, sb) = (broadcast_strides(a, &out), broadcast_strides(b, &out));
        let axes = collapse_broadcast(&out, &sa, &sb);
        let n: usize = out.iter().product();
        for i in 0..n {
            let (mut r, mut full) = (i, (0, 0));
            for k in (0..out.len()).rev() {
                let c = r % out[k];
                r /= out[k];
                full = (full.0 + c * sa[k], full.1 + c * sb[k]);
            }
            let (mut r, mut short) = (i, (0, 0));
            for ax in axes.iter().rev() {
                let c = r % ax.extent;
                r /= ax.extent;
                short = (short.0 + c * ax.a_stride, short.1 + c * ax.b_stride);
            }
            assert_eq!(full, short, "{a:?} {b:?} element {i}");
        }
        axes.len()
    }

    #[test]
    fn collapsed_broadcasts_visit_the_same_elements() {
        assert_eq!(same_offsets(&[2, 3, 4], &[2, 3, 4]), 1);
        assert_eq!(same_offsets(&[5, 7], &[7]), 2);
        assert_eq!(same_offsets(&[3, 5, 7], &[3, 1, 1]), 2);
        assert_eq!(same_offsets(&[4, 6], &[1]), 1);
        assert_eq!(same_offsets(&[1, 1], &[1]), 0);
        assert_eq!(same_offsets(&[2, 1, 3, 1, 5], &[1, 4, 3, 1, 1]), 4);
        assert_eq!(same_offsets(&[6, 1], &[1, 5]), 2);
        assert_eq!(same_offsets(&[2, 3, 4, 5], &[3, 1, 5]), 4);
    }
}
