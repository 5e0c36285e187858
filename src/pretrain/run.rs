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
use super::metrics::{truncate_metrics, RunLog, Span};
use super::plot::PlotSeries;
use crate::checkpoint::{Checkpoint, LoadedCheckpoint};
use crate::data::loader::Prefetcher;
use crate::dist::{DataParallel, EpochSampler};
use crate::error::{Error, Result};
use crate::nn::drop_path::SampleWindow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What one step reports to the run at once (host values; nothing waits for the device).
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    /// The iteration this step ran.
    pub iteration: u64,
    pub lr: f64,
    /// Further host numbers of this step for `metrics.jsonl` (the other schedules).
    pub schedule: serde_json::Map<String, serde_json::Value>,
    /// Reads that came back during this call (of earlier steps, or of this one), oldest first.
    pub reads: Vec<LossRead>,
}

/// The loss and monitors of one step, read back from the device.
#[derive(Clone, Debug, Default)]
pub struct LossRead {
    /// The step these values belong to.
    pub iteration: u64,
    pub loss: f32,
    /// Further read numbers for `metrics.jsonl` (stage losses, collapse monitors, …).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The teacher collapsed (the run prints a warning).
    pub collapsed: bool,
}

/// The model side of a run: the CADS trainer, or a small stand-in in tests.
///
/// Reads are asynchronous: [`step`](Self::step) with `read` queues a read of that step's loss
/// and monitors, which comes back in the `reads` of a later step's report (or of this one), or
/// from [`finish_reads`](Self::finish_reads); each requested read comes back exactly once, in
/// step order.
pub trait PretrainEngine {
    /// The run asks for a read every this many steps (at least 1).
    fn read_every(&self) -> u64 {
        1
    }
    /// One optimisation step on a host batch at the engine's next iteration; `read`: queue a
    /// read of its loss and monitors.
    fn step(&mut self, batch: &CadsBatch, read: bool) -> Result<StepReport>;
    /// Wait for every read still on its way.
    fn finish_reads(&mut self) -> Result<Vec<LossRead>>;
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
    /// Whether a checkpoint written at `iteration` under the config `saved` (as
    /// [`config_json`](Self::config_json) wrote it) may continue under this engine's config.
    /// `Ok(None)`: the same run; `Ok(Some(note))`: a difference that may continue, the note
    /// saying what changes; `Err`: what differs, why that cannot continue and what to do.
    /// `extend_schedules`: the user accepts schedules recomputed for a longer run. Default: the
    /// texts must be equal.
    fn check_resume(
        &self,
        saved: &str,
        iteration: u64,
        extend_schedules: bool,
    ) -> Result<Option<String>> {
        let _ = (iteration, extend_schedules);
        let now = self.config_json();
        if saved == now {
            Ok(None)
        } else {
            Err(Error::invalid(
                "check_resume",
                format!("this run's config {now}"),
                format!("a checkpoint saved with {saved}"),
            ))
        }
    }
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
    /// On resume, accept a longer run (more epochs) whose schedules differ on the steps already
    /// taken: the rest of the run follows the schedules of its new length
    /// ([`PretrainEngine::check_resume`]).
    pub extend_schedules: bool,
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
            extend_schedules: false,
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
    /// The loss of each step run in this invocation, in order, as its metrics line gives it (a
    /// step that was not read repeats the last value read before it).
    pub losses: Vec<f32>,
    /// Mean of the losses read in each epoch (or part of one) run in this invocation: per-step
    /// losses of a batch of 2 swing by ±0.2, the epoch means show the trend.
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
            report.volumes.iter().map(|v| v.tile_count()).sum::<usize>()
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
/// Loss reads: the engine is asked to read step `it` when `it` is a multiple of its
/// [`read_every`](PretrainEngine::read_every), and always for the first and last step of the
/// invocation and the step before a checkpoint or a stop. Reads come back asynchronously; every
/// read value is checked, and a non-finite one stops the run WITHOUT writing a checkpoint (the
/// weights after it are not worth keeping): the error names the last checkpoint written. Since
/// the step before every checkpoint is read and checked before the checkpoint is written, no
/// checkpoint holds weights past a non-finite loss.
///
/// Data parallel (`opts.data_parallel`): every rank calls this with the same options and
/// volumes, and an engine whose trainer has the same group; `opts.batch` is the global batch,
/// and each rank makes and trains on its window of it. Rank 0 alone writes the run folder
/// (metrics, plot, checkpoints, the teacher) and reads a checkpoint to resume; its state is then
/// broadcast to the others (so a checkpoint, which holds the global state only, resumes on any
/// number of ranks, and no rank needs the run folder). The loss the ranks read is the mean over
/// the ranks, so every rank reaches the same verdict on a non-finite one. A stop request on any
/// rank stops all of them after the same step.
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
    let tiles: usize = volumes.iter().map(|v| v.tile_count()).sum();
    let ipe = opts
        .iters_per_epoch
        .unwrap_or((tiles / opts.batch) as u64)
        .max(1);
    let total = opts.epochs * ipe;
    let mut engine = make_engine(ipe)?;
    let ck_path = opts.checkpoint_path();
    let metrics_path = opts.out.join("metrics.jsonl");
    let mut history = PlotSeries::default();
    // The iteration of the newest checkpoint on disk that belongs to this run (for errors).
    let mut last_saved: Option<u64> = None;
    if root && opts.resume && ck_path.is_file() {
        let ck = LoadedCheckpoint::read(&ck_path.display().to_string())?;
        let iteration = ck.position().iteration;
        if let Some(saved) = ck.config() {
            let note = engine
                .check_resume(saved, iteration, opts.extend_schedules)
                .map_err(|e| {
                    Error::invalid(
                        op,
                        format!("a checkpoint {} can continue", ck_path.display()),
                        e,
                    )
                })?;
            if let Some(note) = note {
                eprintln!("resume: {note}");
            }
        }
        engine.restore(&ck)?;
        last_saved = Some(engine.iteration());
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
    let mut loader = Prefetcher::new(
        seed,
        Some((end - start) as usize),
        opts.workers,
        opts.prefetch,
        move |b, _| {
            let step = start + b as u64;
            make_cads_batch_window(&vols, &items, &views, &sampler, seed, step, window)
        },
    );
    let plot_path = opts.out.join("loss.png");
    let span = Span {
        start,
        end,
        total,
        iters_per_epoch: ipe,
    };
    let mut log = RunLog::open(
        &metrics_path,
        &plot_path,
        history,
        span,
        opts.progress,
        root,
    )?;
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
    // A non-finite read: stop here, keep the checkpoint on disk as it is.
    let diverged = |step: u64, loss: f32, last_saved: Option<u64>| -> Error {
        let kept = match last_saved {
            Some(it) => format!(
                "the last checkpoint, {} at iteration {it}, precedes it (--resume continues from there)",
                ck_path.display()
            ),
            None => "no checkpoint of this run was written".into(),
        };
        Error::invalid(
            op,
            "a finite loss",
            format!("{loss} at iteration {step}; no checkpoint was written after it: {kept}"),
        )
    };
    let read_every = engine.read_every().max(1);
    let mut wait_mark = Instant::now();
    for it in start..end {
        let batch = loader.next().ok_or_else(|| {
            Error::invalid(op, "a batch from the loader", "the loader stopped early")
        })??;
        let wait = wait_mark.elapsed().as_secs_f64();
        let mut stopping = stop.load(Ordering::Relaxed);
        if let Some(d) = &dp {
            // Every rank stops after the same step, or the others would wait for it.
            stopping = d.any(stopping)?;
        }
        let checkpoint_after = opts.checkpoint_every > 0 && (it + 1) % opts.checkpoint_every == 0;
        let read =
            it == start || it % read_every == 0 || it + 1 == end || checkpoint_after || stopping;
        let t0 = Instant::now();
        let report = engine.step(&batch, read)?;
        let step_s = t0.elapsed().as_secs_f64();
        wait_mark = Instant::now();
        summary.loader_wait_s += wait;
        summary.step_s += step_s;

        let mut line = serde_json::Map::new();
        line.insert("step".into(), it.into());
        line.insert("epoch".into(), (it / ipe).into());
        line.insert("lr".into(), report.lr.into());
        line.insert("wait_ms".into(), (wait * 1e3).into());
        line.insert("step_ms".into(), (step_s * 1e3).into());
        line.extend(report.schedule);
        log.queue(it, read, line);
        log.resolve(report.reads)?;
        if let Some((step, loss)) = log.write_ready(&mut summary)? {
            return Err(diverged(step, loss, last_saved));
        }
        // The flag as sampled before the step, so the step it stops after was read.
        let interrupt = stopping && it + 1 < end;
        if checkpoint_after || interrupt {
            // Every line up to here is written (and its loss checked) before the checkpoint.
            log.resolve(engine.finish_reads()?)?;
            if let Some((step, loss)) = log.write_ready(&mut summary)? {
                return Err(diverged(step, loss, last_saved));
            }
            save(&engine)?;
            last_saved = Some(engine.iteration());
        }
        if interrupt {
            summary.interrupted = true;
            break;
        }
    }
    drop(loader);
    log.resolve(engine.finish_reads()?)?;
    if let Some((step, loss)) = log.write_ready(&mut summary)? {
        return Err(diverged(step, loss, last_saved));
    }
    if log.unwritten() > 0 {
        return Err(Error::invalid(
            op,
            "every step's metrics line written at the end",
            format!("{} lines whose read never came back", log.unwritten()),
        ));
    }
    log.close()?;
    if last_saved != Some(engine.iteration()) {
        save(&engine)?;
    }
    if root {
        engine.export_teacher_backbone(&summary.teacher)?;
    }
    summary.iteration = engine.iteration();
    summary.wall_s = started.elapsed().as_secs_f64();
    Ok((engine, summary))
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
        let what = "rank 0's state (broadcast)";
        let ck = LoadedCheckpoint::from_bytes(bytes, what)?;
        if let Some(saved) = ck.config() {
            let now = engine.config_json();
            if saved != now {
                return Err(Error::invalid(
                    "run_pretraining",
                    format!("rank 0's config equal to this rank's {now}"),
                    format!("{what} with {saved}"),
                ));
            }
        }
        engine.restore(&ck)?;
    }
    Ok(())
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
