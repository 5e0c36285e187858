//! `cads pretrain`: CADS self-supervised pretraining (`pretrain::run`), and the default job (a
//! short `tiny` run on the sample CT, or the phantom when it is absent).

use cads::dist::DataParallel;
use cads::gpu::{AdapterChoice, Precision};
use cads::pretrain::drr_cache::EngineCadsDrr;
use cads::pretrain::engine::CadsEngine;
use cads::pretrain::run::{install_ctrlc, prepare_data, run_pretraining, RunOptions};
use cads::pretrain::CadsConfig;
use cads::{Gpu, Result};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(clap::Args, Clone, Debug)]
pub struct PretrainArgs {
    /// CT inputs: a .nii/.nii.gz, a folder of them, an nnU-Net folder (imagesTr/) or a JSON
    /// manifest. Default: data/cxr.nii.gz, else the built-in phantom.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run folder: metrics.jsonl, loss.png, checkpoint.safetensors, teacher_backbone.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Recipe preset: cads (the paper) or tiny (small encoder and K, for tests and the demo).
    #[arg(long, default_value = "cads")]
    pub preset: String,
    /// Epochs (default: the preset's).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Batch size (default: the preset's; the peak lr scales with it). Under MPI the global
    /// batch, split evenly over the ranks.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Final teacher temperature τt after its ramp (default: the preset's, 0.07). Setting it to
    /// the start value (0.04) holds τt constant: on a small data set (one CT) the ramp flattens
    /// the teacher until its output is uniform (metrics.jsonl: entropy → log K, kl_uniform → 0).
    #[arg(long)]
    pub teacher_temp_end: Option<f64>,
    /// Iterations per epoch (default: tiles / batch).
    #[arg(long)]
    pub iters_per_epoch: Option<u64>,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Save a checkpoint every N steps (0: at the end and on Ctrl-C only).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Preprocessing cache folder (default OUT/cache); share it between runs on the same data.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// View-making threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seed of the views (the model's seed is the preset's).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many steps (checkpointing; --resume continues).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Data-parallel replicas in this process, one device each (the i-th of the equally good
    /// adapters); --batch is then the global batch. Under MPI, launch ranks instead.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Read the loss back every N steps (default: the preset's, 10 for cads, 1 for tiny); the
    /// steps between are logged with the last read loss, marked stale. Reads never stall the
    /// device: the loss of step k is collected while step k + 1 runs.
    #[arg(long)]
    pub read_every: Option<u64>,
    /// Activation checkpointing of the encoder blocks: recompute each block's internals in
    /// backward instead of keeping them (less memory, about one more encoder forward per step).
    #[arg(long)]
    pub checkpoint_blocks: bool,
    /// Dynamic loss scaling (torch GradScaler's: scale 2^16, x2 every 2000 clean steps, x0.5
    /// and the step skipped on an inf/NaN gradient). For low-precision gradients; f32 training
    /// needs none; on by default with --precision amp. Part of the recipe: a resumed run keeps
    /// the setting, unless it changes --precision too.
    #[arg(long, conflicts_with = "no_loss_scale")]
    pub loss_scale: bool,
    /// No loss scaling, also with --precision amp (which turns it on by default).
    #[arg(long)]
    pub no_loss_scale: bool,
    /// Arithmetic of the training step: f32, or amp (automatic mixed precision: the linear
    /// layers multiply f16 operands with f32 accumulation where the adapter has SHADER_F16;
    /// master weights and AdamW stay f32; loss scaling on unless --no-loss-scale). Without
    /// SHADER_F16 amp trains in f32 and says so. May change on --resume (the run notes it).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// With --resume and a larger --epochs than the checkpoint's: continue on the schedules of
    /// the longer run from the checkpoint on (lr, weight decay and teacher momentum jump to the
    /// new cosines; without this flag such a resume is refused, saying by how much).
    #[arg(long)]
    pub extend_schedules: bool,
}

pub fn run(choice: &AdapterChoice, a: &PretrainArgs) -> Result<()> {
    let dp = super::dist::join_job()?;
    let stop = install_ctrlc()?;
    if a.devices > 1 {
        return super::dist::run_local(a.devices, &dp, |local| run_rank(choice, a, &local, stop));
    }
    let result = run_rank(choice, a, &dp, stop);
    super::dist::end_rank(&dp, result)
}

/// One rank's share of `cads pretrain` (the whole of it when run alone).
fn run_rank(
    choice: &AdapterChoice,
    a: &PretrainArgs,
    dp: &Option<DataParallel>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut config = CadsConfig::preset(&a.preset)?;
    if let Some(e) = a.epochs {
        config.epochs = e;
    }
    if let Some(b) = a.batch {
        config.batch_size = b;
    }
    if let Some(t) = a.teacher_temp_end {
        config.teacher_temp_end = t;
    }
    if let Some(n) = a.read_every {
        config.read_every = n;
    }
    config.checkpoint_blocks |= a.checkpoint_blocks;
    // Checked before an adapter is requested, so a bad option fails at once.
    config.validate()?;
    let gpu = Gpu::with_choice(&super::dist::adapter_for(choice, dp))?;
    super::vector_width::announce_hint(&gpu, super::dist::is_root(dp));
    // The precision that runs on this adapter, and loss scaling on with amp by default.
    config.precision =
        super::precision::training_precision(&gpu, a.precision, super::dist::is_root(dp));
    config.loss_scale = super::precision::loss_scale(
        config.loss_scale || a.loss_scale,
        a.no_loss_scale,
        config.precision,
    );
    let mut opts = RunOptions::new(&a.out);
    opts.data = a.data.clone();
    opts.cache = a.cache.clone();
    opts.epochs = config.epochs;
    opts.batch = config.batch_size;
    opts.iters_per_epoch = a.iters_per_epoch;
    opts.resume = a.resume;
    opts.checkpoint_every = a.checkpoint_every;
    opts.workers = a.workers.max(1);
    opts.seed = a.seed;
    opts.max_steps = a.max_steps;
    opts.extend_schedules = a.extend_schedules;
    opts.views.view_depth = config.ct_view[0];
    opts.data_parallel = dp.clone();
    if !super::dist::is_root(dp) {
        return pretrain(&gpu, config, opts, stop);
    }
    if let Some(line) = super::dist::describe(dp, config.batch_size) {
        out!("{line}");
    }
    out!(
        "cads pretrain on {} ({:?}): preset {}, precision {}, batch {}, {} epochs, peak lr {:.3e}, loss read every {} step(s){}{}",
        gpu.adapter().name,
        gpu.adapter().backend,
        a.preset,
        config.precision,
        config.batch_size,
        config.epochs,
        config.peak_lr(),
        config.read_every,
        if config.checkpoint_blocks {
            ", checkpointed blocks"
        } else {
            ""
        },
        if config.loss_scale {
            ", loss scaling"
        } else {
            ""
        }
    );
    pretrain(&gpu, config, opts, stop)
}

/// The default job: `cargo run --release` with no arguments.
pub fn default_job(choice: &AdapterChoice) -> Result<()> {
    let gpu = Gpu::with_choice(choice)?;
    let mut config = CadsConfig::tiny();
    // Sized for under two minutes on a CPU Vulkan (lavapipe, ~3 s a step): 3 epochs of 8
    // steps at batch 2. The linear scaling rule gives a peak lr of 5.9e-6 at batch 2, which
    // moves nothing in 32 steps; the demo peaks at 5e-4 so the loss visibly falls.
    config.epochs = 3;
    config.base_lr = 5e-4 * config.lr_reference_batch as f64 / config.batch_size as f64;
    // τt held at 0.04: its ramp to 0.07 flattens the teacher and so raises the cross-entropy by
    // itself, which in a 4-epoch demo hides the fall the students make.
    config.teacher_temp_end = config.teacher_temp_start;
    // And the cosine ends at half the peak, not at 2e-6: as the center catches up with the
    // teacher its targets flatten, and a student with lr ≈ 0 in the last epoch cannot follow.
    config.min_lr = 2.5e-4;
    let mut opts = RunOptions::new("runs/demo");
    opts.epochs = config.epochs;
    opts.batch = config.batch_size;
    opts.iters_per_epoch = Some(8);
    opts.checkpoint_every = 0;
    out!(
        "cads: a short CADS pretraining (tiny preset, {} epochs × 8 steps, batch {}) on {} ({:?});\n\
         the real run: cads pretrain --data CT_FOLDER --out RUN (see README)",
        config.epochs,
        config.batch_size,
        gpu.adapter().name,
        gpu.adapter().backend
    );
    pretrain(&gpu, config, opts, install_ctrlc()?)
}

fn pretrain(gpu: &Gpu, config: CadsConfig, opts: RunOptions, stop: &AtomicBool) -> Result<()> {
    let projector = EngineCadsDrr { gpu: gpu.clone() };
    let dp = opts.data_parallel.clone();
    let report = match &dp {
        None => prepare_data(&opts, &projector)?,
        Some(d) => {
            // Rank 0 fills the preprocessing cache first (ranks writing the same cache files
            // would race), then the others read it (or, on a machine of their own, make theirs).
            let first = if d.is_root() {
                Some(prepare_data(&opts, &projector)?)
            } else {
                None
            };
            d.comm.barrier()?;
            match first {
                Some(report) => report,
                None => prepare_data(
                    &RunOptions {
                        progress: false,
                        ..opts.clone()
                    },
                    &projector,
                )?,
            }
        }
    };
    let skipped = report.skipped;
    let volumes = report.volumes;
    let (_, s) = run_pretraining(
        &opts,
        volumes,
        |ipe| {
            let mut engine = CadsEngine::new(gpu, &config, ipe)?;
            engine.trainer.data_parallel = dp.clone();
            Ok(engine)
        },
        stop,
    )?;
    if !super::dist::is_root(&dp) {
        return Ok(());
    }
    if let (Some(first), Some(last)) = (s.epoch_losses.first(), s.epoch_losses.last()) {
        out!(
            "mean loss per epoch {first:.4} -> {last:.4} over {} steps ({:.2} steps/s, {:.1} s)",
            s.losses.len(),
            s.losses.len() as f64 / s.wall_s.max(1e-9),
            s.wall_s
        );
    }
    out!("{}", s.loader_json());
    if s.interrupted {
        out!(
            "interrupted at iteration {}: --resume continues",
            s.iteration
        );
    }
    out!("checkpoint: {}", s.checkpoint.display());
    out!("loss plot:  {}", s.plot.display());
    out!("metrics:    {}", s.metrics.display());
    out!("teacher:    {}", s.teacher.display());
    if !skipped.is_empty() {
        out!("skipped {} unusable input(s):", skipped.len());
        for (name, why) in &skipped {
            out!("  {name}: {why}");
        }
    }
    Ok(())
}
