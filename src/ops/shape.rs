//! Shape helpers shared by the launch wrappers: broadcasting and rank-6 right-alignment of the
//! shape/stride fields that kernels take as scalar params.

use crate::error::{Error, Result};

/// Kernels index at most this many axes.
pub const MAX_RANK: usize = 6;

/// The numpy broadcast of two shapes (right-aligned; an extent-1 axis stretches).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
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

/// Right-align a per-axis list into 6 slots, filling leading slots with `fill`.
pub fn rank6(op: &'static str, v: &[usize], fill: usize) -> Result<[u32; MAX_RANK]> {
    if v.len() > MAX_RANK {
        return Err(Error::invalid(op, format!("rank <= {MAX_RANK}"), v.len()));
    }
    let mut out = [fill as u32; MAX_RANK];
    for (i, &x) in v.iter().enumerate() {
        if x > u32::MAX as usize {
            return Err(Error::invalid(op, "extents and strides below 2^32", x));
        }
        out[MAX_RANK - v.len() + i] = x as u32;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes("t", &[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast_shapes("t", &[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_shapes("t", &[2, 3], &[4]).is_err());
        assert_eq!(broadcast_strides(&[4, 1], &[2, 4, 3]), vec![0, 1, 0]);
        assert_eq!(rank6("t", &[2, 3], 1).unwrap(), [1, 1, 1, 1, 2, 3]);
    }
}
