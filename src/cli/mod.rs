//! Subcommands of the `cads` binary, one file each.

pub mod bench;
pub mod convert;
pub mod demo;
pub mod drr;
pub mod info;
pub mod inspect;
pub mod pretrain;
pub mod segment;
pub mod segment_infer;
