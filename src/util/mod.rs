//! Small shared utilities: a seeded RNG and the named comparison tolerances.

pub mod rng;
pub mod tolerance;

pub use rng::Rng;
pub use tolerance::{compare, Tolerance, F32_ACCUM, F32_GRAD, F32_POINTWISE, FD_F64};
