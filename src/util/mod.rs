//! Small shared utilities: a seeded RNG, the named comparison tolerances, checked size
//! arithmetic for everything reachable from input, and the name filter of `cads bench` and
//! `cads check`.

pub mod file;
pub mod rng;
pub mod size;
pub mod tolerance;

pub use rng::Rng;
pub use tolerance::{compare, worst_excess, Tolerance, F32_ACCUM, F32_GRAD, F32_POINTWISE, FD_F64};

/// Whether `name` is selected by `filter`: one or more texts separated by `|`, any of which
/// `name` contains (`matmul/2048|conv3d_fwd_bwd/c32`); no filter selects every name. Empty
/// alternatives select nothing.
pub fn filter_selects(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|f| {
        f.split('|')
            .any(|part| !part.is_empty() && name.contains(part))
    })
}

#[cfg(test)]
mod tests {
    use super::filter_selects;

    #[test]
    fn a_filter_selects_names_containing_any_alternative() {
        assert!(filter_selects(None, "matmul/2048"));
        assert!(filter_selects(Some("matmul/2048"), "matmul/2048"));
        assert!(filter_selects(Some("2048|c32"), "conv3d_fwd/c32"));
        assert!(!filter_selects(Some("2048|c32"), "matmul/1024"));
        assert!(!filter_selects(Some("|"), "matmul/1024"));
        assert!(!filter_selects(Some(""), "matmul/1024"));
    }
}
