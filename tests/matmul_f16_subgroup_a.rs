//! The f16 tall tiles' `_sga` twins (src/ops/matmul_subgroup_a.rs,
//! shaders/matmul_f16_vec4_sga.wgsl), which bring A's rows to the lanes by subgroup broadcasts:
//! the plain, `_tb` and `_bias` forms (and the `_ta` entry, which has no twin) against
//! src/reference/matmul_f16.rs on odd rows, partial column blocks, a batch, one row and split-K;
//! bit for bit against the entries they replace, forward and through a mixed-precision linear
//! layer's gradients; and which policy runs them, by the kernels that ran.

mod common;

use cads::ops::{self, F16VecTile, MatmulF16Kernel};
use cads::reference::matmul_f16 as ref16;
use cads::tensor::DType;
use cads::util::{Rng, Tolerance, F32_ACCUM};
use cads::{Gpu, Tensor};
use common::*;

const TALL_TILES: [F16VecTile; 2] = [F16VecTile::T32x4W8, F16VecTile::T32x4W16];
const SGA_SHADER: &str = "matmul_f16_vec4_sga::";

/// A context of its own with this subgroup-broadcast policy and f16 tile.
fn gpu_with(subgroup_a: &str, tile: F16VecTile) -> Gpu {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[
        ("subgroup_broadcast", subgroup_a),
        ("matmul_f16", tile.name()),
    ]));
    gpu
}

/// Panics naming `what` and the first element whose bits differ (or the lengths).
fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} against {}", got[i], want[i]);
    }
}

/// The same values on another context.
fn on(gpu: &Gpu, t: &Tensor) -> Tensor {
    Tensor::from_slice(gpu, &t.to_vec().unwrap(), t.shape()).unwrap()
}

/// Batch dims (both operands), then M, K, N: odd M (neither the 8-row groups nor the 32-row
/// tile), N off every column block, a batch, one row, and a long K over one tile (split-K).
const CASES: [(&[usize], usize, usize, usize); 5] = [
    (&[], 37, 12, 36),
    (&[], 70, 20, 100),
    (&[3], 9, 16, 68),
    (&[], 1, 8, 40),
    (&[], 5, 4096, 8),
];

/// `op_a(a) · op_b(b)` of f16 copies of `a` and `b` on `tile`, and the kernels that ran.
fn product(
    a: &Tensor,
    b: &Tensor,
    (ta, tb): (bool, bool),
    tile: F16VecTile,
) -> (Vec<f32>, Vec<String>) {
    let (a16, b16) = (
        a.to_dtype(DType::F16).unwrap(),
        b.to_dtype(DType::F16).unwrap(),
    );
    let (out, kernels) = ran(a.gpu(), || {
        ops::matmul_f16_with(&a16, &b16, ta, tb, MatmulF16Kernel::Vec4(tile))
    });
    (out.unwrap().to_vec().unwrap(), kernels)
}

#[test]
fn f16_twins_match_the_reference_and_the_entries_bit_for_bit() {
    let mut rng = Rng::new(81);
    for tile in TALL_TILES {
        let twins = gpu_with("always", tile);
        let entries = gpu_with("never", tile);
        assert!(
            twins.features().f16
                && twins.features().subgroups
                && twins.adapter().subgroup_min_size >= 8,
            "the test adapter must have SHADER_F16 and subgroups of 8 lanes or more (lavapipe)"
        );
        for &(batch, m, k, n) in &CASES {
            // Plain, B stored [N, K] (`_tb`) and A stored [K, M] (`_ta`: no twin; M rounded up
            // to a multiple of 4, which that form needs).
            for (ta, tb) in [(false, false), (false, true), (true, false)] {
                let m = if ta { m.next_multiple_of(4) } else { m };
                let what = format!(
                    "{} ta {ta} tb {tb} batch {batch:?} M{m} K{k} N{n}",
                    tile.name()
                );
                let a_dims = if ta { [k, m] } else { [m, k] };
                let b_dims = if tb { [n, k] } else { [k, n] };
                let a_shape: Vec<usize> = batch.iter().copied().chain(a_dims).collect();
                let b_shape: Vec<usize> = batch.iter().copied().chain(b_dims).collect();
                let (a, a_t) = random_pair(&twins, &mut rng, &a_shape, -1.0, 1.0);
                let (b, b_t) = random_pair(&twins, &mut rng, &b_shape, -1.0, 1.0);
                let (got, kernels) = product(&a_t, &b_t, (ta, tb), tile);
                assert_eq!(
                    kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
                    !ta,
                    "{what}: {kernels:?}"
                );
                let (want, kernels) =
                    product(&on(&entries, &a_t), &on(&entries, &b_t), (ta, tb), tile);
                assert!(
                    !kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
                    "{what}: {kernels:?}"
                );
                assert_same_bits(&got, &want, &what);
                let scale = if k > 1000 { 8.0 } else { 1.0 };
                let tol = Tolerance {
                    abs: F32_ACCUM.abs * scale,
                    rel: F32_ACCUM.rel * scale,
                };
                assert_close(&what, &got, &ref16::matmul_f16(&a, &b, ta, tb).data, tol);
            }
        }
    }
}

/// A mixed-precision linear layer (the `_bias` form forward; `_tb` and `_ta` in backward) on
/// `gpu`: its output and the gradients of x, w and the bias for the upstream `g`, and the
/// kernels that ran.
fn linear_and_grads(gpu: &Gpu, host: [&Tensor; 4]) -> ([Vec<f32>; 4], Vec<String>) {
    let [x, w, bias, g] = host.map(|t| on(gpu, t));
    let (x, w, bias) = (
        x.requires_grad_(true),
        w.requires_grad_(true),
        bias.requires_grad_(true),
    );
    let ((y, grads), kernels) = ran(gpu, || {
        let y = ops::linear_mixed(&x, &w, Some(&bias)).unwrap();
        let grads = y.backward_with(&g).unwrap();
        (y, grads)
    });
    let grad = |t: &Tensor| grads.get(t).unwrap().to_vec().unwrap();
    (
        [y.to_vec().unwrap(), grad(&x), grad(&w), grad(&bias)],
        kernels,
    )
}

#[test]
fn a_mixed_linear_layer_through_the_twins_is_the_entries_bit_for_bit() {
    let mut rng = Rng::new(83);
    for tile in TALL_TILES {
        let twins = gpu_with("always", tile);
        let entries = gpu_with("never", tile);
        // 45 tokens of 36 channels to 28: odd rows, a partial column block.
        let x =
            Tensor::from_slice(&twins, &rng.vec_uniform(45 * 36, -1.0, 1.0), &[3, 15, 36]).unwrap();
        let w =
            Tensor::from_slice(&twins, &rng.vec_uniform(36 * 28, -0.5, 0.5), &[36, 28]).unwrap();
        let bias = Tensor::from_slice(&twins, &rng.vec_uniform(28, -1.0, 1.0), &[28]).unwrap();
        let g =
            Tensor::from_slice(&twins, &rng.vec_uniform(45 * 28, -1.0, 1.0), &[3, 15, 28]).unwrap();
        let (got, kernels) = linear_and_grads(&twins, [&x, &w, &bias, &g]);
        // f16_vec4_32x4_w8 → matmul_f16_vec4_32x4_w8_bias_sga and matmul_f16_vec4_tb_32x4_w8_sga.
        let shape = tile.name().trim_start_matches("f16_vec4_");
        for twin in [format!("{shape}_bias_sga"), format!("tb_{shape}_sga")] {
            let name = format!("{SGA_SHADER}matmul_f16_vec4_{twin}");
            assert!(kernels.contains(&name), "{name} in {kernels:?}");
        }
        let (want, kernels) = linear_and_grads(&entries, [&x, &w, &bias, &g]);
        assert!(
            !kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
            "{kernels:?}"
        );
        for (i, what) in ["y", "dx", "dw", "dbias"].iter().enumerate() {
            assert_same_bits(&got[i], &want[i], &format!("{} {what}", tile.name()));
        }
    }
}

/// `auto` runs the twins on CPU adapters (with subgroups of 8 or more), `never` nowhere; the
/// other f16 tiles have none.
#[test]
fn which_f16_products_run_twins() {
    let mut rng = Rng::new(87);
    let cases = [
        ("auto", F16VecTile::T32x4W16),
        ("never", F16VecTile::T32x4W16),
        ("always", F16VecTile::T8x4),
        ("always", F16VecTile::T16x2),
    ];
    for (policy, tile) in cases {
        let gpu = gpu_with(policy, tile);
        let can = gpu.features().subgroups && gpu.adapter().subgroup_min_size >= 8;
        let cpu = gpu.adapter().device_type == wgpu::DeviceType::Cpu;
        let expected = policy == "auto" && cpu && can && tile == F16VecTile::T32x4W16;
        let a = Tensor::from_slice(&gpu, &rng.vec_uniform(40 * 16, -1.0, 1.0), &[40, 16]).unwrap();
        let b = Tensor::from_slice(&gpu, &rng.vec_uniform(16 * 24, -1.0, 1.0), &[16, 24]).unwrap();
        let (_, kernels) = product(&a, &b, (false, false), tile);
        assert_eq!(
            kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
            expected,
            "{policy} {} on {:?}: {kernels:?}",
            tile.name(),
            gpu.adapter().device_type
        );
    }
}
