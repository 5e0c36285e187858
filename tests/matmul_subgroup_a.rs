//! The tall vec4 tiles' `_sga` twins (src/ops/matmul_subgroup_a.rs, shaders/matmul_vec4_sga.wgsl),
//! which bring A's rows to the lanes by subgroup broadcasts: every form (plain, `pb_`, `_tb`,
//! `_bias` packed and not) against src/reference/matmul.rs on odd rows, partial column blocks,
//! batches with a broadcast B, a single row and split-K; against the entries they replace, bit
//! for bit (the same FMAs in the same order), forward and through the tape's gradients (a
//! transposed A, which has no twin, too); which policy runs them where, by the kernels that
//! ran.

mod common;

use cads::ops::{self, MatmulKernel};
use cads::reference::matmul as refmm;
use cads::util::{Rng, Tolerance, F32_ACCUM};
use cads::{Gpu, Tensor};
use common::*;

const TALL_TILES: [&str; 2] = ["vec4_32x4_w8", "vec4_32x4_w16"];
const SGA_SHADER: &str = "matmul_vec4_sga::";

/// A context of its own with these subgroup-broadcast and packing policies.
fn gpu_with(subgroup_a: &str, pack_b: &str) -> Gpu {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[
        ("subgroup_broadcast", subgroup_a),
        ("matmul_pack_b", pack_b),
    ]));
    gpu
}

/// Whether the device can run the twins at all: subgroups of at least 8 lanes.
fn device_can(gpu: &Gpu) -> bool {
    gpu.features().subgroups && gpu.adapter().subgroup_min_size >= 8
}

/// F32_ACCUM for the short sums, eight times it for K = 4096 (f32 rounding grows with the length).
fn tolerance(k: usize) -> Tolerance {
    let scale = if k > 1000 { 8.0 } else { 1.0 };
    Tolerance {
        abs: F32_ACCUM.abs * scale,
        rel: F32_ACCUM.rel * scale,
    }
}

/// Panics naming `what` and the first element whose bits differ (or the lengths).
fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} against {}", got[i], want[i]);
    }
}

/// Batch dims of A and of B, then M, K, N.
type Case = (&'static [usize], &'static [usize], usize, usize, usize);

/// Odd M (not a multiple of the 8-row groups nor of the 32-row tile), N off every column block,
/// a batch with B broadcast over its outer axis, one row past a row group, and a long K over few
/// tiles (split-K). M > 8 throughout: fewer rows take the 8 × 8 tile (`MatmulKernel::for_rows`).
const CASES: [Case; 6] = [
    (&[], &[], 37, 12, 36),
    (&[], &[], 70, 20, 100),
    (&[2, 3], &[3], 9, 16, 68),
    (&[], &[], 17, 8, 40),
    (&[3], &[3], 33, 8, 132),
    (&[], &[], 13, 4096, 8),
];

/// `op_a(a) · op_b(b)` (+ bias) on `gpu` with `kernel`, its values and the kernels that ran.
fn run(
    gpu: &Gpu,
    kernel: MatmulKernel,
    (a, b, bias): (&Tensor, &Tensor, Option<&Tensor>),
    (ta, tb): (bool, bool),
) -> (Vec<f32>, Vec<String>) {
    let (out, kernels) = ran(gpu, || match bias {
        Some(bias) => ops::linear_with(a, b, Some(bias), kernel),
        None => ops::matmul_with(a, b, ta, tb, kernel),
    });
    (out.unwrap().to_vec().unwrap(), kernels)
}

#[test]
fn twins_match_the_reference_and_the_entries_they_replace_bit_for_bit() {
    let mut rng = Rng::new(61);
    for pack in ["never", "always"] {
        let twins = gpu_with("always", pack);
        let entries = gpu_with("never", pack);
        assert!(
            device_can(&twins),
            "the test adapter must have subgroups of 8 lanes or more (lavapipe: 8)"
        );
        for tile in TALL_TILES {
            let kernel = MatmulKernel::from_name(tile).unwrap();
            for &(ba, bb, m, k, n) in &CASES {
                // Plain operands, B stored [N, K] (the `_tb` form, never packed), A stored
                // [K, M] (the `_ta` entry, no twin: the rest of the product is unchanged; M
                // rounded up to a multiple of 4, which it reads in place) and the bias form
                // (unbatched products only: a linear layer's weight is one matrix).
                let forms = [
                    (false, false, false),
                    (false, true, false),
                    (true, false, false),
                    (false, false, true),
                ];
                for (ta, tb, with_bias) in forms {
                    if with_bias && (!ba.is_empty() || !bb.is_empty()) {
                        continue;
                    }
                    let m = if ta { m.next_multiple_of(4) } else { m };
                    let what = format!(
                        "{tile} pack {pack} ta {ta} tb {tb} bias {with_bias} a{ba:?} b{bb:?} \
                         M{m} K{k} N{n}"
                    );
                    let a_dims = if ta { [k, m] } else { [m, k] };
                    let a_shape: Vec<usize> = ba.iter().copied().chain(a_dims).collect();
                    let b_dims = if tb { [n, k] } else { [k, n] };
                    let b_shape: Vec<usize> = bb.iter().copied().chain(b_dims).collect();
                    let (a, ta_twins) = random_pair(&twins, &mut rng, &a_shape, -1.0, 1.0);
                    let (b, tb_twins) = random_pair(&twins, &mut rng, &b_shape, -1.0, 1.0);
                    let (bias, tbias_twins) = random_pair(&twins, &mut rng, &[n], -1.0, 1.0);
                    let on = |gpu: &Gpu, t: &Tensor| {
                        Tensor::from_slice(gpu, &t.to_vec().unwrap(), t.shape()).unwrap()
                    };
                    let (ta_e, tb_e, tbias_e) = (
                        on(&entries, &ta_twins),
                        on(&entries, &tb_twins),
                        on(&entries, &tbias_twins),
                    );
                    let bias_of = |t| with_bias.then_some(t);
                    let (got, kernels) = run(
                        &twins,
                        kernel,
                        (&ta_twins, &tb_twins, bias_of(&tbias_twins)),
                        (ta, tb),
                    );
                    assert_eq!(
                        kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
                        !ta,
                        "{what}: {kernels:?}"
                    );
                    let (want, kernels) = run(
                        &entries,
                        kernel,
                        (&ta_e, &tb_e, bias_of(&tbias_e)),
                        (ta, tb),
                    );
                    assert!(
                        !kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
                        "{what}: {kernels:?}"
                    );
                    assert_same_bits(&got, &want, &what);
                    let product = refmm::matmul(&a, &b, ta, tb);
                    let reference: Vec<f64> = product
                        .data
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v + if with_bias { bias.data[i % n] } else { 0.0 })
                        .collect();
                    assert_close(&what, &got, &reference, tolerance(k));
                }
            }
        }
    }
}

/// Forward and both gradients of `a · b` on `gpu` with the 8-lane tall tile, as host vectors.
fn product_and_grads(
    gpu: &Gpu,
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    g: &[f32],
) -> [Vec<f32>; 3] {
    let kernel = MatmulKernel::from_name("vec4_32x4_w8").unwrap();
    let ta = Tensor::from_slice(gpu, a, &[m, k])
        .unwrap()
        .requires_grad_(true);
    let tb = Tensor::from_slice(gpu, b, &[k, n])
        .unwrap()
        .requires_grad_(true);
    let out = ops::matmul_with(&ta, &tb, false, false, kernel).unwrap();
    let grads = out
        .backward_with(&Tensor::from_slice(gpu, g, out.shape()).unwrap())
        .unwrap();
    [
        out.to_vec().unwrap(),
        grads.get(&ta).unwrap().to_vec().unwrap(),
        grads.get(&tb).unwrap().to_vec().unwrap(),
    ]
}

#[test]
fn gradients_through_the_twins_are_the_entries_gradients_bit_for_bit() {
    let twins = gpu_with("always", "auto");
    let entries = gpu_with("never", "auto");
    let mut rng = Rng::new(67);
    let (m, k, n) = (72, 40, 52);
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let g = rng.vec_uniform(m * n, -1.0, 1.0);
    // The input gradient G·Bᵀ reads B transposed (the `_tb` twin); the weight gradient Aᵀ·G
    // reads A transposed (`_ta`, no twin: one measured, not faster).
    let (got, kernels) = ran(&twins, || product_and_grads(&twins, &a, &b, (m, k, n), &g));
    for name in [
        "matmul_vec4_sga::matmul_vec4_32x4_w8_sga",
        "matmul_vec4_sga::matmul_vec4_tb_32x4_w8_sga",
        "matmul_vec4::matmul_vec4_ta_32x4_w8",
    ] {
        assert!(kernels.contains(&name.to_string()), "{name}: {kernels:?}");
    }
    let want = product_and_grads(&entries, &a, &b, (m, k, n), &g);
    for (i, part) in ["product", "grad a", "grad b"].iter().enumerate() {
        assert_same_bits(&got[i], &want[i], part);
    }
}

#[test]
fn auto_runs_the_twins_on_cpu_adapters_and_never_runs_none() {
    let mut rng = Rng::new(71);
    let kernel = MatmulKernel::from_name("vec4_32x4_w8").unwrap();
    for policy in ["auto", "never"] {
        let gpu = gpu_with(policy, "auto");
        let cpu = gpu.adapter().device_type == wgpu::DeviceType::Cpu;
        let expected = policy == "auto" && cpu && device_can(&gpu);
        let a = Tensor::from_slice(&gpu, &rng.vec_uniform(40 * 16, -1.0, 1.0), &[40, 16]).unwrap();
        let b = Tensor::from_slice(&gpu, &rng.vec_uniform(16 * 24, -1.0, 1.0), &[16, 24]).unwrap();
        let (out, kernels) = ran(&gpu, || ops::matmul_with(&a, &b, false, false, kernel));
        out.unwrap();
        assert_eq!(
            kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
            expected,
            "{policy} on {:?}: {kernels:?}",
            gpu.adapter().device_type
        );
    }
}

#[test]
fn other_tiles_and_an_unknown_policy() {
    let gpu = gpu_with("always", "auto");
    let mut rng = Rng::new(73);
    let a = Tensor::from_slice(&gpu, &rng.vec_uniform(64 * 32, -1.0, 1.0), &[64, 32]).unwrap();
    let b = Tensor::from_slice(&gpu, &rng.vec_uniform(32 * 64, -1.0, 1.0), &[32, 64]).unwrap();
    for name in [
        "vec4_8x4",
        "vec4_16x8_w8",
        "vec4_32x4_w8_sa128",
        "vec4_16x2",
    ] {
        let kernel = MatmulKernel::from_name(name).unwrap();
        let (out, kernels) = ran(&gpu, || ops::matmul_with(&a, &b, false, false, kernel));
        out.unwrap();
        assert!(
            !kernels.iter().any(|k| k.starts_with(SGA_SHADER)),
            "{name}: {kernels:?}"
        );
    }
    let gpu = gpu_with("sometimes", "auto");
    let kernel = MatmulKernel::from_name("vec4_32x4_w8").unwrap();
    let a = Tensor::zeros(&gpu, &[12, 12]).unwrap();
    let err = ops::matmul_with(&a, &a, false, false, kernel)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sometimes") && err.contains("always") && err.contains("never"),
        "{err}"
    );
}
