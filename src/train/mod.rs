//! Training loops.

pub mod spheres;
pub mod toy;
