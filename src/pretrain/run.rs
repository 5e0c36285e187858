//! A whole CADS pretraining run: inputs → preprocessing cache → seeded prefetching views →
//! steps → metrics, plot, checkpoints, the exported teacher backbone.
//!
//! The model, loss and optimizer step sit behind [`PretrainEngine`], so this loop (data, resume,
//! logging, stopping) is the same for the CADS trainer and for the small engines the tests use.
//!
//! Reproducibility: sample i of global step t reads the tile an epoch permutation seeded by
//! (seed, epoch) puts there and draws its views from `dist::sample_rng(seed, t, i)`
//! (`pretrain::batch::make_cads_batch_window`), whatever the worker or rank count, and the
//! engine checkpoints its own generators, so a resumed run draws the same batches and the same
//! drop paths as a straight one and its losses match bit for bit on the same adapter.
//!
//! Files under the run folder: `metrics.jsonl` (one JSON object per step; on resume the lines
//! past the checkpoint are dropped so the curve continues without duplicates), `loss.png`
//! (redrawn each epoch), `checkpoint.safetensors` (atomic; every N steps, on Ctrl-C and at the
//! end), `teacher_backbone.safetensors` (the teacher encoder under the authors' `backbone.` keys)
//! and `cache/` (unless another cache folder is given).

use super::batch::{make_cads_batch_window, tile_items, CadsBatch, CadsVolume};
use super::cache::{build_cache, list_inputs, CacheConfig, CacheReport};
use super::cads_views::{CadsViewConfig, DrrProjector};
use super::plot::{write_loss_plot, PlotSeries};
use crate::checkpoint::{Checkpoint, LoadedCheckpoint};
use crate::data::loader::Prefetcher;
use crate::dist::{DataParallel, EpochSampler};
use crate::error::{Error, Result};
use crate::nn::drop_path::SampleWindow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What one step reports to the run (read back from the GPU).
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    pub loss: f32,
    pub lr: f64,
    /// Further numbers for `metrics.jsonl` (stage losses, collapse monitors, …).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The teacher collapsed (the run prints a warning).
    pub collapsed: bool,
}

/// The model side of a run: the CADS trainer, or a small stand-in in tests.
pub trait PretrainEngine {
    /// One optimisation step on a host batch at the engine's next iteration.
    fn step(&mut self, batch: &CadsBatch) -> Result<StepReport>;
    /// The next global iteration (0 for a fresh engine).
    fn iteration(&self) -> u64;
    /// The checkpoint with the engine's modules, optimizer, generators and extras (e.g. the
    /// DINO center); the run adds the position, its own generator and the config.
    fn checkpoint(&self) -> Result<Checkpoint<'_>>;
    /// Restore what [`checkpoint`](Self::checkpoint) saved, and the iteration from its position.
    fn restore(&mut self, checkpoint: &LoadedCheckpoint) -> Result<()>;
    /// Write the teacher backbone as safetensors with the authors' names (`backbone.` keys).
    fn export_teacher_backbone(&self, path: &Path) -> Result<()>;
    /// The run configuration as JSON, stored in checkpoints (and compared on resume).
    fn config_json(&self) -> String;
}

/// Options of a run that are not model hyper-parameters.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run folder (created).
    pub out: PathBuf,
    /// Inputs ([`list_inputs`]); None: the sample CT, else the phantom.
    pub data: Option<PathBuf>,
    /// Preprocessing cache folder; None: `out/cache`.
    pub cache: Option<PathBuf>,
    pub epochs: u64,
    /// Iterations per epoch; None: total tiles / batch (at least 1), i.e. each tile about once.
    pub iters_per_epoch: Option<u64>,
    pub batch: usize,
    /// Seed of the view stream.
    pub seed: u64,
    /// A checkpoint every N steps (0: only at the end and on a stop).
    pub checkpoint_every: u64,
    /// Continue from `out/checkpoint.safetensors` when it exists.
    pub resume: bool,
    /// Stop after this many steps of this invocation (still checkpointing), e.g. for tests.
    pub max_steps: Option<u64>,
    /// View-making threads.
    pub workers: usize,
    /// Finished batches the loader may hold ahead of the step.
    pub prefetch: usize,
    /// Print a progress line (redrawn on a terminal) and the per-epoch loss.
    pub progress: bool,
    pub views: CadsViewConfig,
    pub preprocessing: CacheConfig,
    /// This process's replica group (None: one device); `batch` is then the global batch.
    pub data_parallel: Option<DataParallel>,
}

impl RunOptions {
    pub fn new(out: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            out: out.into(),
            data: None,
            cache: None,
            epochs: 1,
            iters_per_epoch: None,
            batch: 2,
            seed: 0,
            checkpoint_every: 0,
            resume: false,
            max_steps: None,
            workers: 2,
            prefetch: 4,
            progress: true,
            views: CadsViewConfig::default(),
            preprocessing: CacheConfig::default(),
            data_parallel: None,
        }
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.out.join("checkpoint.safetensors")
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Losses of the steps run in this invocation, in order.
    pub losses: Vec<f32>,
    /// Mean loss of each epoch (or part of one) run in this invocation: per-step losses of a
    /// batch of 2 swing by ±0.2, the epoch means show the trend.
    pub epoch_losses: Vec<f64>,
    /// The global iteration after the last step.
    pub iteration: u64,
    pub iters_per_epoch: u64,
    /// Stopped by the stop flag (Ctrl-C) before the planned end.
    pub interrupted: bool,
    /// Seconds the step waited on the loader, and seconds of the steps themselves.
    pub loader_wait_s: f64,
    pub step_s: f64,
    pub wall_s: f64,
    pub checkpoint: PathBuf,
    pub plot: PathBuf,
    pub teacher: PathBuf,
    pub metrics: PathBuf,
    /// Inputs left out, with the reason.
    pub skipped: Vec<(String, String)>,
    pub volumes: usize,
}

impl RunSummary {
    /// One JSON line on the loader: the share of the run the GPU step spent waiting for data.
    pub fn loader_json(&self) -> String {
        let steps = self.losses.len().max(1) as f64;
        serde_json::json!({
            "op": "pretrain_loader",
            "steps": self.losses.len(),
            "wait_ms_per_step": 1e3 * self.loader_wait_s / steps,
            "step_ms": 1e3 * self.step_s / steps,
            "wait_fraction": self.loader_wait_s / (self.loader_wait_s + self.step_s).max(1e-12),
        })
        .to_string()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Prepare (or read) the cached volumes of a run, printing warnings and the skipped list.
pub fn prepare_data(opts: &RunOptions, projector: &dyn DrrProjector) -> Result<CacheReport> {
    let sources = list_inputs(opts.data.as_deref())?;
    let dir = opts.cache.clone().unwrap_or_else(|| opts.out.join("cache"));
    let progress = opts.progress;
    let report = build_cache(&sources, &dir, &opts.preprocessing, projector, |m| {
        if progress || m.starts_with("warning") {
            eprintln!("{m}");
        }
    })?;
    if progress {
        eprintln!(
            "data: {} volume(s) ({} from cache {}, {} prepared now), {} tiles",
            report.volumes.len(),
            report.hits,
            dir.display(),
            report.built,
            report.volumes.iter().map(|v| v.tiles.len()).sum::<usize>()
        );
    }
    if !report.skipped.is_empty() {
        eprintln!("skipped {} input(s):", report.skipped.len());
        for (n, why) in &report.skipped {
            eprintln!("  {n}: {why}");
        }
    }
    Ok(report)
}

/// Run (or resume) a pretraining on prepared volumes. `make_engine(iters_per_epoch)` builds a
/// fresh engine; `stop` is polled after every step (Ctrl-C sets it): the run then checkpoints and
/// returns with `interrupted`.
///
/// Data parallel (`opts.data_parallel`): every rank calls this with the same options and
/// volumes, and an engine whose trainer has the same group; `opts.batch` is the global batch,
/// and each rank makes and trains on its window of it. Rank 0 alone writes the run folder
/// (metrics, plot, checkpoints, the teacher) and reads a checkpoint to resume; its state is then
/// broadcast to the others (so a checkpoint, which holds the global state only, resumes on any
/// number of ranks, and no rank needs the run folder). A stop request on any rank stops all of
/// them after the same step.
pub fn run_pretraining<E: PretrainEngine>(
    opts: &RunOptions,
    volumes: Vec<CadsVolume>,
    make_engine: impl FnOnce(u64) -> Result<E>,
    stop: &AtomicBool,
) -> Result<(E, RunSummary)> {
    let op = "run_pretraining";
    let started = Instant::now();
    if volumes.is_empty() || opts.batch == 0 || opts.epochs == 0 {
        return Err(Error::invalid(
            op,
            "volumes, batch > 0 and epochs > 0",
            format!(
                "{} volumes, batch {}, epochs {}",
                volumes.len(),
                opts.batch,
                opts.epochs
            ),
        ));
    }
    let dp = opts.data_parallel.clone();
    // Rank 0 (or the only rank) writes the run folder and reports progress.
    let root = dp.as_ref().is_none_or(DataParallel::is_root);
    let window = match &dp {
        Some(d) => d.window(opts.batch)?,
        None => SampleWindow::whole(opts.batch),
    };
    if root {
        std::fs::create_dir_all(&opts.out).map_err(io_err(op, &opts.out))?;
    }
    let tiles: usize = volumes.iter().map(|v| v.tiles.len()).sum();
    let ipe = opts
        .iters_per_epoch
        .unwrap_or((tiles / opts.batch) as u64)
        .max(1);
    let total = opts.epochs * ipe;
    let mut engine = make_engine(ipe)?;
    let ck_path = opts.checkpoint_path();
    let metrics_path = opts.out.join("metrics.jsonl");
    let mut history = PlotSeries::default();
    if root && opts.resume && ck_path.is_file() {
        let ck = LoadedCheckpoint::read(&ck_path.display().to_string())?;
        check_config(&engine, &ck, &ck_path.display().to_string())?;
        engine.restore(&ck)?;
        history = truncate_metrics(&metrics_path, engine.iteration())?;
        if opts.progress {
            eprintln!(
                "resumed {} at iteration {} (epoch {})",
                ck_path.display(),
                engine.iteration(),
                engine.iteration() / ipe
            );
        }
    } else if root && metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(io_err(op, &metrics_path))?;
    }
    if let Some(d) = &dp {
        replicate_root_state(d, &mut engine, ipe)?;
    }
    let start = engine.iteration();
    let end = opts
        .max_steps
        .map_or(total, |m| (start + m).min(total))
        .max(start);
    let items = Arc::new(tile_items(&volumes));
    let sampler = EpochSampler::new(items.len(), opts.seed, opts.batch, ipe)?;
    let volumes = Arc::new(volumes);
    let (views, seed) = (opts.views.clone(), opts.seed);
    let vols = volumes.clone();
    // Batches are indexed globally (start + b) so a resumed run draws what a straight one would;
    // each rank makes only its window of the global batch.
    let loader = Prefetcher::new(
        seed,
        Some((end - start) as usize),
        opts.workers,
        opts.prefetch,
        move |b, _| {
            let step = start + b as u64;
            make_cads_batch_window(&vols, &items, &views, &sampler, seed, step, window)
        },
    );
    let mut metrics = if root {
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .map_err(io_err(op, &metrics_path))?,
        )
    } else {
        None
    };
    let plot_path = opts.out.join("loss.png");
    let mut summary = RunSummary {
        iters_per_epoch: ipe,
        checkpoint: ck_path.clone(),
        plot: plot_path.clone(),
        teacher: opts.out.join("teacher_backbone.safetensors"),
        metrics: metrics_path.clone(),
        volumes: volumes.len(),
        ..RunSummary::default()
    };
    let save = |engine: &E| -> Result<()> {
        if !root {
            return Ok(());
        }
        let it = engine.iteration();
        engine
            .checkpoint()?
            .position(it / ipe, it)
            .config(&engine.config_json())
            .save(&ck_path.display().to_string())
    };
    let progress = opts.progress && root;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut loader = loader;
    let mut wait_mark = Instant::now();
    let mut warned_collapse = false;
    let (mut epoch_sum, mut epoch_n) = (0.0f64, 0usize);
    for it in start..end {
        let batch = loader.next().ok_or_else(|| {
            Error::invalid(op, "a batch from the loader", "the loader stopped early")
        })??;
        let wait = wait_mark.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let report = engine.step(&batch)?;
        let step_s = t0.elapsed().as_secs_f64();
        wait_mark = Instant::now();
        summary.loader_wait_s += wait;
        summary.step_s += step_s;
        summary.losses.push(report.loss);
        if !report.loss.is_finite() {
            save(&engine)?;
            return Err(Error::invalid(
                op,
                "a finite loss",
                format!(
                    "{} at iteration {it} (checkpoint of the step before it: {})",
                    report.loss,
                    ck_path.display()
                ),
            ));
        }
        let epoch = it / ipe;
        if let Some(metrics) = metrics.as_mut() {
            let mut line = serde_json::Map::new();
            line.insert("step".into(), it.into());
            line.insert("epoch".into(), epoch.into());
            line.insert("loss".into(), serde_json::Value::from(report.loss as f64));
            line.insert("lr".into(), report.lr.into());
            line.insert("wait_ms".into(), (wait * 1e3).into());
            line.insert("step_ms".into(), (step_s * 1e3).into());
            line.extend(report.extra.clone());
            writeln!(metrics, "{}", serde_json::Value::Object(line))
                .map_err(io_err(op, &metrics_path))?;
            history.push(it, report.loss);
        }
        if report.collapsed && !warned_collapse && root {
            eprintln!("\nwarning: the teacher output collapsed at iteration {it} (see metrics.jsonl: entropy, kl_uniform)");
            warned_collapse = true;
        }
        if progress {
            let done = it + 1 - start;
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let eta = (end - it - 1) as f64 / rate.max(1e-9);
            let msg = format!(
                "step {}/{total}  epoch {epoch}  {rate:.2} steps/s  ETA {}  loss {:.4}  lr {:.3e}",
                it + 1,
                fmt_secs(eta),
                report.loss,
                report.lr
            );
            // Redrawn in place on a terminal; one line per 10 steps (and the last) in a log.
            if tty {
                eprint!("\r{msg}\x1b[K");
            } else if (it + 1 - start) % 10 == 1 || it + 1 == end {
                eprintln!("{msg}");
            }
        }
        let finished_epoch = (it + 1) % ipe == 0;
        if opts.checkpoint_every > 0 && (it + 1) % opts.checkpoint_every == 0 {
            save(&engine)?;
        }
        epoch_sum += report.loss as f64;
        epoch_n += 1;
        if finished_epoch || it + 1 == end {
            if root {
                write_loss_plot(&plot_path, &history)?;
            }
            if progress {
                // The loss as it falls, one line per epoch, whatever the terminal.
                let (pre, post) = if tty { ("\r", "\x1b[K") } else { ("", "") };
                eprintln!(
                    "{pre}epoch {epoch:3}  mean loss {:.4}  ({epoch_n} steps){post}",
                    epoch_sum / epoch_n as f64
                );
            }
            summary.epoch_losses.push(epoch_sum / epoch_n as f64);
            epoch_sum = 0.0;
            epoch_n = 0;
        }
        let mut stop_now = stop.load(Ordering::Relaxed);
        if let Some(d) = &dp {
            // Every rank stops after the same step, or the others would wait for it.
            stop_now = d.any(stop_now)?;
        }
        if stop_now && it + 1 < end {
            summary.interrupted = true;
            break;
        }
    }
    if progress && tty {
        eprintln!();
    }
    drop(loader);
    if let Some(metrics) = metrics.as_mut() {
        metrics.flush().map_err(io_err(op, &metrics_path))?;
    }
    save(&engine)?;
    if root {
        write_loss_plot(&plot_path, &history)?;
        engine.export_teacher_backbone(&summary.teacher)?;
    }
    summary.iteration = engine.iteration();
    summary.wall_s = started.elapsed().as_secs_f64();
    Ok((engine, summary))
}

/// Fail unless `ck` was saved with the engine's config.
fn check_config<E: PretrainEngine>(engine: &E, ck: &LoadedCheckpoint, path: &str) -> Result<()> {
    if let Some(saved) = ck.config() {
        let now = engine.config_json();
        if saved != now {
            return Err(Error::invalid(
                "run_pretraining",
                format!("a checkpoint of this run's config {now}"),
                format!("{path} saved with {saved}"),
            ));
        }
    }
    Ok(())
}

/// Data parallel: every rank takes rank 0's whole state (fresh or resumed): rank 0 serialises
/// its engine as a checkpoint, the bytes are broadcast, the others restore them. The replicas
/// then start identical whatever each built or read.
fn replicate_root_state<E: PretrainEngine>(
    dp: &DataParallel,
    engine: &mut E,
    ipe: u64,
) -> Result<()> {
    let mut bytes = if dp.is_root() {
        let it = engine.iteration();
        engine
            .checkpoint()?
            .position(it / ipe, it)
            .config(&engine.config_json())
            .to_bytes()?
    } else {
        Vec::new()
    };
    dp.broadcast_from_root(&mut bytes)?;
    if !dp.is_root() {
        let ck = LoadedCheckpoint::from_bytes(bytes, "rank 0's state (broadcast)")?;
        check_config(engine, &ck, "rank 0's state (broadcast)")?;
        engine.restore(&ck)?;
    }
    Ok(())
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Keep the metrics lines of iterations before `iteration` (a resume continues the curve from
/// the checkpoint) and return their losses for the plot.
fn truncate_metrics(path: &Path, iteration: u64) -> Result<PlotSeries> {
    let op = "resume metrics";
    let mut series = PlotSeries::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(series);
    };
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(step), Some(loss)) = (v["step"].as_u64(), v["loss"].as_f64()) else {
            continue;
        };
        if step < iteration {
            series.push(step, loss as f32);
            kept.push_str(line);
            kept.push('\n');
        }
    }
    crate::nn::state_file::write_atomically(op, &path.display().to_string(), kept.as_bytes())?;
    Ok(series)
}

/// Set by the Ctrl-C handler; [`run_pretraining`] polls it after each step.
pub fn install_ctrlc() -> Result<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C while the checkpoint is written: give up at once.
            std::process::exit(130);
        }
        eprintln!("\nstopping: saving a checkpoint after this step (Ctrl-C again to abort)");
    })
    .map_err(|e| Error::invalid("install_ctrlc", "a Ctrl-C handler", e))?;
    Ok(&STOP)
}
