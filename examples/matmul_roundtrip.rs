//! Matmul 1024³ timed the way the Burn peer harness (`../shared/peers/burn-bench`) times Burn:
//! per iteration a fresh left operand (`a + i`, its own elementwise kernel), the product, and the
//! whole result read back to the host, wall clock, mean of 3 after one warm-up. `cads bench`
//! times the kernel alone with GPU timestamps; this is the like-for-like figure for the Burn
//! ratio (docs/kernel-tuning.md).
//!
//! Run: `cargo run --release --example matmul_roundtrip [variant ...]` (variants as
//! `CADS_KERNEL_MATMUL` names them, e.g. `vec4_8x4 vec4_32x4_w8_sa128`; none: the adapter's
//! chosen kernel).

use cads::ops::{self, MatmulKernel};
use cads::{Gpu, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new()?;
    let n = 1024;
    let mut rng = cads::util::Rng::new(1);
    let a = Tensor::from_slice(&gpu, &rng.vec_uniform(n * n, -1.0, 1.0), &[n, n])?;
    let b = Tensor::from_slice(&gpu, &rng.vec_uniform(n * n, -1.0, 1.0), &[n, n])?;
    let names: Vec<String> = std::env::args().skip(1).collect();
    let kernels = if names.is_empty() {
        vec![MatmulKernel::chosen(&gpu)?]
    } else {
        names
            .iter()
            .map(|s| MatmulKernel::from_name(s))
            .collect::<Result<_, _>>()?
    };
    let flops = 2.0 * (n * n * n) as f64;
    for kernel in kernels {
        let run = |i: usize| -> Result<f32, cads::Error> {
            let c = ops::matmul_with(&ops::add_scalar(&a, i as f32)?, &b, false, false, kernel)?;
            Ok(c.to_vec()?[0])
        };
        let mut sink = run(100)?;
        let start = std::time::Instant::now();
        for i in 0..3 {
            sink += run(i)?;
        }
        let s = start.elapsed().as_secs_f64() / 3.0;
        println!(
            "cads matmul 1024 {}: {:.1} ms {:.2} GFLOP/s (round trip; sink {sink:.3})",
            kernel.name(),
            s * 1e3,
            flops / s / 1e9
        );
    }
    Ok(())
}
