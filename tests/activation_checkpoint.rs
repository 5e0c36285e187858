//! Activation checkpointing (`autograd::checkpoint`, `nn::checkpoint_module`,
//! `PvtEncoder::checkpoint_blocks`): the same values and gradients as the plain call, random
//! draws replayed, a tensor the function reads without declaring it reported, and less peak
//! memory in the pool where block activations dominate.

mod common;

use cads::autograd::checkpoint;
use cads::models::pvt::{Modality, PvtConfig, PvtEncoder};
use cads::nn::drop_path;
use cads::util::{Rng, Tolerance};
use cads::{ops, Gpu, Tensor};
use common::*;

/// |Δ| ≤ 1e-5·|want| + 1e-5·max|want|: the task's 1e-5 relative, with a floor scaled to the
/// tensor for entries near zero.
fn rel(want: &[f64]) -> Tolerance {
    let max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    Tolerance {
        abs: 1e-5 * max + 1e-12,
        rel: 1e-5,
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_vec().unwrap().into_iter().map(f64::from).collect()
}

/// y = x + DropPath(GELU(x·W), 0.5): two parameters' worth of graph and a random draw.
fn branch(x: &Tensor, w: &Tensor, rng: &mut Rng) -> cads::Result<Tensor> {
    let h = ops::gelu(&ops::matmul(x, w, false, false)?)?;
    ops::add(x, &drop_path(&h, 0.5, true, rng)?)
}

#[test]
fn a_checkpointed_call_gives_the_plain_values_and_gradients() {
    let gpu = gpu();
    let mut data = Rng::new(11);
    let x0 = Tensor::parameter(&gpu, &data.vec_uniform(8 * 6, -1.0, 1.0), &[8, 6]).unwrap();
    let w = Tensor::parameter(&gpu, &data.vec_uniform(6 * 6, -0.5, 0.5), &[6, 6]).unwrap();

    // The input is itself recorded (x = 2·x0), so the gradient must continue past the call.
    let run = |checkpointed: bool| -> (Vec<f64>, Vec<f64>, Vec<f64>, u64) {
        let mut rng = Rng::new(5);
        let x = ops::scale(&x0, 2.0).unwrap();
        let y = if checkpointed {
            let w2 = w.clone();
            checkpoint(&[&x], std::slice::from_ref(&w), &mut rng, move |xs, rng| {
                branch(&xs[0], &w2, rng)
            })
            .unwrap()
        } else {
            branch(&x, &w, &mut rng).unwrap()
        };
        let loss = ops::mean_all(&ops::unary(ops::UnaryOp::Square, &y).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        (
            values(&y),
            values(grads.get(&x0).expect("gradient of x0")),
            values(grads.get(&w).expect("gradient of W")),
            rng.state(),
        )
    };
    let (y_plain, gx_plain, gw_plain, rng_plain) = run(false);
    let (y_ck, gx_ck, gw_ck, rng_ck) = run(true);
    // The generator advanced as by the plain call (the draws were made once, then replayed).
    assert_eq!(rng_plain, rng_ck);
    // Some rows dropped and some kept, so the replay of the draws is really tested.
    assert!(gx_plain.iter().any(|v| v.abs() > 1e-6));
    let y_ck32: Vec<f32> = y_ck.iter().map(|&v| v as f32).collect();
    assert_close("y", &y_ck32, &y_plain, rel(&y_plain));
    let gx: Vec<f32> = gx_ck.iter().map(|&v| v as f32).collect();
    let gw: Vec<f32> = gw_ck.iter().map(|&v| v as f32).collect();
    assert_close("d/dx0", &gx, &gx_plain, rel(&gx_plain));
    assert_close("d/dW", &gw, &gw_plain, rel(&gw_plain));
}

#[test]
fn a_parameter_read_without_being_declared_is_an_error_not_a_lost_gradient() {
    let gpu = gpu();
    let mut data = Rng::new(12);
    let x = Tensor::parameter(&gpu, &data.vec_uniform(4 * 3, -1.0, 1.0), &[4, 3]).unwrap();
    let w = Tensor::parameter(&gpu, &data.vec_uniform(9, -1.0, 1.0), &[3, 3]).unwrap();
    let w2 = w.clone();
    let mut rng = Rng::new(0);
    let y = checkpoint(&[&x], &[], &mut rng, move |xs, _| {
        ops::matmul(&xs[0], &w2, false, false)
    })
    .unwrap();
    let err = ops::mean_all(&y).unwrap().backward().unwrap_err();
    assert!(
        err.to_string().contains("neither inputs nor params"),
        "{err}"
    );
    // And a tensor listed twice is refused up front.
    let err = checkpoint(&[&x], std::slice::from_ref(&x), &mut rng, |xs, _| {
        Ok(xs[0].clone())
    })
    .unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
}

/// A small encoder with several blocks per stage and drop path on, so checkpointing replays
/// draws in every block.
fn encoder_config() -> PvtConfig {
    PvtConfig {
        stem_channels: 8,
        embed_dims: [8, 16, 24, 32],
        heads: [1, 2, 3, 4],
        mlp_ratios: [4, 4, 2, 2],
        depths: [2, 2, 1, 1],
        sr_ratios: [4, 2, 1, 1],
        drop_path_rate: 0.3,
        ..PvtConfig::default()
    }
}

/// Forward (training, drop path drawn from seed 3) and backward of Σ_s mean(stage_s²); the
/// gradients by parameter name.
fn encoder_gradients(enc: &PvtEncoder, x: &Tensor, modality: Modality) -> Vec<(String, Vec<f64>)> {
    let mut rng = Rng::new(3);
    let out = enc.forward(x, modality, true, &mut rng).unwrap();
    let mut loss = ops::mean_all(&out.skip).unwrap();
    for s in &out.stages {
        let sq = ops::unary(ops::UnaryOp::Square, s).unwrap();
        loss = ops::add(&loss, &ops::mean_all(&sq).unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    enc.named_parameters(Some(modality))
        .into_iter()
        .map(|(name, p)| {
            let g = grads
                .get(&p)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            (name, values(g))
        })
        .collect()
}

#[test]
fn checkpointed_encoder_blocks_give_the_same_gradients() {
    let gpu = gpu();
    let mut enc = PvtEncoder::new(&gpu, encoder_config()).unwrap();
    let mut data = Rng::new(4);
    for (modality, shape) in [
        (Modality::Volume, vec![2, 16, 32, 32, 1]),
        (Modality::Image, vec![2, 32, 32, 1]),
    ] {
        let n: usize = shape.iter().product();
        let x = Tensor::from_slice(&gpu, &data.vec_uniform(n, -1.0, 1.0), &shape).unwrap();
        enc.checkpoint_blocks = false;
        let plain = encoder_gradients(&enc, &x, modality);
        enc.checkpoint_blocks = true;
        let ck = encoder_gradients(&enc, &x, modality);
        assert_eq!(plain.len(), ck.len());
        for ((name, want), (_, got)) in plain.iter().zip(&ck) {
            let got: Vec<f32> = got.iter().map(|&v| v as f32).collect();
            assert_close(&format!("{modality:?} {name}"), &got, want, rel(want));
        }
    }
}

/// Peak pool bytes of one forward + backward on a fresh context.
fn peak_bytes(gpu: &Gpu, checkpointed: bool, shape: &[usize]) -> u64 {
    // Four stage-1 blocks: since the stem keeps no activation of its own beyond its outputs
    // (ops::instance_norm_leaky_relu), two blocks' activations no longer set the plain peak.
    let cfg = PvtConfig {
        depths: [4, 2, 1, 1],
        ..encoder_config()
    };
    let mut enc = PvtEncoder::new(gpu, cfg).unwrap();
    enc.checkpoint_blocks = checkpointed;
    let n: usize = shape.iter().product();
    let x = Tensor::from_slice(gpu, &Rng::new(9).vec_uniform(n, -1.0, 1.0), shape).unwrap();
    gpu.synchronize().unwrap();
    gpu.reset_peak_memory();
    let grads = encoder_gradients(&enc, &x, Modality::Volume);
    assert!(!grads.is_empty());
    gpu.pool_stats().peak_bytes
}

#[test]
fn checkpointed_blocks_lower_the_peak_memory() {
    // Input 2 × 32 × 64 × 64: stage-1 blocks hold 2·16·16·16 = 8192 tokens, whose MLP hidden
    // (4·8 channels), attention and norm activations dominate the graph.
    let shape = [2, 32, 64, 64, 1];
    let plain = peak_bytes(&fresh_gpu(), false, &shape);
    let checkpointed = peak_bytes(&fresh_gpu(), true, &shape);
    println!(
        "peak pool bytes, encoder forward + backward on {shape:?}: plain {plain}, checkpointed blocks {checkpointed} ({:.1}%)",
        100.0 * checkpointed as f64 / plain as f64
    );
    assert!(
        checkpointed < plain,
        "checkpointed {checkpointed} bytes, plain {plain}"
    );
}
