//! The CADS step against PyTorch (the spec test), state loading by the authors' names, the
//! last-layer freeze, and loss scaling in f32.
//!
//! `scripts/make_cads_step_golden.py` (PyTorch, run by hand) implements the loss, centering,
//! clipping, AdamW and EMA from ../shared/CADS.md on a small student/teacher with the authors'
//! names, and wrote the initial student and the results of two steps to tests/data/cads_step/.
//! Here the student loads strictly by name, the teacher copies it, and two `CadsTrainer::step`s
//! must reproduce every loss term, the center, the gradients, the updated student and the EMA
//! teacher within float32 tolerance.
//!
//! Also: student/teacher state loading both ways by the authors' names, the last-layer freeze,
//! and `loss_scale` in f32 (no weight changes, the scale is checkpointed). The schedules and
//! presets are in tests/pretrain_schedules.rs; the tiny run on the phantom and the paper-scale
//! step in tests/pretrain_trainer_runs.rs.

mod common;

use cads::autograd::Gradients;
use cads::models::pvt::{Modality, PvtConfig};
use cads::models::DinoHeadConfig;
use cads::nn::{self, LoadOptions, Module};
use cads::pretrain::{CadsConfig, CadsModel, CadsTrainer, StepInput};
use cads::util::{Rng, Tolerance};
use cads::Tensor;
use common::assert_close;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cads_step");
const B: usize = 2;
const VOLUME: [usize; 5] = [B, 16, 32, 32, 1];
const IMAGE: [usize; 4] = [B, 32, 32, 1];

/// The config of make_cads_step_golden.py.
fn golden_config() -> CadsConfig {
    CadsConfig {
        encoder: PvtConfig {
            in_channels: 1,
            stem_channels: 8,
            embed_dims: [8, 16, 16, 24],
            heads: [1, 2, 2, 3],
            mlp_ratios: [2, 2, 2, 2],
            depths: [1, 1, 1, 1],
            sr_ratios: [4, 2, 2, 1],
            drop_path_rate: 0.0,
            with_image_path: true,
            seed: 5,
        },
        head: DinoHeadConfig {
            hidden_dim: 32,
            bottleneck_dim: 16,
            out_dim: 64,
        },
        teacher_drop_path: false,
        teacher_momentum_base: 0.9,
        base_lr: 1e-3,
        lr_reference_batch: 2,
        batch_size: 2,
        min_lr: 2e-6,
        warmup_epochs: 0,
        teacher_temp_warmup_epochs: 50,
        freeze_last_layer_epochs: 0,
        epochs: 2,
        ct_view: [16, 32, 32],
        drr_size: 32,
        ..CadsConfig::cads()
    }
}

/// The script's `wave`: element i = sin(a·i + phase)·cos(b·i).
fn wave(n: usize, a: f64, b: f64, phase: f64) -> Vec<f32> {
    (0..n)
        .map(|i| ((a * i as f64 + phase).sin() * (b * i as f64).cos()) as f32)
        .collect()
}

fn inputs(gpu: &cads::Gpu) -> StepInput {
    let nv: usize = VOLUME.iter().product();
    let ni: usize = IMAGE.iter().product();
    StepInput {
        x1: Tensor::from_slice(gpu, &wave(nv, 0.731, 0.117, 0.0), &VOLUME).unwrap(),
        x2: Tensor::from_slice(gpu, &wave(nv, 0.377, 0.071, 1.0), &VOLUME).unwrap(),
        drr: Tensor::from_slice(gpu, &wave(ni, 0.193, 0.0517, 0.5), &IMAGE).unwrap(),
    }
}

struct Goldens {
    bytes: Vec<u8>,
}

impl Goldens {
    fn load() -> Goldens {
        Goldens {
            bytes: std::fs::read(format!("{DATA}/goldens.safetensors")).unwrap(),
        }
    }
    fn get(&self, key: &str) -> Vec<f64> {
        let file = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = file.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        bytemuck::pod_collect_to_vec::<u8, f32>(t.data())
            .into_iter()
            .map(f64::from)
            .collect()
    }
}

/// Load the golden student strictly, copy the teacher, set the initial center.
fn golden_model(gpu: &cads::Gpu, trainer_center: Option<&Tensor>) -> CadsModel {
    let model = CadsModel::new(gpu, &golden_config()).unwrap();
    let bytes = std::fs::read(format!("{DATA}/student.safetensors")).unwrap();
    let report = nn::load_safetensors_bytes(
        &model.student,
        &bytes,
        "student.safetensors",
        &LoadOptions::strict(),
    )
    .unwrap();
    assert_eq!(report.loaded.len(), model.student.named_state().len());
    model.teacher.copy_from(&model.student).unwrap();
    if let Some(c) = trainer_center {
        let c0: Vec<f32> = Goldens::load()
            .get("center0")
            .into_iter()
            .map(|v| v as f32)
            .collect();
        c.write(&c0).unwrap();
    }
    model
}

/// A tensor of `module`'s named state in PyTorch layout.
fn pytorch_values(module: &impl Module, name: &str, data: Option<Vec<f32>>) -> Vec<f32> {
    let entry = module
        .named_state()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no state named {name}"));
    let data = data.unwrap_or_else(|| entry.tensor.to_vec().unwrap());
    entry
        .layout
        .to_pytorch(entry.tensor.shape(), &data)
        .unwrap()
}

/// |got − want| ≤ 1e-3·max|want| + 2e-3·|want|: f32 through a deep graph, scaled to the tensor.
fn scaled(want: &[f64]) -> Tolerance {
    let max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    Tolerance {
        abs: 1e-3 * max + 1e-7,
        rel: 2e-3,
    }
}

/// Loss values and the center: f32 sums over K = 64 and a few thousand-term reductions.
const LOSS_TOL: Tolerance = Tolerance {
    abs: 2e-5,
    rel: 2e-5,
};

const GRAD_NAMES: [&str; 12] = [
    "backbone.patch_embed1.proj.0.weight",
    "backbone.patch_embed1.proj_2D.0.weight",
    "backbone.block1.0.attn.sr_2D.weight",
    "backbone.block2.0.mlp.dwconv.dwconv.weight",
    "backbone.block3.0.mlp.fc1.bias",
    "backbone.block4.0.mlp.fc2.weight",
    "backbone.norm4.weight",
    "head.mlp.0.weight",
    "head.last_layer.weight_v",
    "head_1.mlp.4.bias",
    "head_1.last_layer.weight_v",
    "head_3.mlp.2.weight",
];
const TEACHER_NAMES: [&str; 5] = [
    "backbone.patch_embed1.proj.0.weight",
    "backbone.block4.0.mlp.fc2.weight",
    "backbone.norm1.bias",
    "head.mlp.4.weight",
    "head.last_layer.weight_v",
];

#[test]
fn loss_and_gradients_of_the_first_step_match_pytorch() {
    let gpu = common::gpu();
    let golden = Goldens::load();
    let model = golden_model(&gpu, None);
    let loss = cads::pretrain::CadsLoss::new(&gpu, 64, 0.1, 0.9).unwrap();
    let c0: Vec<f32> = golden.get("center0").iter().map(|&v| v as f32).collect();
    loss.center.write(&c0).unwrap();
    let input = inputs(&gpu);
    let x12 = Tensor::concat(&[&input.x1, &input.x2], 0).unwrap();
    let mut rng = Rng::new(0);
    let teacher = gpu
        .no_grad(|| model.teacher.forward(&x12, false, &mut rng))
        .unwrap();
    let student = model
        .student
        .forward(
            &[(&x12, Modality::Volume), (&input.drr, Modality::Image)],
            true,
            &mut rng,
        )
        .unwrap();
    let out = loss
        .forward(&student, &teacher.logits, &teacher.features, 0.04)
        .unwrap();
    let values = out.values.to_vec().unwrap();
    let want = golden.get("step1.losses");
    assert_close("step 1 losses", &values[..5], &want, LOSS_TOL);
    let grads: Gradients = out.total.backward().unwrap();
    for name in GRAD_NAMES {
        let entry = model
            .student
            .named_state()
            .into_iter()
            .find(|e| e.name == name)
            .unwrap();
        let g = grads
            .get(&entry.tensor)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let got = pytorch_values(&model.student, name, Some(g.to_vec().unwrap()));
        let want = golden.get(&format!("grad.{name}"));
        assert_close(&format!("grad {name}"), &got, &want, scaled(&want));
    }
}

#[test]
fn two_steps_match_pytorch_losses_center_adamw_and_ema() {
    let gpu = common::gpu();
    let golden = Goldens::load();
    let config = golden_config();
    let model = CadsModel::new(&gpu, &config).unwrap();
    let mut trainer = CadsTrainer::from_model(&gpu, &config, model, 2).unwrap();
    let loaded = golden_model(&gpu, Some(&trainer.loss.center));
    // Move the golden weights into the trainer's own tensors (the optimizer holds those).
    nn::copy_state(&trainer.model.student, &loaded.student).unwrap();
    nn::copy_state(&trainer.model.teacher, &loaded.teacher).unwrap();
    let input = inputs(&gpu);
    for step in 1..=2 {
        let stats = trainer.step(&input).unwrap();
        let v = stats.values.to_vec().unwrap();
        let want = golden.get(&format!("step{step}.losses"));
        assert_close(&format!("step {step} losses"), &v[..5], &want, LOSS_TOL);
        let want = golden.get(&format!("step{step}.center"));
        assert_close(
            &format!("step {step} center"),
            &trainer.loss.center.to_vec().unwrap(),
            &want,
            LOSS_TOL,
        );
    }
    for name in GRAD_NAMES {
        let got = pytorch_values(&trainer.model.student, name, None);
        let want = golden.get(&format!("student.{name}"));
        // Two AdamW steps move each weight by ~lr = 1e-3: compare to a fraction of that.
        let tol = Tolerance {
            abs: 5e-5,
            rel: 1e-4,
        };
        assert_close(&format!("student {name} after 2 steps"), &got, &want, tol);
    }
    for name in TEACHER_NAMES {
        let got = pytorch_values(&trainer.model.teacher, name, None);
        let want = golden.get(&format!("teacher.{name}"));
        let tol = Tolerance {
            abs: 1e-5,
            rel: 1e-4,
        };
        assert_close(&format!("teacher {name} after 2 steps"), &got, &want, tol);
    }
}

#[test]
fn student_and_teacher_state_load_both_ways_with_the_authors_names() {
    let gpu = common::gpu();
    let model = golden_model(&gpu, None);
    let student_names: Vec<String> = model
        .student
        .named_state()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let teacher_names: Vec<String> = model
        .teacher
        .named_state()
        .into_iter()
        .map(|e| e.name)
        .collect();
    // Student: backbone, head (stage 4), head_1..3, in the wrapper's registration order.
    assert!(student_names[0].starts_with("backbone."));
    let first_of = |p: &str| student_names.iter().position(|n| n.starts_with(p)).unwrap();
    assert!(first_of("head.") < first_of("head_1.") && first_of("head_1.") < first_of("head_3."));
    for n in [
        "head.last_layer.weight_g",
        "head.last_layer.weight_v",
        "head_2.mlp.4.weight",
    ] {
        assert!(student_names.iter().any(|s| s == n), "{n}");
    }
    // Teacher: exactly the student's backbone. and head. names, same order.
    let expected: Vec<&String> = student_names
        .iter()
        .filter(|n| n.starts_with("backbone.") || n.starts_with("head."))
        .collect();
    assert_eq!(teacher_names.iter().collect::<Vec<_>>(), expected);

    // Student file → teacher (the stage 1-3 heads skipped), and teacher file → student (the
    // stage 1-3 heads allowed missing); both then equal by name.
    let student_bytes = nn::to_safetensors_bytes(&model.student).unwrap();
    let config = golden_config();
    let other = CadsModel::new(
        &gpu,
        &CadsConfig {
            seed: 77,
            ..config.clone()
        },
    )
    .unwrap();
    let report = nn::load_safetensors_bytes(
        &other.teacher,
        &student_bytes,
        "student",
        &LoadOptions::strict().skip_prefix("head_"),
    )
    .unwrap();
    assert_eq!(report.loaded.len(), teacher_names.len());
    let teacher_bytes = nn::to_safetensors_bytes(&other.teacher).unwrap();
    let third = CadsModel::new(&gpu, &CadsConfig { seed: 78, ..config }).unwrap();
    nn::load_safetensors_bytes(
        &third.student,
        &teacher_bytes,
        "teacher",
        &LoadOptions::strict().allow_missing("head_"),
    )
    .unwrap();
    for name in TEACHER_NAMES {
        let a = pytorch_values(&model.student, name, None);
        assert_eq!(a, pytorch_values(&other.teacher, name, None), "{name}");
        assert_eq!(a, pytorch_values(&third.student, name, None), "{name}");
    }
}

#[test]
fn a_frozen_last_layer_is_not_updated_and_everything_else_is() {
    let gpu = common::gpu();
    let config = CadsConfig {
        freeze_last_layer_epochs: 1,
        ..golden_config()
    };
    let mut trainer = CadsTrainer::new(&gpu, &config, 2).unwrap();
    let before: Vec<(String, Vec<f32>)> = trainer
        .params
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec().unwrap()))
        .collect();
    let stats = trainer.step(&inputs(&gpu)).unwrap();
    assert!(stats.schedule.last_layer_frozen);
    // lr at iteration 0 with no warm-up is the peak, so every other tensor moves.
    for ((name, old), (_, t)) in before.iter().zip(&trainer.params) {
        let new = t.to_vec().unwrap();
        if name.contains("last_layer") {
            assert_eq!(&new, old, "{name} changed while frozen");
        } else if !(name.starts_with("backbone.block4.0.attn.") || name.ends_with("attn.kv.bias")) {
            assert_ne!(&new, old, "{name} did not move");
        }
    }
    // weight_g is a buffer fixed at 1.
    for e in trainer.model.student.named_state() {
        if e.name.ends_with("weight_g") {
            assert!(
                e.tensor.to_vec().unwrap().iter().all(|&g| g == 1.0),
                "{}",
                e.name
            );
        }
    }
}

/// `loss_scale` in f32: the power-of-two scale changes no weight (nothing overflows), the scaler
/// counts the clean steps, and the engine's checkpoint carries its state into a fresh engine.
#[test]
fn loss_scaling_in_f32_changes_no_weight_and_its_scale_is_checkpointed() {
    use cads::checkpoint::LoadedCheckpoint;
    use cads::pretrain::engine::CadsEngine;
    use cads::pretrain::run::PretrainEngine;
    let gpu = common::gpu();
    let scaled_config = CadsConfig {
        loss_scale: true,
        ..golden_config()
    };
    let mut plain = CadsTrainer::new(&gpu, &golden_config(), 2).unwrap();
    let mut scaled = CadsEngine::new(&gpu, &scaled_config, 2).unwrap();
    let input = inputs(&gpu);
    for _ in 0..2 {
        plain.step(&input).unwrap();
        scaled.trainer.step(&input).unwrap();
    }
    let bits = |m: &dyn Module| -> Vec<(String, Vec<u32>)> {
        m.named_state()
            .iter()
            .map(|e| {
                let v = e.tensor.to_vec().unwrap();
                (e.name.clone(), v.iter().map(|x| x.to_bits()).collect())
            })
            .collect()
    };
    assert!(plain.loss_scaler.is_none());
    assert_eq!(
        bits(&scaled.trainer.model.student),
        bits(&plain.model.student)
    );
    assert_eq!(
        bits(&scaled.trainer.model.teacher),
        bits(&plain.model.teacher)
    );
    let state = scaled
        .trainer
        .loss_scaler
        .as_ref()
        .unwrap()
        .state()
        .unwrap();
    assert_eq!((state.scale, state.growth_tracker), (65536.0, 2));
    let bytes = scaled.checkpoint().unwrap().to_bytes().unwrap();
    let ck = LoadedCheckpoint::from_bytes(bytes, "in memory").unwrap();
    let mut fresh = CadsEngine::new(&gpu, &scaled_config, 2).unwrap();
    fresh.restore(&ck).unwrap();
    let restored = fresh.trainer.loss_scaler.as_ref().unwrap().state().unwrap();
    assert_eq!(restored, state);
}
