//! Mixed precision as a training option, the library level: `CadsConfig::precision` and
//! `SegTrainConfig::precision` (the command line is tests/precision_cli.rs).
//!
//! - the first CADS step under amp against the f32 step from the same seed: the loss, the stage
//!   losses and the per-tensor gradient norms (the backward of the scaled loss, unscaled) within
//!   stated tolerances, and not bit-identical (the f16 path ran);
//! - a device without SHADER_F16 records and runs f32 for amp, bit-identical to f32;
//! - the first PVT-UNet training step's loss under amp against f32, and the precision in the
//!   epoch metrics;
//! - the configs' JSON: `"precision": "amp"` round-trips, configs saved before the field read as
//!   f32, a bad value names the allowed ones;
//! - resume: a precision change is accepted with a note, loss scaling may change with it, not
//!   without it.
//!
//! Tolerances. Under amp every linear layer rounds its two operands to f16 (relative u = 2⁻¹¹
//! each) and accumulates in f32, so each matmul output is off by at most 2u·Σ|a||b| ≈ 1e-3
//! relative where the terms do not cancel; through the encoder (tests/autocast.rs measures a
//! whole PVT encoder within relative L2 1e-2) the logits move by ~1e-3 relative, and the
//! cross-entropy losses (≈ log K ≈ 4–6 nats, a smooth function of logits of size ~1 divided by
//! the temperatures 0.1 / 0.04) by ~1e-3 absolute. We allow 5e-3 relative on the losses
//! (measured: 9e-6 to 1.7e-4). Gradients round the upstream gradient once more (3u per matmul)
//! through every layer below: 2e-2 relative on each per-tensor norm, plus 1e-6 absolute for
//! the biases ahead of a normalisation, whose exact gradient is zero (their f32 norms, ~2e-7,
//! are rounding noise).

mod common;

use cads::gpu::{AdapterChoice, Precision};
use cads::models::dino_head::DinoHeadConfig;
use cads::models::pvt::PvtConfig;
use cads::optim::{LossScaler, LossScalerConfig};
use cads::pretrain::resume::check_resume;
use cads::pretrain::{CadsConfig, CadsTrainer, StepInput};
use cads::segment::config::SegTrainConfig;
use cads::util::Rng;
use cads::{Gpu, Tensor};

/// Relative tolerance on the first-step losses (see the module docs).
const LOSS_REL: f64 = 5e-3;
/// Relative tolerance on the per-tensor gradient norms.
const GRAD_NORM_REL: f64 = 2e-2;

/// A small CADS recipe: the tests' encoder sizes, K = 64.
fn small_config(precision: Precision, loss_scale: bool) -> CadsConfig {
    CadsConfig {
        encoder: PvtConfig {
            in_channels: 1,
            stem_channels: 8,
            embed_dims: [8, 16, 16, 24],
            heads: [1, 2, 2, 3],
            mlp_ratios: [2, 2, 2, 2],
            depths: [1, 1, 1, 1],
            sr_ratios: [4, 2, 2, 1],
            drop_path_rate: 0.1,
            with_image_path: true,
            seed: 5,
        },
        head: DinoHeadConfig {
            hidden_dim: 32,
            bottleneck_dim: 16,
            out_dim: 64,
        },
        base_lr: 1e-3,
        lr_reference_batch: 2,
        batch_size: 2,
        warmup_epochs: 0,
        epochs: 2,
        ct_view: [16, 32, 32],
        drr_size: 32,
        precision,
        loss_scale,
        ..CadsConfig::cads()
    }
}

fn inputs(gpu: &Gpu) -> StepInput {
    let mut rng = Rng::new(7);
    let nv = 2 * 16 * 32 * 32;
    StepInput {
        x1: Tensor::from_slice(gpu, &rng.vec_normal(nv, 0.5), &[2, 16, 32, 32, 1]).unwrap(),
        x2: Tensor::from_slice(gpu, &rng.vec_normal(nv, 0.5), &[2, 16, 32, 32, 1]).unwrap(),
        drr: Tensor::from_slice(gpu, &rng.vec_normal(2 * 32 * 32, 0.5), &[2, 32, 32, 1]).unwrap(),
    }
}

/// The first step's loss values ([L, L1..L4, …]) and per-tensor gradient norms; with
/// `init_scale`, the loss scaler starts there instead of at 2^16.
fn first_step(
    gpu: &Gpu,
    config: &CadsConfig,
    init_scale: Option<f64>,
) -> (Vec<f32>, Vec<f32>, Precision) {
    let mut trainer = CadsTrainer::new(gpu, config, 4).unwrap();
    if let Some(init_scale) = init_scale {
        let scaler = LossScalerConfig {
            init_scale,
            ..LossScalerConfig::default()
        };
        trainer.loss_scaler = Some(LossScaler::new(gpu, scaler).unwrap());
    }
    let stats = trainer.step(&inputs(gpu)).unwrap();
    let norms = stats.grad_norms.as_ref().unwrap().to_vec().unwrap();
    (
        stats.values.to_vec().unwrap(),
        norms,
        trainer.config.precision,
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

#[test]
fn the_first_cads_step_under_amp_is_close_to_f32_and_not_identical() {
    let gpu = common::gpu();
    assert!(
        gpu.features().f16,
        "the test adapter should offer SHADER_F16"
    );
    let (v32, n32, p32) = first_step(&gpu, &small_config(Precision::F32, false), None);
    // amp with loss scaling, as the command line runs it, but from a scale of 2^4: the DINO
    // heads' gradients reach ~1e2 per element, so from 2^6 on (and at the default 2^16) their f16
    // copies overflow on the first step, which the scaler then skips while it halves the scale
    // (torch's GradScaler does the same); the norms compared here are those of a taken step.
    let (vamp, namp, pamp) = first_step(&gpu, &small_config(Precision::Mixed, true), Some(16.0));
    assert_eq!((p32, pamp), (Precision::F32, Precision::Mixed));
    for (i, name) in ["L", "L1", "L2", "L3", "L4"].iter().enumerate() {
        let (a, b) = (vamp[i] as f64, v32[i] as f64);
        eprintln!("{name}: f32 {b:.7}, amp {a:.7}, relative {:.2e}", rel(a, b));
        assert!(
            a.is_finite() && rel(a, b) <= LOSS_REL,
            "{name}: amp {a} vs f32 {b}"
        );
    }
    assert_ne!(vamp, v32, "amp ran the f32 path on an f16 device");
    assert_eq!(namp.len(), n32.len());
    // The worst relative difference among the norms above 1e-4 (below are the biases ahead
    // of a normalisation, zero in exact arithmetic: their ~2e-7 norms are rounding noise, held
    // by the absolute 1e-6 instead).
    let worst = namp
        .iter()
        .zip(&n32)
        .filter(|(_, &b)| b > 1e-4)
        .map(|(&a, &b)| rel(a as f64, b as f64))
        .fold(0.0, f64::max);
    eprintln!(
        "gradient norms: {} tensors, worst relative (norms > 1e-4) {worst:.2e}",
        n32.len()
    );
    for (i, (&a, &b)) in namp.iter().zip(&n32).enumerate() {
        assert!(
            a.is_finite() && (a - b).abs() as f64 <= GRAD_NORM_REL * b as f64 + 1e-6,
            "gradient norm {i}: amp {a} vs f32 {b}"
        );
    }
}

#[test]
fn without_shader_f16_amp_records_and_runs_f32() {
    let gpu = Gpu::with_choice_withholding(&AdapterChoice::from_env(), wgpu::Features::SHADER_F16)
        .map(common::test_tuning)
        .unwrap_or_else(|e| panic!("GPU test cannot run: {e}"));
    assert_eq!(gpu.supported_precision(Precision::Mixed), Precision::F32);
    let (v32, n32, _) = first_step(&gpu, &small_config(Precision::F32, false), None);
    let (vamp, namp, pamp) = first_step(&gpu, &small_config(Precision::Mixed, false), None);
    assert_eq!(pamp, Precision::F32, "the trainer records what runs");
    assert_eq!((vamp, namp), (v32, n32), "bit-identical to f32");
}

#[test]
fn the_first_segmentation_step_under_amp_is_close_to_f32() {
    use cads::data::preprocess::Patch;
    use cads::data::spheres::{sphere_volume, SphereConfig};
    use cads::nn::Module;
    use cads::segment::augment::TrainingCase;
    use cads::segment::config::{ModelPreset, OptimizerKind};
    use cads::segment::train::{train, RunOptions, SegData};
    let gpu = common::gpu();
    let spheres = |count: usize, seed: u64| -> Vec<TrainingCase> {
        let cfg = SphereConfig {
            size: [16, 32, 32],
            count: (2, 4),
            radius: (3.0, 6.0),
            noise_std: 0.3,
            ..SphereConfig::default()
        };
        let mut rng = Rng::new(seed);
        (0..count)
            .map(|_| {
                let v = sphere_volume(&cfg, &mut rng).unwrap();
                let label = v.mask.iter().map(|&m| m as f32).collect();
                TrainingCase::new(
                    Patch::new(v.image, cfg.size).unwrap(),
                    Patch::new(label, cfg.size).unwrap(),
                    2,
                )
                .unwrap()
            })
            .collect()
    };
    let data = SegData {
        train: spheres(2, 1),
        validation: spheres(1, 2),
        classes: 2,
        class_names: vec!["background".into(), "sphere".into()],
        normalization: None,
        plan: None,
    };
    let run = |gpu: &Gpu, precision: Precision| {
        let cfg = SegTrainConfig {
            model: ModelPreset::Tiny,
            patch: [16, 32, 32],
            batch: 2,
            epochs: 1,
            // One step: the epoch's mean loss is the first step's.
            iterations_per_epoch: 1,
            // SGD: the update is lr × the gradient, so an amp gradient shows in the weights.
            optimizer: OptimizerKind::Sgd,
            workers: 1,
            loss_scale: precision == Precision::Mixed,
            precision,
            ..SegTrainConfig::default()
        };
        let report = train(gpu, &cfg, &data, &RunOptions::default(), |_| {}).unwrap();
        let m = &report.history[0];
        let weights: Vec<u32> = report
            .net
            .named_state()
            .iter()
            .flat_map(|e| e.tensor.to_vec().unwrap())
            .map(f32::to_bits)
            .collect();
        (m.train_loss, m.precision, weights)
    };
    let (l32, p32, w32) = run(&gpu, Precision::F32);
    let (lamp, pamp, wamp) = run(&gpu, Precision::Mixed);
    eprintln!(
        "segmentation first-step loss: f32 {l32:.7}, amp {lamp:.7}, relative {:.2e}",
        rel(lamp, l32)
    );
    assert_eq!((p32, pamp), (Precision::F32, Precision::Mixed));
    assert!(
        lamp.is_finite() && rel(lamp, l32) <= LOSS_REL,
        "amp {lamp} vs f32 {l32}"
    );
    // Only the encoder's linear layers run f16 and the decoder's convolutions f32, so the loss
    // of this tiny network moves by less than its f32 resolution; the step's gradients (in the
    // SGD-updated weights) show that the f16 path ran.
    assert_ne!(wamp, w32, "amp ran the f32 path on an f16 device");

    // Without SHADER_F16: recorded as f32, the f32 run exactly.
    let plain =
        Gpu::with_choice_withholding(&AdapterChoice::from_env(), wgpu::Features::SHADER_F16)
            .map(common::test_tuning)
            .unwrap_or_else(|e| panic!("GPU test cannot run: {e}"));
    let (l, p, w) = run(&plain, Precision::Mixed);
    let (l_f32, _, w_f32) = run(&plain, Precision::F32);
    assert_eq!((l, p), (l_f32, Precision::F32));
    assert!(w == w_f32, "bit-identical weights");
}

#[test]
fn configs_carry_the_precision_through_json_and_name_bad_values() {
    assert_eq!("amp".parse::<Precision>().unwrap(), Precision::Mixed);
    assert_eq!("F32".parse::<Precision>().unwrap(), Precision::F32);
    let err = "bf16".parse::<Precision>().unwrap_err().to_string();
    assert!(err.contains("f32 or amp") && err.contains("bf16"), "{err}");

    let amp = small_config(Precision::Mixed, true);
    let json = amp.to_json().unwrap();
    assert!(json.contains("\"precision\": \"amp\""), "{json}");
    assert_eq!(CadsConfig::from_json(&json).unwrap(), amp);
    // Saved before the field: f32.
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("precision");
    let old = CadsConfig::from_json(&old.to_string()).unwrap();
    assert_eq!(old.precision, Precision::F32);
    let bad = json.replace("\"precision\": \"amp\"", "\"precision\": \"half\"");
    let err = CadsConfig::from_json(&bad).unwrap_err().to_string();
    assert!(err.contains("half") && err.contains("amp"), "{err}");

    let seg = SegTrainConfig {
        precision: Precision::Mixed,
        ..SegTrainConfig::default()
    };
    let text = serde_json::to_string(&seg).unwrap();
    assert!(text.contains("\"precision\":\"amp\""), "{text}");
    assert_eq!(serde_json::from_str::<SegTrainConfig>(&text).unwrap(), seg);
    let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
    old.as_object_mut().unwrap().remove("precision");
    let old: SegTrainConfig = serde_json::from_value(old).unwrap();
    assert_eq!(old.precision, Precision::F32);
}

#[test]
fn resume_may_change_the_precision_and_loss_scaling_with_it() {
    let ipe = 4;
    let f32_run = small_config(Precision::F32, false);
    let amp_run = small_config(Precision::Mixed, true);
    // f32 -> amp (scaling on by default): accepted, both noted.
    let note = check_resume(&f32_run, &amp_run, ipe, 3, false)
        .unwrap()
        .unwrap();
    assert!(
        note.contains("precision f32 -> amp") && note.contains("loss scaling off -> on"),
        "{note}"
    );
    // amp -> f32: the scaler is dropped.
    let note = check_resume(&amp_run, &f32_run, ipe, 3, false)
        .unwrap()
        .unwrap();
    assert!(
        note.contains("precision amp -> f32") && note.contains("loss scaling on -> off"),
        "{note}"
    );
    // A precision change alone.
    let amp_unscaled = small_config(Precision::Mixed, false);
    let note = check_resume(&f32_run, &amp_unscaled, ipe, 3, false)
        .unwrap()
        .unwrap();
    assert!(!note.contains("loss scaling"), "{note}");
    // Loss scaling without a precision change stays part of the recipe.
    let err = check_resume(&amp_run, &amp_unscaled, ipe, 3, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("loss_scale: true -> false") && err.contains("--no-loss-scale"),
        "{err}"
    );
}

/// The engine carries a scaler across a precision change: fresh when the checkpoint has none,
/// dropped when the resumed run does not scale, continued when both scale.
#[test]
fn the_engine_restores_across_precisions() {
    use cads::checkpoint::LoadedCheckpoint;
    use cads::pretrain::engine::CadsEngine;
    use cads::pretrain::run::PretrainEngine;
    let gpu = common::gpu();
    let input = inputs(&gpu);
    // A checkpoint after one step, and its scaler's state.
    let saved = |config: &CadsConfig| {
        let mut e = CadsEngine::new(&gpu, config, 4).unwrap();
        e.trainer.step(&input).unwrap();
        let state = e.trainer.loss_scaler.as_ref().map(|s| s.state().unwrap());
        let bytes = e.checkpoint().unwrap().position(0, 1).to_bytes().unwrap();
        (
            LoadedCheckpoint::from_bytes(bytes, "in memory").unwrap(),
            state,
        )
    };
    let scaler_state = |e: &CadsEngine| e.trainer.loss_scaler.as_ref().map(|s| s.state().unwrap());
    // f32 checkpoint -> amp with scaling: a fresh scaler (2^16, no clean step yet).
    let (ck, none) = saved(&small_config(Precision::F32, false));
    assert!(none.is_none() && ck.loss_scaler_names().is_empty());
    let mut amp = CadsEngine::new(&gpu, &small_config(Precision::Mixed, true), 4).unwrap();
    amp.restore(&ck).unwrap();
    assert_eq!(amp.iteration(), 1);
    let fresh = scaler_state(&amp).unwrap();
    assert_eq!((fresh.scale, fresh.growth_tracker), (65536.0, 0));
    assert!(amp
        .trainer
        .step(&input)
        .unwrap()
        .read()
        .unwrap()
        .loss
        .is_finite());
    // amp checkpoint -> amp continues its scaler; -> f32 drops it.
    let (ck, state) = saved(&small_config(Precision::Mixed, true));
    let state = state.unwrap();
    eprintln!("the scaler after one amp step: {state:?}");
    let mut again = CadsEngine::new(&gpu, &small_config(Precision::Mixed, true), 4).unwrap();
    again.restore(&ck).unwrap();
    assert_eq!(scaler_state(&again), Some(state));
    let mut f32_engine = CadsEngine::new(&gpu, &small_config(Precision::F32, false), 4).unwrap();
    f32_engine.restore(&ck).unwrap();
    assert!(f32_engine.trainer.loss_scaler.is_none());
    assert_eq!(f32_engine.iteration(), 1);
    assert!(f32_engine
        .trainer
        .step(&input)
        .unwrap()
        .read()
        .unwrap()
        .loss
        .is_finite());
}
