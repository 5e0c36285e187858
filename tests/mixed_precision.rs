//! Mixed precision, the tensor level: f16 tensors, the casts, the f16 matmul with f32
//! accumulation (the layer level, autocast, is tests/autocast.rs).
//!
//! - the CPU twins: the cast against roundings worked out by hand, the f16 matmul's backward
//!   against f64 finite differences of the straight-through function it defines;
//! - casts against the `half` crate bit for bit (every f16 pattern, rounding ties, overflow,
//!   subnormals, random f32 patterns), their gradients, the f16 gradient sum;
//! - f32 ops refuse f16 tensors with a typed error naming the kernel;
//! - the f16 matmul (every kernel, all transposes, batches) against src/reference/matmul_f16.rs,
//!   and against the exact f32 product within the bound f16 rounding implies.
//!
//! Tolerances (u = 2⁻¹¹, the unit roundoff of f16):
//! - f16 matmul vs the f64 product of the f16-ROUNDED operands: only f32 accumulation differs,
//!   F32_ACCUM as for the f32 kernels;
//! - its gradients (rounded to f16 on both sides): one f16 ulp (2u relative) from a rounding
//!   boundary the f32 accumulation can cross, plus the accumulation: abs 1e-4, rel 2⁻⁹;
//! - vs the exact product of the f32 operands: each operand carries a relative error ≤ u, so
//!   |ΔC_ij| ≤ (2u + u²)·Σ_k |a_ik||b_kj| (+ 1e-5 for the f32 sums).

mod common;

use cads::ops::{self, F16VecTile, MatmulF16Kernel};
use cads::reference::{cast as refcast, gradcheck, matmul as refmm, matmul_f16 as ref16, Array};
use cads::tensor::DType;
use cads::util::Rng;
use cads::{Error, Gpu, Tensor};
use common::f16_bounds::*;
use common::f16_matmul::*;
use common::*;
use half::f16;

fn f16_tensor(gpu: &Gpu, values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, values, shape)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
}

/// Bits equal, or both NaN (payloads may differ between the CPU's and our NaN quieting).
fn same_f16(got: f16, want: f16) -> bool {
    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
}

// ---- the reference twins (no adapter) -------------------------------------------------------

#[test]
fn reference_cast_rounds_as_worked_out_by_hand() {
    // (f32 value, its f16 rounding) derived by hand, not by the `half` crate the twin uses.
    let two = |e: i32| 2.0f32.powi(e);
    let cases: &[(f32, f32)] = &[
        (1.0 + two(-11), 1.0), // tie between 1 and 1 + 2^-10: to even (1)
        (1.0 + 3.0 * two(-11), 1.0 + two(-9)), // tie: to the even significand 1 + 2·2^-10
        (1.0 + two(-11) + two(-20), 1.0 + two(-10)), // just above the tie: up
        (65504.0, 65504.0),    // largest finite f16
        (65520.0 - two(-8), 65504.0), // one f32 ulp below the overflow tie
        (65520.0, f32::INFINITY), // 65504 + half an ulp: ties away to inf
        (-65520.0, f32::NEG_INFINITY),
        (two(-24), two(-24)),            // smallest subnormal
        (two(-25), 0.0),                 // tie between 0 and 2^-24: to even (0)
        (1.5 * two(-25), two(-24)),      // above the tie: up
        (3.0 * two(-25), two(-23)),      // tie between 2^-24 and 2^-23: to even
        (two(-14) - two(-25), two(-14)), // largest subnormal + half a step: normal
    ];
    for &(x, want) in cases {
        let got = refcast::to_f16(&[x])[0].to_f32();
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{x:e}: got {got:e}, want {want:e}"
        );
    }
    // The sum of two f16 values is computed in f32 and rounded once: above 2048 the f16 spacing
    // is 2, so 2048 + 1 ties to 2048 (even) and 2048 + 3 = 2051 ties to 2052 (even).
    let h = |v: f32| f16::from_f32(v);
    assert_eq!(
        refcast::add_f16(&[h(2048.0), h(2048.0)], &[h(1.0), h(3.0)]),
        vec![h(2048.0), h(2052.0)]
    );
    // Widening is exact and rounding idempotent.
    let x = Array::from_f32(&Rng::new(24).vec_uniform(64, -100.0, 100.0), &[64]);
    let r = refcast::round_to_f16(&x);
    assert_eq!(refcast::round_to_f16(&r).data, r.data);
    let widened = refcast::to_f32(&refcast::to_f16(&r.to_f32()));
    assert!(widened.iter().zip(&r.data).all(|(w, v)| *w as f64 == *v));
}

#[test]
fn reference_f16_matmul_backward_is_the_straight_through_gradient() {
    // The twin's backward differentiates L(A') = <op_a(A')·op_b(B̃), G̃> at A' = Ã (and the same
    // in B), with ~ the rounding to f16, then rounds the result to f16. L is linear in A', so
    // central differences are exact up to f64 rounding, and the two agree within the final
    // rounding: a relative u.
    let mut rng = Rng::new(25);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let (m, k, n) = (3, 5, 4);
        let a = Array::from_f32(&rng.vec_uniform(m * k, -1.0, 1.0), &stored(&[], m, k, ta));
        let b = Array::from_f32(&rng.vec_uniform(k * n, -1.0, 1.0), &stored(&[], k, n, tb));
        let g = Array::from_f32(&rng.vec_uniform(m * n, -1.0, 1.0), &[m, n]);
        let (ga, gb) = ref16::matmul_f16_backward(&a, &b, ta, tb, &g);
        let (ar, br, gr) = (
            refcast::round_to_f16(&a),
            refcast::round_to_f16(&b),
            refcast::round_to_f16(&g),
        );
        let fd_a = gradcheck::numeric_gradient(
            |v| {
                let y = refmm::matmul(&Array::new(v.to_vec(), &ar.shape), &br, ta, tb);
                gradcheck::dot(&y.data, &gr.data)
            },
            &ar.data,
            1e-3,
        );
        let fd_b = gradcheck::numeric_gradient(
            |v| {
                let y = refmm::matmul(&ar, &Array::new(v.to_vec(), &br.shape), ta, tb);
                gradcheck::dot(&y.data, &gr.data)
            },
            &br.data,
            1e-3,
        );
        for (name, got, want) in [("a", &ga.data, &fd_a), ("b", &gb.data, &fd_b)] {
            for (i, (x, w)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (x - w).abs() <= U * w.abs() + 1e-9,
                    "ta {ta} tb {tb} grad {name}[{i}]: twin {x}, finite differences {w}"
                );
            }
        }
    }
}

// ---- casts ---------------------------------------------------------------------------------

#[test]
fn every_f16_widens_to_f32_exactly() {
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    // 65536 elements run eight per invocation, 65532 four, 65535 one word (two).
    check_widening(&all, "cast_f16_to_f32_8");
    check_widening(&all[4..], "cast_f16_to_f32_4");
    check_widening(&all[1..], "cast_f16_to_f32");
}

/// The entry that ran `f` on `gpu` (exactly one launch; `gpu` must be a context no other test
/// thread launches on).
fn the_kernel_of<T>(gpu: &Gpu, f: impl FnOnce() -> T) -> (T, String) {
    gpu.set_profiling(true);
    let out = f();
    gpu.set_profiling(false);
    let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
    assert_eq!(ran.len(), 1, "one launch expected, ran {ran:?}");
    (out, ran[0].clone())
}

fn check_widening(all: &[f16], entry: &str) {
    let gpu = fresh_gpu(); // its own launch profile
    let t = Tensor::from_f16_slice(&gpu, all, &[all.len()]).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    // Download as stored, and widened by the GPU kernel (to_dtype) and by the host (to_vec).
    assert!(t
        .to_f16_vec()
        .unwrap()
        .iter()
        .zip(all)
        .all(|(g, w)| g.to_bits() == w.to_bits()));
    let (wide, ran) = the_kernel_of(&gpu, || t.to_dtype(DType::F32).unwrap());
    assert_eq!(ran, format!("cast::{entry}"));
    assert_eq!(wide.dtype(), DType::F32);
    let want = refcast::to_f32(all);
    for (i, (g, w)) in wide.to_vec().unwrap().iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "f16 bits {i:#06x}: GPU {g:e} ({:#010x}), half {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
    assert_eq!(t.to_vec().unwrap().len(), want.len());
}

#[test]
fn f32_to_f16_rounds_to_nearest_even_like_the_half_crate() {
    let gpu = fresh_gpu(); // its own launch profile
    let mut values: Vec<f32> = Vec::new();
    // Every finite f16 value exactly, the midpoints between neighbours (ties: to even), and the
    // f32 values one ulp either side of each midpoint.
    let finite: Vec<f32> = (0..=u16::MAX)
        .map(f16::from_bits)
        .filter(|h| h.is_finite())
        .map(|h| h.to_f32())
        .collect();
    let mut sorted = finite.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted.dedup();
    for pair in sorted.windows(2) {
        let mid = ((pair[0] as f64 + pair[1] as f64) / 2.0) as f32;
        values.extend([
            mid,
            f32::from_bits(mid.to_bits() + 1),
            f32::from_bits(mid.to_bits().wrapping_sub(1)),
        ]);
    }
    values.extend(&finite);
    // Overflow (65520 = 65504 + half an ulp rounds to inf), specials, f32 subnormals.
    values.extend([
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        1e10,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1e-45,
        -0.0,
        2.0f32.powi(-25),
        2.0f32.powi(-25) * 1.0001,
        2.0f32.powi(-24) * 1.5,
    ]);
    // Random bit patterns over the whole f32 range.
    let mut rng = Rng::new(16);
    values.extend((0..100_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
    // Odd length: the last word's high half is padding; a multiple of 8 or of 4 (not 8): the
    // eight- and four-element kernels.
    if values.len().is_multiple_of(2) {
        values.push(0.333);
    }
    let by8 = values.len() - values.len() % 8;
    check_f32_to_f16(&gpu, &values, "cast_f32_to_f16");
    check_f32_to_f16(&gpu, &values[..by8], "cast_f32_to_f16_8");
    check_f32_to_f16(&gpu, &values[4..by8], "cast_f32_to_f16_4");
}

fn check_f32_to_f16(gpu: &Gpu, values: &[f32], entry: &str) {
    let x = Tensor::from_slice(gpu, values, &[values.len()]).unwrap();
    let (t, ran) = the_kernel_of(gpu, || x.to_dtype(DType::F16).unwrap());
    assert_eq!(ran, format!("cast::{entry}"), "n {}", values.len());
    let got = t.to_f16_vec().unwrap();
    let want = refcast::to_f16(values);
    let bad: Vec<String> = values
        .iter()
        .zip(got.iter().zip(&want))
        .filter(|(_, (g, w))| !same_f16(**g, **w))
        .take(8)
        .map(|(v, (g, w))| format!("{v:e} ({:#010x}): GPU {g} , half {w}", v.to_bits()))
        .collect();
    assert!(
        bad.is_empty(),
        "n {}: {} mismatches, e.g.\n{}",
        values.len(),
        bad.len(),
        bad.join("\n")
    );
    // A round trip of f16-representable values is the identity.
    let back = t.to_dtype(DType::F32).unwrap().to_vec().unwrap();
    for (v, b) in values.iter().zip(&back) {
        if f16::from_f32(*v).to_f32() == *v {
            assert_eq!(v.to_bits(), b.to_bits(), "round trip of {v:e}");
        }
    }
}

#[test]
fn cast_gradients_are_cast_back_and_f16_gradients_sum_in_f16() {
    let gpu = gpu();
    let mut rng = Rng::new(17);
    let n = 37; // odd: exercises the padding half
    let x = Tensor::parameter(&gpu, &rng.vec_uniform(n, -2.0, 2.0), &[n]).unwrap();
    // x (f32) → f16 → used twice, each widened: dL/dx = widen(f16(round(g1) + round(g2))).
    let h = x.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    assert!(h.requires_grad());
    let y1 = h.to_dtype(DType::F32).unwrap();
    let y2 = h.to_dtype(DType::F32).unwrap();
    let g1 = rng.vec_uniform(n, -1.0, 1.0);
    let g2: Vec<f32> = rng
        .vec_uniform(n, -1.0, 1.0)
        .iter()
        .map(|v| v * 1e-3)
        .collect();
    let both = Tensor::from_slice(&gpu, &[g1.clone(), g2.clone()].concat(), &[2, n]).unwrap();
    let y = Tensor::concat(
        &[&y1.reshape(&[1, n]).unwrap(), &y2.reshape(&[1, n]).unwrap()],
        0,
    )
    .unwrap();
    let grads = y.backward_with(&both).unwrap();
    let gh = grads.get(&h);
    assert!(gh.is_none(), "a non-leaf keeps no gradient");
    let gx = grads.get(&x).expect("gradient of x");
    assert_eq!(gx.dtype(), DType::F32, "the f32 leaf gets an f32 gradient");
    let want = refcast::to_f32(&refcast::add_f16(
        &refcast::to_f16(&g1),
        &refcast::to_f16(&g2),
    ));
    let got = gx.to_vec().unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    // An f16 leaf gets an f16 gradient; a seed of the wrong type is refused.
    let leaf = f16_tensor(&gpu, &[1.0, 2.0, 3.0], &[3]).requires_grad_(true);
    let out = leaf.to_dtype(DType::F32).unwrap();
    let g = out
        .backward_with(&Tensor::from_slice(&gpu, &[0.1, 0.2, 0.3], &[3]).unwrap())
        .unwrap();
    let gl = g.get(&leaf).unwrap();
    assert_eq!(gl.dtype(), DType::F16);
    assert_eq!(gl.to_f16_vec().unwrap(), refcast::to_f16(&[0.1, 0.2, 0.3]));
    let leaf2 = f16_tensor(&gpu, &[1.0], &[1]).requires_grad_(true);
    let err = leaf2
        .to_dtype(DType::F32)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
        .backward_with(&Tensor::from_slice(&gpu, &[1.0], &[1]).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
}

#[test]
fn f32_ops_refuse_f16_tensors_naming_the_kernel() {
    let gpu = gpu();
    let mut rng = Rng::new(18);
    let a32 = Tensor::from_slice(&gpu, &rng.vec_uniform(24, -1.0, 1.0), &[2, 3, 4]).unwrap();
    let a16 = a32.to_dtype(DType::F16).unwrap();
    let w = Tensor::from_slice(&gpu, &rng.vec_uniform(16, -1.0, 1.0), &[4, 4]).unwrap();
    let check = |what: &str, r: cads::Result<Tensor>, kernel_hint: &str| {
        let err = r.expect_err(what);
        let msg = err.to_string();
        assert!(matches!(err, Error::DTypeMismatch { .. }), "{what}: {msg}");
        assert!(
            msg.contains("f16") && msg.contains(kernel_hint),
            "{what}: {msg}"
        );
    };
    check("add", ops::add(&a16, &a32), "binary");
    check("add (f16 second)", ops::add(&a32, &a16), "binary");
    check("gelu", ops::gelu(&a16), "unary");
    check("matmul", ops::matmul(&a16, &w, false, false), "matmul");
    check("linear", ops::linear(&a16, &w, None), "matmul");
    check("sum", ops::sum_all(&a16), "sum");
    check("softmax", ops::softmax(&a16), "softmax");
    check("permute", a16.permute(&[2, 1, 0]), "copy_region");
    let ln = cads::nn::LayerNorm::new(&gpu, 4, 1e-5).unwrap();
    check("layer_norm", ln.forward(&a16), "layer_norm");
    // Host-side entry points say which type they expected.
    assert!(matches!(
        a16.write(&[0.0; 24]),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(a16.assign(&a32), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(a32.to_f16_vec(), Err(Error::DTypeMismatch { .. })));
    // And the f16 matmul refuses f32 operands.
    assert!(matches!(
        ops::matmul_f16(&a32, &w, false, false),
        Err(Error::DTypeMismatch { .. })
    ));
    // Reshape is a view and keeps the type; the f16 data is still intact after all that.
    let r = a16.reshape(&[6, 4]).unwrap();
    assert_eq!(r.dtype(), DType::F16);
    assert_eq!(r.to_f16_vec().unwrap(), a16.to_f16_vec().unwrap());
}

// ---- the f16 matmul --------------------------------------------------------------------------

/// Odd and prime extents (the tiles fall back to the naive kernel on some patterns), multiples
/// of 4 past one workgroup of tiles, and long Ks that split (the weight-gradient shape), for the
/// vec4 tiles' narrow (N ≤ 128 for 8 × 4, N ≤ 64 for 16 × 2) and wide workgroups.
const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 13, 5),
    (13, 8, 67),
    (1, 4, 4),
    (8, 12, 68),
    (36, 132, 20),
    (68, 4, 260),
    (12, 4100, 8),
    (8, 2052, 264),
];

#[test]
fn f16_matmul_matches_reference_on_every_kernel_and_transpose() {
    let mut rng = Rng::new(19);
    for &kernel in MatmulF16Kernel::ALL {
        for &size in SIZES {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                check_f16_case(&gpu(), kernel, &mut rng, &[], &[], size, ta, tb);
            }
        }
    }
}

#[test]
fn f16_matmul_batches_and_shared_operands_match_reference() {
    let mut rng = Rng::new(20);
    let batches: &[(&[usize], &[usize])] = &[
        (&[3], &[3]),   // equal batch
        (&[2, 3], &[]), // shared weight: tokens [N, L, C] · w [C, E]
        (&[], &[4]),    // shared left operand
        (&[5], &[1]),   // explicit extent-1 batch
    ];
    for &kernel in MatmulF16Kernel::ALL {
        for (ba, bb) in batches {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                check_f16_case(&gpu(), kernel, &mut rng, ba, bb, (8, 12, 20), ta, tb);
                check_f16_case(&gpu(), kernel, &mut rng, ba, bb, (7, 13, 5), ta, tb);
            }
        }
    }
    // Batch broadcasting across both operands is not supported: a typed error.
    let gpu = gpu();
    let a = f16_tensor(&gpu, &[0.0; 2 * 4 * 4], &[2, 1, 4, 4]);
    let b = f16_tensor(&gpu, &[0.0; 3 * 4 * 4], &[1, 3, 4, 4]);
    let err = ops::matmul_f16(&a, &b, false, false).unwrap_err();
    assert!(err.to_string().contains("batch dims"), "{err}");
}

#[test]
fn f16_matmul_is_within_the_rounding_bound_of_the_f32_product() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    for (m, k, n) in [(64, 256, 96), (33, 100, 17)] {
        let (a, at) = random_pair(&gpu, &mut rng, &[m, k], -1.0, 1.0);
        let (b, bt) = random_pair(&gpu, &mut rng, &[k, n], -1.0, 1.0);
        let got = ops::matmul_f16(
            &at.to_dtype(DType::F16).unwrap(),
            &bt.to_dtype(DType::F16).unwrap(),
            false,
            false,
        )
        .unwrap();
        let want = refmm::matmul(&a, &b, false, false);
        let bound = rounding_bound(&a, &b, false, false, 2.0 * U + U * U);
        assert_within(
            &format!("{m}x{k}x{n}"),
            &got.to_vec().unwrap(),
            &want.data,
            &bound,
        );
        // And the rounding is really there: the f16 product is not the f32 one.
        let exact: Vec<f32> = want.to_f32();
        assert_ne!(got.to_vec().unwrap(), exact);
    }
}

/// Each vec4 tile runs its plain, `_tb` and `_ta` forms where the shape allows, with no copy or
/// cast first (8 × 4 and 16 × 2 in workgroups of 16 up to N = 128 and 64 and of 64 past it,
/// 32 × 4 in workgroups of 8); it hands the other shapes to
/// the 4 × 4 tiles' rules (K % 4 ≠ 0 with a transposed A to the `tn` tile; both transposed, or
/// M % 4 ≠ 0 with a transposed A, to the naive kernel). The entries themselves: their
/// subgroup-broadcast twins are off here (tests/matmul_subgroup_a.rs runs them).
#[test]
fn f16_vec4_kernel_runs_its_forms_and_falls_back_by_shape() {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[("subgroup_broadcast", "never")]));
    let mut rng = Rng::new(22);
    let mut run = |tile: F16VecTile, m: usize, k: usize, n: usize, ta: bool, tb: bool| {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let a = Tensor::from_slice(&gpu, &rng.vec_uniform(m * k, -1.0, 1.0), &a_shape)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let b = Tensor::from_slice(&gpu, &rng.vec_uniform(k * n, -1.0, 1.0), &b_shape)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        gpu.synchronize().unwrap();
        gpu.set_profiling(true);
        ops::matmul_f16_with(&a, &b, ta, tb, MatmulF16Kernel::Vec4(tile)).unwrap();
        gpu.synchronize().unwrap();
        gpu.set_profiling(false);
        gpu.take_profile()
            .into_iter()
            .map(|t| t.kernel)
            .collect::<Vec<_>>()
    };
    let one = |entry: &str| vec![entry.to_string()];
    for tile in F16VecTile::ALL {
        for n in [8, 64, 68, 128, 132, 256] {
            // The tiles of 64 lanes run in workgroups of 16 up to 32 lanes' columns.
            let name = match tile {
                F16VecTile::T8x4 if n <= 128 => "8x4_w16",
                F16VecTile::T8x4 => "8x4",
                F16VecTile::T32x4W8 => "32x4_w8",
                F16VecTile::T32x4W16 => "32x4_w16",
                F16VecTile::T16x2 if n <= 64 => "16x2_w16",
                F16VecTile::T16x2 => "16x2",
            };
            let entry = |form: &str| format!("matmul_f16_vec4::matmul_f16_vec4_{form}{name}");
            for m in [12, 13] {
                assert_eq!(run(tile, m, 16, n, false, false), one(&entry("")));
                assert_eq!(run(tile, m, 16, n, false, true), one(&entry("tb_")));
            }
            assert_eq!(run(tile, 12, 16, n, true, false), one(&entry("ta_")));
        }
        let n = 8;
        assert_eq!(
            run(tile, 12, 14, n, true, false),
            one("matmul_f16::matmul_f16_tn_4x4")
        );
        assert_eq!(
            run(tile, 13, 16, n, true, false),
            one("matmul_f16::matmul_f16_naive")
        );
        assert_eq!(
            run(tile, 12, 16, n, true, true),
            one("matmul_f16::matmul_f16_naive")
        );
    }
}

/// `CADS_KERNEL_MATMUL_F16` names the vec4 tile (an unknown name is an error listing the
/// tiles), and with nothing named the tuner times the three tiles and picks one of them, which
/// a CPU adapter without cooperative matrices then runs.
#[test]
fn the_f16_tile_takes_its_override_and_is_tuned_otherwise() {
    let gpu = fresh_gpu();
    let cpu_tiles = gpu.adapter().device_type == wgpu::DeviceType::Cpu
        && gpu.features().cooperative_matrix.is_none();
    for tile in F16VecTile::ALL {
        gpu.set_tune_settings(memo_tuning(&[("matmul_f16", tile.name())]));
        assert_eq!(F16VecTile::chosen(&gpu).unwrap(), tile);
        if cpu_tiles {
            assert_eq!(
                MatmulF16Kernel::chosen(&gpu).unwrap(),
                MatmulF16Kernel::Vec4(tile)
            );
        }
    }
    gpu.set_tune_settings(memo_tuning(&[("matmul_f16", "f16_vec4_1x1")]));
    let e = F16VecTile::chosen(&gpu).unwrap_err().to_string();
    assert!(
        e.contains("f16_vec4_1x1") && e.contains("f16_vec4_16x2") && e.contains("MATMUL_F16"),
        "{e}"
    );
    gpu.set_tune_settings(memo_tuning(&[]));
    let tile = F16VecTile::chosen(&gpu).unwrap();
    let choice = gpu.remembered_choice("matmul_f16").unwrap();
    assert_eq!(
        (choice.variant.as_str(), choice.source),
        (tile.name(), cads::gpu::ChoiceSource::Measured)
    );
}

/// On a device without `SHADER_F16` nothing is tuned for the f16 tiles (they cannot run there):
/// with no cached or remembered choice, `linear_mixed` and `matmul_f16` run the f32 kernels on
/// the widened operands and agree with the f32 product of the rounded operands.
#[test]
fn without_f16_the_tile_choice_launches_nothing_and_the_f32_path_runs() {
    let choice = cads::gpu::AdapterChoice::from_env();
    let gpu = Gpu::with_choice_withholding(&choice, wgpu::Features::SHADER_F16)
        .map(test_tuning)
        .unwrap_or_else(|e| panic!("GPU test cannot run: {e}"));
    assert!(!gpu.features().f16);
    gpu.set_tune_settings(memo_tuning(&[]));
    assert_eq!(F16VecTile::chosen(&gpu).unwrap(), F16VecTile::T8x4);
    assert!(gpu.remembered_choice("matmul_f16").is_none());
    let mut rng = Rng::new(24);
    let (x, xt) = random_pair(&gpu, &mut rng, &[12, 16], -1.0, 1.0);
    let (w, wt) = random_pair(&gpu, &mut rng, &[16, 8], -1.0, 1.0);
    let y = ops::linear_mixed(&xt, &wt, None).unwrap();
    let want = ref16::matmul_f16(&x, &w, false, false);
    let tol = cads::util::F32_ACCUM;
    assert_close(
        "linear_mixed without f16",
        &y.to_vec().unwrap(),
        &want.data,
        tol,
    );
}
