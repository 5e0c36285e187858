//! Small shared utilities: a seeded RNG, the named comparison tolerances, and checked size
//! arithmetic for everything reachable from input.

pub mod file;
pub mod rng;
pub mod size;
pub mod tolerance;

pub use rng::Rng;
pub use tolerance::{compare, worst_excess, Tolerance, F32_ACCUM, F32_GRAD, F32_POINTWISE, FD_F64};
