//! `cads bench [--filter NAME]`: the benchmark suite of `benches/ops.rs`, one JSON line per case.

use cads::gpu::AdapterChoice;
use cads::{Gpu, Result};

pub fn run(choice: &AdapterChoice, filter: Option<&str>) -> Result<()> {
    let gpu = Gpu::with_choice(choice)?;
    cads::bench::run_suite(&gpu, filter, |r| out!("{}", r.to_json()))?;
    Ok(())
}
