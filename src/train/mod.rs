//! Training loops.

pub mod toy;
