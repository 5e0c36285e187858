//! Subcommands of the `cads` binary, one file each.

pub mod info;
pub mod inspect;
