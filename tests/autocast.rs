//! Mixed precision, the layer level: `Gpu::autocast(Precision::Mixed)` (the tensor level, casts
//! and the f16 matmul, is tests/mixed_precision.rs).
//!
//! - `Linear` under autocast: gradients against f64 finite differences of the f32 function;
//!   fewer than `MIXED_MIN_ROWS` rows run the f32 path bit for bit;
//! - the policy nests, is restored (also on panic) and is per thread;
//! - a device without SHADER_F16 runs autocast in f32 (bit-identical to no autocast);
//! - a small PVT encoder under autocast close to f32, and checkpointing under autocast.
//!
//! What autocast keeps for backward, and the memory it saves: tests/autocast_memory.rs.
//!
//! Tolerances (u = 2⁻¹¹): a Linear's gradient rounds the upstream gradient, the operand and the
//! result: ≤ 4u·Σ|·||·| (bounds from |A|·|B| per element); whole-encoder values: relative L2
//! 1e-2 (reasoned in the test).

mod common;

use cads::gpu::{AdapterChoice, Precision};
use cads::models::pvt::{Modality, PvtConfig, PvtEncoder};
use cads::nn::{Linear, LinearInit, Module, MIXED_MIN_ROWS};
use cads::ops;
use cads::reference::{gradcheck, matmul as refmm, matmul_f16 as ref16, Array};
use cads::tensor::DType;
use cads::util::{Rng, F32_ACCUM};
use cads::{Gpu, Tensor};
use common::f16_bounds::*;
use common::*;

// ---- Linear under autocast -----------------------------------------------------------------

#[test]
fn linear_under_autocast_matches_finite_differences_of_the_f32_function() {
    // A context of its own: the profile it reads is per context, and tests run in parallel.
    let gpu = fresh_gpu();
    let mut rng = Rng::new(22);
    // The fewest rows that take the f16 product (fewer stay f32: the next test).
    let (rows, cin, cout) = (MIXED_MIN_ROWS, 12, 8);
    let lin = Linear::new(&gpu, cin, cout, true, LinearInit::Torch, &mut rng).unwrap();
    let bias0 = rng.vec_uniform(cout, -0.5, 0.5);
    lin.bias.as_ref().unwrap().write(&bias0).unwrap();
    let lead = [2, rows / 2];
    let (x, xt) = random_param(&gpu, &mut rng, &[lead[0], lead[1], cin], -1.0, 1.0);
    let w = Array::from_f32(&lin.weight.to_vec().unwrap(), &[cin, cout]);
    let (y, ran) = ran(&gpu, || {
        gpu.autocast(Precision::Mixed, || lin.forward(&xt)).unwrap()
    });
    assert!(ran.iter().any(|k| k.starts_with("matmul_f16")), "{ran:?}");
    assert_eq!(gpu.precision(), Precision::F32, "autocast is restored");
    assert_eq!(
        (y.dtype(), y.shape()),
        (DType::F32, &[lead[0], lead[1], cout][..])
    );
    let g = rng.vec_uniform(rows * cout, -1.0, 1.0);
    // Backward outside the autocast closure, as a training step does.
    let grads = y
        .backward_with(&Tensor::from_slice(&gpu, &g, y.shape()).unwrap())
        .unwrap();

    // The exact f32 function L(x, W, b) = Σ g ⊙ (x·W + b), in f64.
    let x2 = Array::new(x.data.clone(), &[rows, cin]);
    let ga = Array::from_f32(&g, &[rows, cout]);
    let loss = |xv: &[f64], wv: &[f64]| -> f64 {
        let y = refmm::matmul(
            &Array::new(xv.to_vec(), &[rows, cin]),
            &Array::new(wv.to_vec(), &[cin, cout]),
            false,
            false,
        );
        let with_bias: Vec<f64> = y
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| v + bias0[i % cout] as f64)
            .collect();
        gradcheck::dot(&with_bias, &ga.data)
    };
    let fd_x = gradcheck::numeric_gradient(|v| loss(v, &w.data), &x2.data, 1e-3);
    let fd_w = gradcheck::numeric_gradient(|v| loss(&x2.data, v), &w.data, 1e-3);
    // Bounds: dX = G·Wᵀ and dW = Xᵀ·G with G and the operand rounded (u each) and the result
    // rounded to f16 (u): 3u + O(u²) of Σ|·||·|, taken as 4u.
    let bx = rounding_bound(&ga, &w, false, true, 4.0 * U);
    let bw = rounding_bound(&x2, &ga, true, false, 4.0 * U);
    for (name, t) in [("x", &xt), ("weight", &lin.weight)] {
        assert_eq!(grads.get(t).unwrap().dtype(), DType::F32, "{name}");
    }
    assert_within(
        "dL/dx",
        &grads.get(&xt).unwrap().to_vec().unwrap(),
        &fd_x,
        &bx,
    );
    assert_within(
        "dL/dW",
        &grads.get(&lin.weight).unwrap().to_vec().unwrap(),
        &fd_w,
        &bw,
    );
    // The bias is added in f32: its gradient is the f32 column sum of G.
    let db: Vec<f64> = (0..cout)
        .map(|j| (0..rows).map(|r| g[r * cout + j] as f64).sum())
        .collect();
    assert_close(
        "dL/db",
        &grads
            .get(lin.bias.as_ref().unwrap())
            .unwrap()
            .to_vec()
            .unwrap(),
        &db,
        F32_ACCUM,
    );
}

/// Below `MIXED_MIN_ROWS` rows a Linear runs its f32 path under autocast: the forward and both
/// gradients are bit for bit those of the f32 policy, no f16 kernel or cast runs, and the tape
/// keeps the f32 input. An f16 input takes the f16 product whatever its rows (the f32 product
/// refuses f16 tensors).
#[test]
fn small_linears_stay_f32_under_autocast() {
    // A context of its own: the profile it reads is per context, and tests run in parallel.
    let gpu = fresh_gpu();
    assert!(
        gpu.features().f16,
        "this test needs SHADER_F16 (lavapipe has it)"
    );
    let mut rng = Rng::new(24);
    let (cin, cout) = (16, 12);
    let lin = Linear::new(&gpu, cin, cout, true, LinearInit::Torch, &mut rng).unwrap();
    for rows in [1, 8, MIXED_MIN_ROWS - 1, MIXED_MIN_ROWS] {
        let xs = rng.vec_uniform(rows * cin, -1.0, 1.0);
        let g = rng.vec_uniform(rows * cout, -1.0, 1.0);
        let run = |precision: Precision| {
            let x = Tensor::parameter(&gpu, &xs, &[rows, cin]).unwrap();
            let (y, ran) = ran(&gpu, || {
                gpu.autocast(precision, || lin.forward(&x)).unwrap()
            });
            let grads = y
                .backward_with(&Tensor::from_slice(&gpu, &g, &[rows, cout]).unwrap())
                .unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
            };
            let values = (
                bits(&y),
                bits(grads.get(&x).unwrap()),
                bits(grads.get(&lin.weight).unwrap()),
            );
            (values, ran)
        };
        let (mixed, ran) = run(Precision::Mixed);
        let (plain, _) = run(Precision::F32);
        let f16_ran = ran
            .iter()
            .any(|k| k.starts_with("matmul_f16") || k.starts_with("cast::"));
        if rows < MIXED_MIN_ROWS {
            assert_eq!(mixed, plain, "{rows} rows: bit-identical to f32");
            assert!(!f16_ran, "{rows} rows: {ran:?}");
        } else {
            assert_ne!(mixed.0, plain.0, "{rows} rows: the f16 product ran");
            assert!(f16_ran, "{rows} rows: {ran:?}");
        }
    }
    // An f16 input with one row: the f16 product, its gradient back in f16.
    let x = Tensor::parameter(&gpu, &rng.vec_uniform(cin, -1.0, 1.0), &[1, cin])
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let (y, ran) = ran(&gpu, || {
        gpu.autocast(Precision::Mixed, || lin.forward(&x)).unwrap()
    });
    assert!(ran.iter().any(|k| k.starts_with("matmul_f16")), "{ran:?}");
    assert_eq!((y.dtype(), y.shape()), (DType::F32, &[1, cout][..]));
}

/// `linear_mixed` with a bias: on the f16 vec4 tile (CPU adapters) the bias is added inside the
/// product (the `_bias` form: no broadcast kernel runs) in workgroups of 16 and of 64; a shape
/// the tile does not take (K not in fours) adds it after the product. Forward against the f64
/// product of the f16-rounded operands plus the bias (only the f32 accumulation differs).
#[test]
fn linear_mixed_adds_its_bias_inside_the_product() {
    // A context of its own: the profile it reads is per context, and tests run in parallel.
    let gpu = fresh_gpu();
    let mut rng = Rng::new(23);
    let kernel = ops::MatmulF16Kernel::chosen(&gpu).unwrap();
    let vec4 = matches!(
        kernel.effective(&gpu).unwrap(),
        ops::MatmulF16Kernel::Vec4(_)
    );
    for (rows, cin, cout) in [(18, 12, 8), (5, 16, 260), (6, 10, 8)] {
        let (x, xt) = random_param(&gpu, &mut rng, &[rows, cin], -1.0, 1.0);
        let (w, wt) = random_param(&gpu, &mut rng, &[cin, cout], -1.0, 1.0);
        let (b, bt) = random_param(&gpu, &mut rng, &[cout], -1.0, 1.0);
        let (y, ran) = ran(&gpu, || ops::linear_mixed(&xt, &wt, Some(&bt)).unwrap());
        let got = y.to_vec().unwrap();
        let mut want = ref16::matmul_f16(&x, &w, false, false);
        for (i, v) in want.data.iter_mut().enumerate() {
            *v += b.data[i % cout];
        }
        let what = format!("linear_mixed {rows}x{cin}→{cout}");
        assert_close(&what, &got, &want.data, F32_ACCUM);
        // The `_bias` form, or its subgroup-broadcast twin (`_bias_sga`) on the 32 × 4 tiles.
        let fused = ran
            .iter()
            .any(|k| k.ends_with("_bias") || k.ends_with("_bias_sga"));
        let broadcast = ran.iter().any(|k| k.starts_with("elementwise::"));
        let takes = vec4 && cin % 4 == 0;
        assert_eq!((fused, broadcast), (takes, !takes), "{what}: {ran:?}");
    }
}

#[test]
fn autocast_nests_restores_and_is_per_thread() {
    let gpu = gpu();
    assert_eq!(gpu.precision(), Precision::F32);
    gpu.autocast(Precision::Mixed, || {
        assert_eq!(gpu.precision(), Precision::Mixed);
        assert_eq!(gpu.mixed_precision(), gpu.features().f16);
        gpu.autocast(Precision::F32, || {
            assert_eq!(gpu.precision(), Precision::F32)
        });
        assert_eq!(gpu.precision(), Precision::Mixed);
        let other = gpu.clone();
        std::thread::spawn(move || assert_eq!(other.precision(), Precision::F32))
            .join()
            .unwrap();
    });
    assert_eq!(gpu.precision(), Precision::F32);
    // Restored when the closure panics too.
    let g2 = gpu.clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        g2.autocast(Precision::Mixed, || panic!("inside"))
    }));
    assert!(caught.is_err());
    assert_eq!(gpu.precision(), Precision::F32);
    // lavapipe (CI) has SHADER_F16, so the f16 path is what the tests above exercised.
    assert!(
        gpu.features().f16,
        "the test adapter should offer SHADER_F16"
    );
}

#[test]
fn without_shader_f16_autocast_runs_the_f32_path() {
    let plain = gpu();
    let gpu = Gpu::with_choice_withholding(&AdapterChoice::from_env(), wgpu::Features::SHADER_F16)
        .map(test_tuning)
        .unwrap_or_else(|e| panic!("GPU test cannot run: {e}"));
    assert!(!gpu.features().f16);
    assert!(plain.features().f16);
    let mut rng = Rng::new(23);
    let lin = Linear::new(&gpu, 16, 12, true, LinearInit::Torch, &mut rng).unwrap();
    let xs = rng.vec_uniform(5 * 16, -1.0, 1.0);
    let g = rng.vec_uniform(5 * 12, -1.0, 1.0);
    let run = |precision: Precision| {
        let x = Tensor::parameter(&gpu, &xs, &[5, 16]).unwrap();
        let y = gpu.autocast(precision, || lin.forward(&x)).unwrap();
        let grads = y
            .backward_with(&Tensor::from_slice(&gpu, &g, &[5, 12]).unwrap())
            .unwrap();
        let bits =
            |t: &Tensor| -> Vec<u32> { t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect() };
        (
            bits(&y),
            bits(grads.get(&x).unwrap()),
            bits(grads.get(&lin.weight).unwrap()),
        )
    };
    assert!(!gpu.mixed_precision());
    assert_eq!(run(Precision::Mixed), run(Precision::F32), "bit-identical");
    // The f16 matmul itself still works there (operands widened, f32 kernels).
    let (a, at) = random_pair(&gpu, &mut rng, &[9, 20], -1.0, 1.0);
    let (b, bt) = random_pair(&gpu, &mut rng, &[20, 7], -1.0, 1.0);
    let c = ops::matmul_f16(
        &at.to_dtype(DType::F16).unwrap(),
        &bt.to_dtype(DType::F16).unwrap(),
        false,
        false,
    )
    .unwrap();
    assert_close(
        "fallback matmul_f16",
        &c.to_vec().unwrap(),
        &ref16::matmul_f16(&a, &b, false, false).data,
        F32_ACCUM,
    );
    gpu.synchronize().unwrap(); // no wgpu error was raised (no f16 shader was built)
}

// ---- a small PVT encoder -----------------------------------------------------------------

fn tiny_config() -> PvtConfig {
    PvtConfig {
        stem_channels: 8,
        embed_dims: [16, 32, 48, 64],
        heads: [1, 2, 3, 4],
        mlp_ratios: [4, 4, 2, 2],
        depths: [1, 1, 1, 1],
        sr_ratios: [4, 2, 1, 1],
        drop_path_rate: 0.0,
        with_image_path: false,
        ..PvtConfig::default()
    }
}

/// Stage outputs, and each parameter's gradient by name.
type StepValues = (Vec<Vec<f32>>, Vec<(String, Vec<f32>)>);

/// Stage outputs and every parameter gradient of one training step (upstream gradient: fixed
/// random tensors on all four stages).
fn encoder_step(gpu: &Gpu, enc: &PvtEncoder, x: &Tensor, precision: Precision) -> StepValues {
    let mut rng = Rng::new(3);
    let out = gpu
        .autocast(precision, || {
            enc.forward(x, Modality::Volume, true, &mut rng)
        })
        .unwrap();
    let mut g = Rng::new(4);
    let mut loss: Option<Tensor> = None;
    for s in &out.stages {
        let up = Tensor::from_slice(gpu, &g.vec_uniform(s.numel(), -1.0, 1.0), s.shape()).unwrap();
        let term = ops::sum_all(&ops::mul(s, &up).unwrap()).unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => ops::add(&l, &term).unwrap(),
        });
    }
    let grads = loss.unwrap().backward().unwrap();
    let mut params = Vec::new();
    enc.parameters("", &mut params);
    let stages = out.stages.iter().map(|s| s.to_vec().unwrap()).collect();
    let grads = params
        .into_iter()
        .filter_map(|(name, p)| grads.get(&p).map(|g| (name, g.to_vec().unwrap())))
        .collect();
    (stages, grads)
}

#[test]
fn tiny_pvt_encoder_under_autocast_is_close_to_f32() {
    let gpu = gpu();
    let enc = PvtEncoder::new(&gpu, tiny_config()).unwrap();
    let x = Tensor::from_slice(
        &gpu,
        &Rng::new(9).vec_uniform(2 * 16 * 32 * 32, -1.0, 1.0),
        &[2, 16, 32, 32, 1],
    )
    .unwrap();
    let (s32, g32) = encoder_step(&gpu, &enc, &x, Precision::F32);
    let (s16, g16) = encoder_step(&gpu, &enc, &x, Precision::Mixed);
    // Every Linear rounds its operands to f16 (u = 4.9e-4 each) and the backward rounds the
    // upstream gradient and the results again; through ~4 linears per block, 4 blocks, LayerNorms
    // and attention (which do not grow relative errors much) the measured relative L2 errors are
    // ~1e-3; 1e-2 leaves margin while a wrong kernel, transpose or cast gives O(1).
    let mut worst = (0.0f64, String::new());
    for (i, (a, b)) in s16.iter().zip(&s32).enumerate() {
        let e = relative_l2(a, b);
        assert!(e < 1e-2, "stage {i} output: relative L2 error {e:.2e}");
        if e > worst.0 {
            worst = (e, format!("stage {i}"));
        }
    }
    assert_eq!(g16.len(), g32.len());
    assert!(g32.len() > 20, "every parameter gets a gradient");
    // A gradient that is zero in exact arithmetic (the bias of a conv followed by an instance
    // norm, which removes it) is f32 noise in both runs; such gradients (norm below 1e-6 of the
    // largest) are compared in absolute terms against that scale instead.
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let scale = g32.iter().map(|(_, g)| norm(g)).fold(0.0f64, f64::max);
    for ((name, a), (_, b)) in g16.iter().zip(&g32) {
        if norm(b) < 1e-6 * scale {
            let diff: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            assert!(
                norm(&diff) < 1e-6 * scale,
                "grad {name}: {:.2e}",
                norm(&diff)
            );
            continue;
        }
        let e = relative_l2(a, b);
        assert!(e < 1e-2, "grad {name}: relative L2 error {e:.2e}");
        if e > worst.0 {
            worst = (e, format!("grad {name}"));
        }
    }
    println!(
        "largest relative L2 error, mixed vs f32: {:.2e} ({})",
        worst.0, worst.1
    );
    // Mixed really ran: the values differ from f32.
    assert!(s16[0] != s32[0]);
}

#[test]
fn checkpointed_blocks_recompute_under_the_forward_autocast() {
    let gpu = gpu();
    let mut enc = PvtEncoder::new(&gpu, tiny_config()).unwrap();
    let x = Tensor::from_slice(
        &gpu,
        &Rng::new(10).vec_uniform(2 * 16 * 32 * 32, -1.0, 1.0),
        &[2, 16, 32, 32, 1],
    )
    .unwrap();
    let (_, plain) = encoder_step(&gpu, &enc, &x, Precision::Mixed);
    enc.checkpoint_blocks = true;
    // The backward runs outside the autocast closure: a recompute in f32 would differ at the
    // f16 rounding level (~1e-3), far above the 1e-5 the recompute in mixed precision keeps.
    let (_, ck) = encoder_step(&gpu, &enc, &x, Precision::Mixed);
    for ((name, a), (_, b)) in ck.iter().zip(&plain) {
        let e = relative_l2(a, b);
        assert!(e < 1e-5, "grad {name}: relative L2 error {e:.2e}");
    }
}
