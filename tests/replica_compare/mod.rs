//! How the data-parallel tests (tests/data_parallel.rs, tests/mpi.rs) compare a run on N
//! replicas with a run on one device: the losses, and every weight after the run.
//!
//! The two runs differ only in float summation order (a mean over the whole batch on one
//! device; means over the shards, averaged). Their losses agree to ~1e-6 (`LOSS_TOL`). Their
//! weights agree to `WEIGHT_TOL` after SGD, whose step is proportional to the gradient. AdamW's
//! first steps are m̂/(√v̂ + ε) ≈ ±1 whatever the gradient's size, so a gradient component near
//! zero whose last bits differ between the orders can flip sign and move its weight up to 2·lr
//! per step: for AdamW runs every element must lie within 2·Σ_t lr_t (that bound is exact), at
//! most `ADAMW_FLIP_FRACTION` of a tensor's elements may exceed `WEIGHT_TOL`, and the tensors of
//! `NOISE_GRADIENT`, whose gradient is zero in exact arithmetic (pure noise), only the bound.
#![allow(dead_code)]

use cads::nn::Module;
use cads::util::{compare, Tolerance};

pub const LOSS_TOL: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-5,
};

/// Observed on lavapipe: largest |Δ| 1.0e-5 (pretraining) and 1.5e-5 (segmentation).
pub const WEIGHT_TOL: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 1e-3,
};

/// The bias of the stem's first conv, which the InstanceNorm (no affine) after it subtracts:
/// its gradient is zero in exact arithmetic.
pub const NOISE_GRADIENT: [&str; 2] = ["patch_embed1.proj.0.bias", "patch_embed1.proj_2D.0.bias"];

pub const ADAMW_FLIP_FRACTION: f64 = 0.01;

#[derive(Clone, Copy, Debug)]
pub enum Steps {
    Sgd,
    /// AdamW with Σ_t lr_t over the run's steps.
    AdamW {
        lr_sum: f64,
    },
}

/// Every named tensor of a module, on the host.
pub fn host_state(module: &dyn Module) -> Vec<(String, Vec<f32>)> {
    module
        .named_state()
        .into_iter()
        .map(|e| (e.name, e.tensor.to_vec().unwrap()))
        .collect()
}

/// Panic unless the weights of the replicated run (`got`) match the one-device run (`want`) as
/// the module docs say; print the largest difference and the AdamW flips.
pub fn compare_states(
    what: &str,
    got: &[(String, Vec<f32>)],
    want: &[(String, Vec<f32>)],
    steps: Steps,
) {
    assert_eq!(got.len(), want.len(), "{what}: tensor count");
    let mut worst = (0.0f64, String::new());
    let mut flips = 0usize;
    for ((name, g), (want_name, w)) in got.iter().zip(want) {
        assert_eq!(name, want_name, "{what}: tensor order");
        let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let label = format!("{what} {name}");
        if let Steps::AdamW { lr_sum } = steps {
            let bound = Tolerance {
                abs: 2.0 * lr_sum,
                rel: 0.0,
            };
            compare(&label, &g64, &w64, bound).unwrap_or_else(|m| panic!("{m}"));
            if NOISE_GRADIENT.iter().any(|n| name.ends_with(n)) {
                continue;
            }
            let out: Vec<usize> = (0..g.len())
                .filter(|&i| {
                    (g64[i] - w64[i]).abs() > WEIGHT_TOL.abs + WEIGHT_TOL.rel * w64[i].abs()
                })
                .collect();
            assert!(
                out.len() as f64 <= ADAMW_FLIP_FRACTION * g.len() as f64,
                "{label}: {} of {} elements beyond {WEIGHT_TOL:?}",
                out.len(),
                g.len()
            );
            flips += out.len();
        } else {
            compare(&label, &g64, &w64, WEIGHT_TOL).unwrap_or_else(|m| panic!("{m}"));
        }
        for (a, b) in g.iter().zip(w) {
            let d = (a - b).abs() as f64;
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    eprintln!(
        "{what}: largest |Δ| {:.3e} in {} ({steps:?}; {flips} element(s) beyond WEIGHT_TOL)",
        worst.0, worst.1
    );
}
