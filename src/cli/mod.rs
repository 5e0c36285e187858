//! Subcommands of the `cads` binary, one file each.

pub mod drr;
pub mod info;
