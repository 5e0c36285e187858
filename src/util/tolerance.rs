//! Named tolerance presets and a comparison that reports the worst element.
//!
//! An element passes when `|got − want| <= abs + rel·|want|`.

#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// One rounding of an elementwise f32 op (transcendentals included).
pub const F32_POINTWISE: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 2e-5,
};
/// f32 sums and dot products of up to a few thousand terms, reordered by the kernel.
pub const F32_ACCUM: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 1e-4,
};
/// Gradients computed in f32 through several reductions.
pub const F32_GRAD: Tolerance = Tolerance {
    abs: 1e-3,
    rel: 1e-3,
};
/// f64 analytic gradient against f64 central differences.
pub const FD_F64: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};

/// The worst element of `got` against `want`: (index, its error as a multiple of its bound),
/// with the number of elements out of tolerance; `None` when every element passes. NaN never
/// satisfies the bound, and counts as infinitely far out.
fn worst_element(got: &[f64], want: &[f64], tol: Tolerance) -> (usize, Option<(usize, f64)>) {
    let mut fails = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let bound = tol.abs + tol.rel * w.abs();
        if err <= bound {
            continue;
        }
        fails += 1;
        let excess = if err.is_nan() {
            f64::INFINITY
        } else {
            err / bound
        };
        if worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    (fails, worst)
}

/// The largest `|got − want| / (abs + rel·|want|)` over the elements: at most 1 when every
/// element passes; infinite for a NaN or a length mismatch; 0 for two empty slices.
pub fn worst_excess(got: &[f64], want: &[f64], tol: Tolerance) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let ratio = (g - w).abs() / (tol.abs + tol.rel * w.abs());
            if ratio.is_nan() {
                f64::INFINITY
            } else {
                ratio
            }
        })
        .fold(0.0, f64::max)
}

/// Compare `got` to `want`; on failure the message names the worst element (index, both values),
/// the number of failing elements and the tolerance.
pub fn compare(what: &str, got: &[f64], want: &[f64], tol: Tolerance) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: length {} vs expected {}",
            got.len(),
            want.len()
        ));
    }
    match worst_element(got, want, tol) {
        (_, None) => Ok(()),
        (fails, Some((i, _))) => Err(format!(
            "{what}: {fails} of {} elements out of tolerance (abs {}, rel {}); worst at index {i}: got {}, expected {}",
            got.len(),
            tol.abs,
            tol.rel,
            got[i],
            want[i]
        )),
    }
}
