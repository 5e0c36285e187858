//! Segmentation smoke job: a [`UNet3d`] trained with AdamW on freshly drawn synthetic sphere
//! volumes (`data::spheres`), scored by foreground Dice on held-out volumes from another seed.
//! `examples/unet_spheres.rs` runs the full job; `tests/unet_spheres.rs` a shortened one.
//!
//! Loss per step, nnU-Net's cross-entropy + soft Dice over the batch (V = N·D·H·W voxels):
//!   L = −(1/V) Σ_v log q_v[label_v]  +  λ·(1 − (2·Σ_v q_v[1]·t_v + s) / (Σ_v q_v[1] + Σ_v t_v + s)),
//! q_v = softmax(logits_v) over the K = 2 classes, t_v = [label_v = 1], s = 1e-5, λ =
//! `dice_weight` (the Dice term pushes the small balls, whose boundary voxels cross-entropy
//! weighs little), with a new batch of N volumes every step (the training stream never repeats a volume) and
//! nnU-Net's poly learning-rate decay lr_t = lr·(1 − t/T)^0.9.

use crate::data::spheres::{sphere_batch, SphereConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::infer::{argmax_classes, DiceCounts};
use crate::models::{UNet3d, UNet3dConfig};
use crate::nn::Module;
use crate::ops;
use crate::optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, PolyDecay};
use crate::tensor::Tensor;
use crate::util::Rng;

/// Smoothing s of the soft Dice term (nnU-Net's value).
const DICE_SMOOTH: f32 = 1e-5;

/// Data, model and optimisation settings of a run.
#[derive(Clone, Debug)]
pub struct SpheresConfig {
    pub volume: SphereConfig,
    pub unet: UNet3dConfig,
    /// Volumes per step.
    pub batch: usize,
    pub steps: usize,
    /// Peak AdamW learning rate (poly-decayed over `steps`).
    pub lr: f64,
    pub weight_decay: f64,
    /// λ, the weight of the soft Dice term (0: cross-entropy alone).
    pub dice_weight: f32,
    /// Seeds the initialisation and the training stream.
    pub seed: u64,
    /// Stop (the default) or skip a step whose loss is not finite.
    pub on_non_finite: crate::optim::OnNonFinite,
}

impl Default for SpheresConfig {
    fn default() -> Self {
        SpheresConfig {
            volume: SphereConfig::default(),
            unet: UNet3dConfig::default(),
            batch: 2,
            steps: 500,
            lr: 1e-2,
            weight_decay: 1e-4,
            dice_weight: 1.0,
            seed: 0,
            on_non_finite: crate::optim::OnNonFinite::Stop,
        }
    }
}

/// A trained model and its loss per step.
pub struct SpheresRun {
    pub model: UNet3d,
    pub losses: Vec<f32>,
}

/// Foreground Dice over held-out volumes.
#[derive(Clone, Debug, PartialEq)]
pub struct DiceReport {
    /// Dice of each volume, in generation order.
    pub per_volume: Vec<f64>,
    /// Mean of `per_volume`.
    pub mean: f64,
    /// Dice of the pooled counts (all volumes as one).
    pub pooled: f64,
}

/// The image of a batch as the network's input tensor `[N, D, H, W, 1]`.
fn input(gpu: &Gpu, cfg: &SphereConfig, n: usize, image: &[f32]) -> Result<Tensor> {
    let [d, h, w] = cfg.size;
    Tensor::from_slice(gpu, image, &[n, d, h, w, 1])
}

/// Train for `cfg.steps` steps, calling `on_step(step, loss)` after each.
pub fn train_unet_spheres(
    gpu: &Gpu,
    cfg: &SpheresConfig,
    mut on_step: impl FnMut(usize, f32),
) -> Result<SpheresRun> {
    if cfg.unet.classes != 2 || cfg.unet.in_channels != 1 {
        return Err(Error::invalid(
            "train_unet_spheres",
            "a U-Net with 1 input channel and 2 classes",
            format!("{} in, {} classes", cfg.unet.in_channels, cfg.unet.classes),
        ));
    }
    let mut rng = Rng::new(cfg.seed);
    let mut data_rng = rng.fork(1);
    let model = UNet3d::new(gpu, &mut rng, cfg.unet.clone())?;
    let params = model.parameter_tensors();
    let mut opt = AdamW::new(
        ParamGroup::split_decay(&params),
        AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let schedule = PolyDecay::nnunet(cfg.lr, cfg.steps.max(1) as u64)?;
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        let (image, labels) = sphere_batch(&cfg.volume, cfg.batch, &mut data_rng)?;
        let x = input(gpu, &cfg.volume, cfg.batch, &image)?;
        let logits = model.forward(&x)?; // [N, D, H, W, 2]
        let rows = logits.reshape(&[labels.len(), 2])?; // [V, 2], one row per voxel
        let mut loss = ops::cross_entropy_labels(&rows, &labels)?;
        if cfg.dice_weight != 0.0 {
            let foreground = ops::softmax(&rows)?.slice(-1, 1, 1)?; // [V, 1]
            let target: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let target = Tensor::from_slice(gpu, &target, foreground.shape())?;
            let dice = ops::soft_dice_loss(&foreground, &target, DICE_SMOOTH)?;
            loss = ops::add(&loss, &ops::scale(&dice, cfg.dice_weight)?)?;
        }
        let grads = loss.backward()?;
        // Read the loss (logged anyway) before the step, so a NaN never reaches the weights.
        let value = loss.to_scalar()?;
        let name = "train_unet_spheres";
        if !crate::optim::check_step(name, "loss", step as u64, value, cfg.on_non_finite)? {
            continue;
        }
        opt.set_lr_all(schedule.at(step as u64))?;
        opt.step(&grads)?;
        on_step(step, value);
        losses.push(value);
    }
    Ok(SpheresRun { model, losses })
}

/// Foreground (class 1) Dice of `model` on `volumes` volumes drawn with `seed`, one volume per
/// forward pass, without recording.
pub fn evaluate_dice(
    gpu: &Gpu,
    model: &UNet3d,
    volume: &SphereConfig,
    volumes: usize,
    seed: u64,
) -> Result<DiceReport> {
    if volumes == 0 {
        return Err(Error::invalid("evaluate_dice", "at least one volume", 0));
    }
    let mut rng = Rng::new(seed);
    let mut per_volume = Vec::with_capacity(volumes);
    let mut pooled = DiceCounts::default();
    for _ in 0..volumes {
        let (image, labels) = sphere_batch(volume, 1, &mut rng)?;
        let logits = gpu.no_grad(|| model.forward(&input(gpu, volume, 1, &image)?))?;
        let predicted = argmax_classes(&logits.to_vec()?, model.config.classes)?;
        let counts = DiceCounts::of(&predicted, &labels, 1)?;
        per_volume.push(counts.value());
        pooled.add(counts);
    }
    Ok(DiceReport {
        mean: per_volume.iter().sum::<f64>() / volumes as f64,
        per_volume,
        pooled: pooled.value(),
    })
}
