//! Checked size arithmetic for every shape, element count and byte count reachable from input.
//!
//! Release builds wrap on integer overflow, so `rows * cols` of two crafted values can come out as
//! 1 and a later index runs out of bounds, or `Vec::with_capacity` asks for exabytes and aborts.
//! Every product or sum of sizes that a file, a command-line flag or a public argument can reach
//! goes through these helpers, which return a typed error naming the op and the operands instead.

use crate::error::{Error, Result};

/// The element count of `shape`, or an error if the product overflows `usize`.
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::invalid(
                op,
                "a shape whose element count fits in usize",
                format!("shape {shape:?} (the product overflows)"),
            )
        })
}

/// `a · b`, or an error naming `what` (e.g. "detector rows × columns").
pub fn checked_mul(op: &'static str, what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| {
        Error::invalid(
            op,
            format!("{what} that fits in usize"),
            format!("{a} × {b} (overflows)"),
        )
    })
}

/// `a + b`, or an error naming `what`.
pub fn checked_add(op: &'static str, what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_add(b).ok_or_else(|| {
        Error::invalid(
            op,
            format!("{what} that fits in usize"),
            format!("{a} + {b} (overflows)"),
        )
    })
}

/// The byte count of `numel` elements of `elem_bytes` each, as u64.
pub fn checked_bytes(op: &'static str, numel: usize, elem_bytes: usize) -> Result<u64> {
    (numel as u64)
        .checked_mul(elem_bytes as u64)
        .ok_or_else(|| {
            Error::invalid(
                op,
                "a byte count that fits in u64",
                format!("{numel} elements × {elem_bytes} bytes (overflows)"),
            )
        })
}

/// A non-negative finite f64 size (a voxel or pixel count computed in floating point) as usize,
/// refusing NaN, infinities and values above `max`: `as usize` would saturate silently.
pub fn f64_to_count(op: &'static str, what: &str, value: f64, max: usize) -> Result<usize> {
    if !(value.is_finite() && value >= 0.0 && value <= max as f64) {
        return Err(Error::invalid(
            op,
            format!("{what} between 0 and {max}"),
            value,
        ));
    }
    Ok(value as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_shapes_are_errors_not_wrapped_counts() {
        assert_eq!(checked_numel("t", &[2, 3, 4]).unwrap(), 24);
        assert_eq!(checked_numel("t", &[]).unwrap(), 1);
        assert!(checked_numel("t", &[1 << 32, 1 << 32]).is_err());
        assert!(checked_numel("t", &[usize::MAX, 2]).is_err());
        assert!(checked_mul("t", "rows × cols", usize::MAX, usize::MAX).is_err());
        assert!(checked_add("t", "end", usize::MAX, 1).is_err());
        assert!(checked_bytes("t", usize::MAX, 8).is_err());
        assert!(f64_to_count("t", "rows", f64::NAN, 10).is_err());
        assert!(f64_to_count("t", "rows", 1e30, usize::MAX).is_err());
        assert_eq!(f64_to_count("t", "rows", 7.0, 10).unwrap(), 7);
    }
}
