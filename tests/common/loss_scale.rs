//! Helpers shared by tests/loss_scale.rs and tests/loss_scale_training.rs: a tensor as bits and
//! the optimizer kinds the runs use. Included with
//! `#[path = "common/loss_scale.rs"] mod loss_scale_common;` (not through `common/mod.rs`, so
//! other test binaries do not build it).
#![allow(dead_code)]

use cads::Tensor;

pub fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[derive(Clone, Copy, Debug)]
pub enum Opt {
    AdamW,
    SgdMomentum,
    SgdPlain,
}
