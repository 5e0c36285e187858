//! The tall vec4 tiles reading B packed in column panels (src/ops/matmul_pack_b.rs, the `pb_`
//! entries of shaders/matmul_vec4.wgsl): forced on (`matmul_pack_b` = `always`) against
//! src/reference/matmul.rs on shapes with partial panels, odd rows, batches with a broadcast B,
//! split-K and the bias form; packed against unpacked, which must agree bit for bit (the same
//! FMAs in the same order, only B's addresses differ); the rule's choice on the shapes it packs
//! and the ones it does not, by the kernels that ran; an unknown policy name.

mod common;

use cads::ops::{self, MatmulKernel};
use cads::reference::matmul as refmm;
use cads::util::{Rng, Tolerance, F32_ACCUM};
use cads::{Gpu, Tensor};
use common::*;

const TALL_TILES: [&str; 2] = ["vec4_32x4_w8", "vec4_32x4_w16"];
const PACK: &str = "matmul_pack_b::pack_b_panels";

/// A context of its own whose matmul packing policy is `policy`, running the `pb_` entries of
/// shaders/matmul_vec4.wgsl themselves (their subgroup-broadcast twins, which read B the same
/// way, are tested in tests/matmul_subgroup_a.rs).
fn gpu_packing(policy: &str) -> Gpu {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[
        ("matmul_pack_b", policy),
        ("subgroup_broadcast", "never"),
    ]));
    gpu
}

/// F32_ACCUM for the short sums, eight times it for K = 4096 (f32 rounding grows with the length).
fn tolerance(k: usize) -> Tolerance {
    let scale = if k > 1000 { 8.0 } else { 1.0 };
    Tolerance {
        abs: F32_ACCUM.abs * scale,
        rel: F32_ACCUM.rel * scale,
    }
}

fn pb_entry(tile: &str) -> String {
    format!(
        "matmul_vec4::matmul_{}",
        tile.replacen("vec4_", "vec4_pb_", 1)
    )
}

/// Batch dims of A and of B, then M, K, N.
type Case = (&'static [usize], &'static [usize], usize, usize, usize);

#[test]
fn packed_products_match_the_reference_on_partial_panels_batches_and_split_k() {
    let gpu = gpu_packing("always");
    let mut rng = Rng::new(41);
    // (batch of A, batch of B, M, K, N): N off every panel width (36, 100, 68 columns), odd M, a
    // batch with B broadcast over its outer axis, and a long K over few tiles (split-K). M > 8
    // throughout: fewer rows take the 8 × 8 tile (`MatmulKernel::for_rows`).
    let cases: [Case; 5] = [
        (&[], &[], 37, 12, 36),
        (&[], &[], 70, 20, 100),
        (&[2, 3], &[3], 9, 16, 68),
        (&[3], &[3], 33, 8, 132),
        (&[], &[], 9, 4096, 8),
    ];
    for tile in TALL_TILES {
        let kernel = MatmulKernel::from_name(tile).unwrap();
        for &(ba, bb, m, k, n) in &cases {
            let what = format!("{tile} a{ba:?} b{bb:?} M{m} K{k} N{n}");
            let a_shape: Vec<usize> = ba.iter().copied().chain([m, k]).collect();
            let b_shape: Vec<usize> = bb.iter().copied().chain([k, n]).collect();
            let (a, ta) = random_pair(&gpu, &mut rng, &a_shape, -1.0, 1.0);
            let (b, tb) = random_pair(&gpu, &mut rng, &b_shape, -1.0, 1.0);
            let (out, kernels) = ran(&gpu, || ops::matmul_with(&ta, &tb, false, false, kernel));
            let out = out.unwrap();
            assert!(
                kernels.iter().any(|k| k == PACK) && kernels.contains(&pb_entry(tile)),
                "{what}: {kernels:?}"
            );
            let want = refmm::matmul(&a, &b, false, false);
            assert_eq!(out.shape(), want.shape.as_slice(), "{what}");
            assert_close(&what, &out.to_vec().unwrap(), &want.data, tolerance(k));
        }
    }
}

#[test]
fn the_bias_form_adds_the_bias_once_across_split_k() {
    let gpu = gpu_packing("always");
    let mut rng = Rng::new(43);
    for tile in TALL_TILES {
        let kernel = MatmulKernel::from_name(tile).unwrap();
        for (m, k, n) in [(45, 24, 68), (10, 4096, 36)] {
            let (x, tx) = random_pair(&gpu, &mut rng, &[m, k], -1.0, 1.0);
            let (w, tw) = random_pair(&gpu, &mut rng, &[k, n], -1.0, 1.0);
            let (bias, tbias) = random_pair(&gpu, &mut rng, &[n], -1.0, 1.0);
            let (y, kernels) = ran(&gpu, || ops::linear_with(&tx, &tw, Some(&tbias), kernel));
            let what = format!("{tile} linear M{m} K{k} N{n}");
            assert!(
                kernels.contains(&format!("{}_bias", pb_entry(tile))),
                "{what}: {kernels:?}"
            );
            let product = refmm::matmul(&x, &w, false, false);
            let want: Vec<f64> = product
                .data
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias.data[i % n])
                .collect();
            assert_close(&what, &y.unwrap().to_vec().unwrap(), &want, tolerance(k));
        }
    }
}

/// Forward and both gradients of a product on `gpu`, as host vectors.
fn product_and_grads(
    gpu: &Gpu,
    a: &[f32],
    b: &[f32],
    shapes: [&[usize]; 2],
    tb: bool,
    g: &[f32],
) -> [Vec<f32>; 3] {
    let kernel = MatmulKernel::from_name("vec4_32x4_w8").unwrap();
    let ta = Tensor::from_slice(gpu, a, shapes[0])
        .unwrap()
        .requires_grad_(true);
    let tbb = Tensor::from_slice(gpu, b, shapes[1])
        .unwrap()
        .requires_grad_(true);
    let out = ops::matmul_with(&ta, &tbb, false, tb, kernel).unwrap();
    let grads = out
        .backward_with(&Tensor::from_slice(gpu, g, out.shape()).unwrap())
        .unwrap();
    [
        out.to_vec().unwrap(),
        grads.get(&ta).unwrap().to_vec().unwrap(),
        grads.get(&tbb).unwrap().to_vec().unwrap(),
    ]
}

#[test]
fn packed_and_unpacked_agree_bit_for_bit_forward_and_backward() {
    let packed = gpu_packing("always");
    let plain = gpu_packing("never");
    let mut rng = Rng::new(47);
    // Plain B, and a transposed B (whose input gradient G·B is a plain product that packs).
    for (m, k, n, tb) in [(64, 48, 96, false), (40, 36, 44, true)] {
        let a = rng.vec_uniform(m * k, -1.0, 1.0);
        let b = rng.vec_uniform(k * n, -1.0, 1.0);
        let g = rng.vec_uniform(m * n, -1.0, 1.0);
        let b_shape = if tb { [n, k] } else { [k, n] };
        let shapes: [&[usize]; 2] = [&[m, k], &b_shape];
        let (got, kernels) = ran(&packed, || {
            product_and_grads(&packed, &a, &b, shapes, tb, &g)
        });
        assert!(kernels.iter().any(|k| k == PACK), "{kernels:?}");
        let (want, kernels) = ran(&plain, || product_and_grads(&plain, &a, &b, shapes, tb, &g));
        assert!(!kernels.iter().any(|k| k == PACK), "{kernels:?}");
        for (i, part) in ["product", "grad a", "grad b"].iter().enumerate() {
            assert_eq!(
                got[i].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want[i].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "M{m} K{k} N{n} tb {tb}: {part}"
            );
        }
    }
}

#[test]
fn auto_packs_where_the_rule_says_and_never_packs_nothing() {
    let mut rng = Rng::new(53);
    let kernel = MatmulKernel::from_name("vec4_32x4_w8").unwrap();
    // 512 rows 4 KiB apart (16 per L2 set) under 256 rows of A: packed; 1000 columns: not.
    for (policy, n, packs) in [
        ("auto", 1024, true),
        ("auto", 1000, false),
        ("never", 1024, false),
    ] {
        let gpu = gpu_packing(policy);
        let (m, k) = (256, 512);
        let a = Tensor::from_slice(&gpu, &rng.vec_uniform(m * k, -1.0, 1.0), &[m, k]).unwrap();
        let b = Tensor::from_slice(&gpu, &rng.vec_uniform(k * n, -1.0, 1.0), &[k, n]).unwrap();
        let (out, kernels) = ran(&gpu, || ops::matmul_with(&a, &b, false, false, kernel));
        out.unwrap();
        assert_eq!(
            kernels.iter().any(|k| k == PACK),
            packs,
            "{policy}, N {n}: {kernels:?}"
        );
        assert_eq!(
            kernels.contains(&pb_entry("vec4_32x4_w8")),
            packs,
            "{kernels:?}"
        );
    }
}

#[test]
fn an_unknown_policy_is_an_error_naming_the_policies() {
    let gpu = gpu_packing("sometimes");
    // More than 8 rows, so the tall tile runs (fewer take the 8 × 8 tile, no packing).
    let a = Tensor::zeros(&gpu, &[12, 12]).unwrap();
    let kernel = MatmulKernel::from_name("vec4_32x4_w8").unwrap();
    let err = ops::matmul_with(&a, &a, false, false, kernel)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sometimes") && err.contains("always") && err.contains("never"),
        "{err}"
    );
}

#[test]
fn other_tiles_never_pack() {
    let gpu = gpu_packing("always");
    let mut rng = Rng::new(59);
    let a = Tensor::from_slice(&gpu, &rng.vec_uniform(64 * 32, -1.0, 1.0), &[64, 32]).unwrap();
    let b = Tensor::from_slice(&gpu, &rng.vec_uniform(32 * 64, -1.0, 1.0), &[32, 64]).unwrap();
    for name in ["vec4_8x4", "vec4_16x8_w8", "vec4_32x4_w8_sa128"] {
        let kernel = MatmulKernel::from_name(name).unwrap();
        let (out, kernels) = ran(&gpu, || ops::matmul_with(&a, &b, false, false, kernel));
        out.unwrap();
        assert!(!kernels.iter().any(|k| k == PACK), "{name}: {kernels:?}");
    }
}
