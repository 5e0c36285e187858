//! The f16 matmul on cooperative matrices (src/ops/matmul_f16_coop.rs), on a device created with
//! them requested (`CooperativeMatrix::On`): Mesa 26's lavapipe reports 8×8×8 f16 fragments with f32
//! accumulators, so the kernels are checked here without a GPU; a GPU that reports 16×16×16 runs
//! the other generated kernel through the same tests.
//!
//! - forward and backward against src/reference/matmul_f16.rs (tolerances of
//!   tests/common/f16_matmul.rs: F32_ACCUM forward, F16_GRAD gradients) on every transpose
//!   pattern, edge blocks, batches, shared operands and split-K;
//! - an identity: A · I = A exactly (every product is exact and one term per sum is non-zero);
//! - the linear layer under autocast gives the same values with and without cooperative matrices;
//! - the policy: `Auto` leaves a CPU adapter without them, `Off` never asks, and the
//!   cooperative kernel asked for on a device without them runs the register tiles.
//!
//! An adapter that reports no usable configuration FAILS these tests with the reason: the
//! kernels would go unchecked otherwise.

mod common;

use std::sync::OnceLock;

use cads::gpu::{AdapterChoice, CooperativeMatrix, Precision};
use cads::nn::linear::{Linear, LinearInit};
use cads::ops::{self, F16VecTile, MatmulF16Kernel};
use cads::tensor::DType;
use cads::util::Rng;
use cads::{Gpu, Tensor};
use common::f16_matmul::*;
use common::*;

/// The device with cooperative matrices; fails (never skips) where the adapter has none.
fn coop_gpu() -> Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let gpu = GPU
        .get_or_init(|| {
            Gpu::with_choice_cooperative(&AdapterChoice::from_env(), CooperativeMatrix::On)
                .map(test_tuning)
                .map_err(|e| e.to_string())
        })
        .clone()
        .unwrap_or_else(|e| panic!("GPU test cannot run: {e}"));
    assert!(
        gpu.features().cooperative_matrix.is_some(),
        "{:?} reports no cooperative-matrix configuration with f16 operands and f32 accumulators \
         (8x8x8 or 16x16x16, subgroup scope) through wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX; \
         these tests need one: Mesa 26's lavapipe has 8x8x8 (scripts/newer-lavapipe.sh, as .ci/run \
         uses it; Mesa 25.0.7's reports none through wgpu), see README's GPU set-up",
        gpu.adapter().name
    );
    gpu
}

/// Edge blocks in every direction (M, N, K not multiples of the fragment or the block), exact
/// blocks, several blocks, and long reductions that split.
const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 13, 5),
    (8, 8, 8),
    (32, 32, 32),
    (33, 65, 70),
    (64, 32, 96),
    (70, 9, 129),
    (12, 4100, 8),
    (16, 2048, 40),
];

#[test]
fn coop_matmul_matches_reference_on_every_transpose() {
    let gpu = coop_gpu();
    assert_eq!(
        MatmulF16Kernel::chosen(&gpu).unwrap(),
        MatmulF16Kernel::Cooperative
    );
    let mut rng = Rng::new(71);
    for &size in SIZES {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            check_f16_case(
                &gpu,
                MatmulF16Kernel::Cooperative,
                &mut rng,
                &[],
                &[],
                size,
                ta,
                tb,
            );
        }
    }
}

#[test]
fn coop_matmul_batches_and_shared_operands_match_reference() {
    let gpu = coop_gpu();
    let mut rng = Rng::new(72);
    let batches: &[(&[usize], &[usize])] = &[(&[3], &[3]), (&[2, 3], &[]), (&[], &[4])];
    for (ba, bb) in batches {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            for size in [(9, 40, 17), (40, 8, 33)] {
                check_f16_case(
                    &gpu,
                    MatmulF16Kernel::Cooperative,
                    &mut rng,
                    ba,
                    bb,
                    size,
                    ta,
                    tb,
                );
            }
        }
    }
}

#[test]
fn coop_matmul_times_the_identity_is_exact() {
    let gpu = coop_gpu();
    let mut rng = Rng::new(73);
    let (m, k) = (45, 70);
    // f16 values (f32 data rounded through f16 first), so the product must return them exactly.
    let a16 = Tensor::from_slice(&gpu, &rng.vec_uniform(m * k, -4.0, 4.0), &[m, k])
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let mut eye = vec![0.0f32; k * k];
    for i in 0..k {
        eye[i * k + i] = 1.0;
    }
    let eye16 = Tensor::from_slice(&gpu, &eye, &[k, k])
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let want = a16.to_dtype(DType::F32).unwrap().to_vec().unwrap();
    // I is symmetric: read as stored and through the transpose flag, both give A.
    for tb in [false, true] {
        let got = ops::matmul_f16_with(&a16, &eye16, false, tb, MatmulF16Kernel::Cooperative)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(got, want, "A·I (transpose_b {tb})");
    }
    // I·Aᵀ read through the transpose flag: the columns of A become rows.
    let got = ops::matmul_f16_with(&eye16, &a16, false, true, MatmulF16Kernel::Cooperative)
        .unwrap()
        .to_vec()
        .unwrap();
    for r in 0..k {
        for c in 0..m {
            assert_eq!(got[r * m + c], want[c * k + r], "I·Aᵀ at ({r}, {c})");
        }
    }
}

/// The f16 kernel a device without cooperative matrices runs: the vec4 tiles on a CPU adapter
/// (the tile chosen for it), the 4 × 4 tiles on a GPU.
fn register_tiles(gpu: &Gpu) -> MatmulF16Kernel {
    if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
        MatmulF16Kernel::Vec4(F16VecTile::chosen(gpu).unwrap())
    } else {
        MatmulF16Kernel::Tile4x4
    }
}

#[test]
fn linear_under_autocast_agrees_with_and_without_cooperative_matrices() {
    let coop = coop_gpu();
    let plain = gpu();
    assert_eq!(
        MatmulF16Kernel::chosen(&plain).unwrap(),
        register_tiles(&plain)
    );
    let mut rng = Rng::new(74);
    let (rows, cin, cout) = (37, 24, 40);
    let xs = rng.vec_uniform(rows * cin, -1.0, 1.0);
    let gs = rng.vec_uniform(rows * cout, -1.0, 1.0);
    let run = |gpu: &Gpu| {
        let mut lrng = Rng::new(5);
        let layer = Linear::new(gpu, cin, cout, true, LinearInit::Torch, &mut lrng).unwrap();
        let x = Tensor::from_slice(gpu, &xs, &[rows, cin])
            .unwrap()
            .requires_grad_(true);
        let y = gpu
            .autocast(Precision::Mixed, || layer.forward(&x))
            .unwrap();
        let grads = y
            .backward_with(&Tensor::from_slice(gpu, &gs, &[rows, cout]).unwrap())
            .unwrap();
        let mut out = vec![
            y.to_vec().unwrap(),
            grads.get(&x).unwrap().to_vec().unwrap(),
        ];
        for p in [&layer.weight, layer.bias.as_ref().unwrap()] {
            out.push(grads.get(p).unwrap().to_vec().unwrap());
        }
        out
    };
    let (with, without) = (run(&coop), run(&plain));
    for (i, (a, b)) in with.iter().zip(&without).enumerate() {
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        assert_close(&format!("output/gradient {i}"), a, &b64, F16_GRAD);
    }
}

#[test]
fn cooperative_matrices_follow_the_policy_and_fall_back() {
    let choice = AdapterChoice::from_env();
    let off = test_tuning(Gpu::with_choice_cooperative(&choice, CooperativeMatrix::Off).unwrap());
    assert_eq!(off.features().cooperative_matrix, None);
    assert_eq!(MatmulF16Kernel::chosen(&off).unwrap(), register_tiles(&off));
    assert_eq!(
        MatmulF16Kernel::Cooperative.effective(&off).unwrap(),
        register_tiles(&off)
    );
    let auto = test_tuning(Gpu::with_choice_cooperative(&choice, CooperativeMatrix::Auto).unwrap());
    if auto.adapter().device_type == wgpu::DeviceType::Cpu {
        assert_eq!(
            auto.features().cooperative_matrix,
            None,
            "Auto on a CPU adapter"
        );
    }
    // Asked for on a device without them, the cooperative kernel runs the register tiles.
    let mut rng = Rng::new(75);
    check_f16_case(
        &off,
        MatmulF16Kernel::Cooperative,
        &mut rng,
        &[],
        &[],
        (33, 65, 70),
        false,
        false,
    );
}
