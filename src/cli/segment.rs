//! `cads segment train|…`: the PVT-UNet recipe of `cads::segment` on the command line.

use std::path::PathBuf;

use cads::dist::DataParallel;
use cads::gpu::{AdapterChoice, Precision};
use cads::segment::config::{ModelPreset, OptimizerKind, SegTrainConfig};
use cads::segment::dataset::SegDataset;
use cads::segment::fingerprint::{fingerprint, SAMPLES_PER_CASE};
use cads::segment::plan::{DeviceBudget, ImageResampling, Plan};
use cads::segment::preprocess::PreprocessCache;
use cads::segment::train::{load_planned_data, train, Progress, RunOptions};
use cads::{Error, Gpu, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SegmentCommand {
    /// Train PVT-UNet (nnU-Net's recipe) on an nnU-Net raw folder or a JSON manifest.
    Train(TrainArgs),
    /// Fingerprint a dataset (spacings, shapes, foreground HU) and write an editable plan.json.
    Plan(super::segment_infer::PlanArgs),
    /// Label maps on each input's own grid from a trained checkpoint (sliding window).
    Predict(super::segment_infer::PredictArgs),
    /// Dice, HD95 (mm) and NSD per case and label between two folders of label maps.
    Evaluate(super::segment_infer::EvaluateArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// nnU-Net raw dataset folder (dataset.json, imagesTr/, labelsTr/) or a JSON manifest.
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder: run.json, metrics.jsonl, curves.png, checkpoint_{latest,best}.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Optimizer steps per epoch (nnU-Net: 250).
    #[arg(long, default_value_t = 250)]
    pub iterations: usize,
    /// Patch D,H,W in voxels, multiples of 16,32,32 (default: the plan's patch).
    #[arg(long, value_parser = parse_patch)]
    pub patch: Option<[usize; 3]>,
    /// Patches per step (default: the plan's batch; under MPI the global batch, split evenly
    /// over the ranks).
    #[arg(long)]
    pub batch: Option<usize>,
    /// The plan (target spacing, CT normalisation, resampling, patch, batch; JSON). Default
    /// OUT/plan.json. A missing file is computed from the dataset's fingerprint and written there
    /// first, so it can be edited and the run repeated.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Preprocessed-case cache, one folder per plan key inside (default OUT/preprocessed; point
    /// several runs at one folder to preprocess once).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Image resampling to the plan's spacing: linear or cubic (B-spline). Overrides the plan's
    /// `image_resampling` for this run (run.json records the plan used).
    #[arg(long)]
    pub image_interp: Option<ImageResampling>,
    /// Device memory for a plan computed here, GiB (as `cads segment plan --gpu-memory-gb`).
    #[arg(long, default_value_t = 8.0)]
    pub gpu_memory_gb: f64,
    /// Initialise the encoder from a CADS teacher (safetensors; `backbone.` or cads checkpoint).
    #[arg(long)]
    pub init_from: Option<String>,
    /// sgd (Nesterov 0.99, poly lr; nnU-Net) or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// Initial learning rate (default: 1e-2 for SGD, 1e-3 for AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Encoder learning rate relative to the decoder's.
    #[arg(long, default_value_t = 1.0)]
    pub encoder_lr_factor: f64,
    /// Epochs with the encoder frozen (no gradient, no update).
    #[arg(long, default_value_t = 0)]
    pub freeze_encoder_epochs: usize,
    /// b1 (the CADS PVTv2-b1 encoder), tiny (tests, CPU adapters) or cads-tiny (the encoder of
    /// `cads pretrain --preset tiny`, for fine-tuning a tiny teacher on a CPU adapter).
    #[arg(long, default_value = "b1")]
    pub model: ModelPreset,
    /// Fraction of cases (or, with one case, of its slices along D) held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Dice pooled over the batch.
    #[arg(long)]
    pub batch_dice: bool,
    /// Train on the full-resolution output only.
    #[arg(long)]
    pub no_deep_supervision: bool,
    /// Dynamic loss scaling (torch GradScaler's: scale 2^16, x2 every 2000 clean steps, x0.5
    /// and the step skipped on an inf/NaN gradient). For low-precision gradients; f32 training
    /// needs none; on by default with --precision amp.
    #[arg(long, conflicts_with = "no_loss_scale")]
    pub loss_scale: bool,
    /// No loss scaling, also with --precision amp (which turns it on by default).
    #[arg(long)]
    pub no_loss_scale: bool,
    /// Arithmetic of the training step and of validation: f32, or amp (automatic mixed
    /// precision: the linear layers multiply f16 operands with f32 accumulation where the adapter
    /// has SHADER_F16; weights and optimizer stay f32; loss scaling on unless --no-loss-scale).
    /// Without SHADER_F16 amp trains in f32 and says so. May change on --resume (noted).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from OUT/checkpoint_latest.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Data-parallel replicas in this process, one device each (the i-th of the equally good
    /// adapters); --batch is then the global batch. Under MPI, launch ranks instead.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
}

fn parse_patch(s: &str) -> std::result::Result<[usize; 3], String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("patch D,H,W: {e}"))?;
    v.try_into()
        .map_err(|v: Vec<usize>| format!("patch D,H,W: three numbers, got {}", v.len()))
}

pub fn run(choice: &AdapterChoice, command: &SegmentCommand) -> Result<()> {
    match command {
        SegmentCommand::Train(a) => run_train(choice, a),
        SegmentCommand::Plan(a) => super::segment_infer::plan(choice, a),
        SegmentCommand::Predict(a) => super::segment_infer::predict(choice, a),
        SegmentCommand::Evaluate(a) => super::segment_infer::evaluate(a),
    }
}

/// The run's plan: `--plan` (default OUT/plan.json) read back, or computed from the dataset's
/// fingerprint and written there when the file does not exist; `--image-interp` overrides.
fn run_plan(gpu: &Gpu, a: &TrainArgs, dataset: &SegDataset) -> Result<Plan> {
    let path = a.plan.clone().unwrap_or_else(|| a.out.join("plan.json"));
    let plan = if path.exists() {
        let mut plan = Plan::load(&path)?;
        out!("plan {} (read)", path.display());
        if let Some(i) = a.image_interp.filter(|&i| i != plan.image_resampling) {
            out!(
                "  image resampling {i:?} for this run (--image-interp; the file says {:?})",
                plan.image_resampling
            );
            plan.image_resampling = i;
        }
        plan
    } else {
        if !(a.gpu_memory_gb.is_finite() && a.gpu_memory_gb > 0.0) {
            return Err(Error::invalid(
                "cads segment train",
                "--gpu-memory-gb > 0",
                a.gpu_memory_gb,
            ));
        }
        let fp = fingerprint(dataset, SAMPLES_PER_CASE)?;
        let bytes = (a.gpu_memory_gb * (1u64 << 30) as f64) as u64;
        let budget = DeviceBudget::from_gpu(gpu, Some(bytes));
        let mut plan = Plan::from_fingerprint(&fp, &dataset.labels, budget)?;
        if let Some(i) = a.image_interp {
            plan.image_resampling = i;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                op: "cads segment train",
                path: dir.display().to_string(),
                source,
            })?;
        }
        plan.save(&path)?;
        out!(
            "plan {} (computed from the fingerprint of {} cases; edit it and rerun to change the preprocessing)",
            path.display(),
            fp.cases.len()
        );
        plan
    };
    out!(
        "  target spacing {:?} mm [D, H, W], images {:?}, labels {:?}, patch {:?} × {}",
        plan.target_spacing_mm,
        plan.image_resampling,
        plan.label_resampling,
        plan.patch,
        plan.batch
    );
    Ok(plan)
}

fn run_train(choice: &AdapterChoice, a: &TrainArgs) -> Result<()> {
    let dp = super::dist::join_job()?;
    if a.devices > 1 {
        return super::dist::run_local(a.devices, &dp, |local| run_train_rank(choice, a, &local));
    }
    let result = run_train_rank(choice, a, &dp);
    super::dist::end_rank(&dp, result)
}

/// One rank's share of `cads segment train` (the whole of it when run alone).
fn run_train_rank(choice: &AdapterChoice, a: &TrainArgs, dp: &Option<DataParallel>) -> Result<()> {
    let root = super::dist::is_root(dp);
    let gpu = Gpu::with_choice(&super::dist::adapter_for(choice, dp))?;
    super::vector_width::announce_hint(&gpu, root);
    let dataset = SegDataset::open(&a.data)?;
    // Rank 0 writes the plan and fills the preprocessed cache first (ranks writing the same files
    // would race); the others then read them, or make their own on a machine of their own.
    if let (Some(d), false) = (dp, root) {
        d.comm.barrier()?;
    }
    let plan = run_plan(&gpu, a, &dataset)?;
    let precision = super::precision::training_precision(&gpu, a.precision, root);
    let cfg = SegTrainConfig {
        model: a.model,
        patch: a.patch.unwrap_or(plan.patch),
        batch: a.batch.unwrap_or(plan.batch),
        epochs: a.epochs,
        iterations_per_epoch: a.iterations,
        optimizer: a.optimizer,
        lr: a.lr,
        encoder_lr_factor: a.encoder_lr_factor,
        freeze_encoder_epochs: a.freeze_encoder_epochs,
        deep_supervision: !a.no_deep_supervision,
        batch_dice: a.batch_dice,
        loss_scale: super::precision::loss_scale(a.loss_scale, a.no_loss_scale, precision),
        precision,
        validation_fraction: a.val_fraction,
        seed: a.seed,
        ..SegTrainConfig::default()
    };
    cfg.validate()?;
    let cache = PreprocessCache::new(
        a.cache
            .clone()
            .unwrap_or_else(|| a.out.join("preprocessed")),
        &plan,
    );
    let t0 = std::time::Instant::now();
    let (data, usage) = load_planned_data(
        &dataset,
        &plan,
        &cache,
        cfg.validation_fraction,
        |id, reused| {
            if !reused {
                eprintln!("preprocessed {id}");
            }
        },
    )?;
    out!(
        "cache {}: {} cases reused, {} preprocessed ({:.1} s)",
        cache.dir().display(),
        usage.reused,
        usage.built,
        t0.elapsed().as_secs_f64()
    );
    if let (Some(d), true) = (dp, root) {
        d.comm.barrier()?;
    }
    if let (Some(line), true) = (super::dist::describe(dp, cfg.batch), root) {
        out!("{line}");
    }
    if root {
        out!(
            "cads segment train on {}: precision {}{}, {} training / {} validation cases, classes {:?}",
            gpu.adapter().name,
            cfg.precision,
            if cfg.loss_scale { ", loss scaling" } else { "" },
            data.train.len(),
            data.validation.len(),
            data.class_names
        );
    }
    let run = RunOptions {
        out: Some(a.out.clone()),
        resume: a.resume,
        init_from: a.init_from.clone(),
        data_parallel: dp.clone(),
        ..RunOptions::default()
    };
    let names = data.class_names.clone();
    let report = train(&gpu, &cfg, &data, &run, |p| match p {
        Progress::Step {
            epoch,
            iteration,
            iterations,
            loss,
            steps_per_second,
        } => {
            let done = (iteration + 1) * 30 / iterations;
            eprint!(
                "\repoch {epoch:4} [{}{}] {}/{iterations} loss {loss:.4} {steps_per_second:.2} it/s ",
                "#".repeat(done),
                " ".repeat(30 - done),
                iteration + 1
            );
        }
        Progress::Epoch(m) => {
            let dice: Vec<String> = m
                .val_dice
                .iter()
                .zip(names.iter().skip(1))
                .map(|(d, n)| match d {
                    Some(d) => format!("{n} {d:.3}"),
                    None => format!("{n} -"),
                })
                .collect();
            eprintln!();
            out!(
                "epoch {:4}  loss {:.4} ({})  lr {:.2e}{}  val Dice mean {:.3}: {}  ({:.1} s)",
                m.epoch,
                m.train_loss,
                m.precision,
                m.lr,
                if m.encoder_frozen {
                    " (encoder frozen)"
                } else {
                    ""
                },
                m.mean_val_dice,
                dice.join(", "),
                m.seconds
            );
        }
    })?;
    if !root {
        return Ok(());
    }
    out!(
        "best mean validation Dice {:.3}; run folder {}",
        report.best_mean_dice,
        a.out.display()
    );
    if report.history.is_empty() {
        return Err(Error::invalid(
            "cads segment train",
            "at least one epoch to run",
            "a finished run (raise --epochs to continue)",
        ));
    }
    Ok(())
}
