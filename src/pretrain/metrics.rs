//! `metrics.jsonl` of a run, one JSON object per step in step order, and what is derived from
//! the same lines: the loss plot's series, the per-epoch mean, the progress line, the collapse
//! warning.
//!
//! Loss reads are asynchronous and not every step is read ([`PretrainEngine::read_every`]), so a
//! step's line cannot always be written when the step is taken. [`RunLog`] queues the lines and
//! writes each as soon as it is complete:
//!
//! - a read step's line waits for its own values (usually one step later);
//! - a step that is not read carries the values of the last read step before it, marked
//!   `"stale": true` with `"loss_step"` naming that step; it waits only for the lines before it.
//!
//! The plot, the epoch means and the non-finite check use read values only, each exactly once.
//!
//! [`PretrainEngine::read_every`]: super::run::PretrainEngine::read_every

use super::plot::{write_loss_plot, PlotSeries};
use super::run::{LossRead, RunSummary};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A step's line waiting to be written.
struct Line {
    step: u64,
    fields: Map<String, Value>,
    read: bool,
    values: Option<LossRead>,
}

/// Where a run stands, for the progress line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub start: u64,
    pub end: u64,
    pub total: u64,
    pub iters_per_epoch: u64,
}

pub(crate) struct RunLog {
    /// None on a data-parallel rank other than 0: it keeps the same books (losses, divergence)
    /// but writes no file and prints nothing.
    file: Option<std::fs::File>,
    path: PathBuf,
    plot_path: PathBuf,
    history: PlotSeries,
    queue: VecDeque<Line>,
    last: Option<LossRead>,
    span: Span,
    progress: bool,
    tty: bool,
    started: Instant,
    epoch_sum: f64,
    epoch_reads: usize,
    warned_collapse: bool,
    /// The `precision` field of the last written line (engines that report one), named on the
    /// epoch line.
    precision: Option<String>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

impl RunLog {
    /// Append to `path` (the resumed part of a curve is already there, its read losses in
    /// `history`).
    pub fn open(
        path: &Path,
        plot_path: &Path,
        history: PlotSeries,
        span: Span,
        progress: bool,
        writes: bool,
    ) -> Result<RunLog> {
        let file = if writes {
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io_err("metrics", path))?,
            )
        } else {
            None
        };
        Ok(RunLog {
            file,
            path: path.to_path_buf(),
            plot_path: plot_path.to_path_buf(),
            history,
            queue: VecDeque::new(),
            last: None,
            span,
            progress: progress && writes,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            started: Instant::now(),
            epoch_sum: 0.0,
            epoch_reads: 0,
            warned_collapse: false,
            precision: None,
        })
    }

    /// Queue the line of `step` (its host fields: step, lr, schedules, timings); `read`: the
    /// engine was asked to read this step's values.
    pub fn queue(&mut self, step: u64, read: bool, fields: Map<String, Value>) {
        self.queue.push_back(Line {
            step,
            fields,
            read,
            values: None,
        });
    }

    /// Attach reads that came back to their queued lines.
    pub fn resolve(&mut self, reads: Vec<LossRead>) -> Result<()> {
        for r in reads {
            let line = self
                .queue
                .iter_mut()
                .find(|l| l.step == r.iteration && l.read && l.values.is_none())
                .ok_or_else(|| {
                    Error::invalid(
                        "RunLog::resolve",
                        "a read of a queued step that asked for one",
                        format!("a read of step {}", r.iteration),
                    )
                })?;
            line.values = Some(r);
        }
        Ok(())
    }

    /// Lines queued and not yet written.
    pub fn unwritten(&self) -> usize {
        self.queue.len()
    }

    /// Write every complete line at the front of the queue. Returns the first read value that
    /// is not finite, as (step, loss), after writing its line: the caller stops the run there.
    pub fn write_ready(&mut self, summary: &mut RunSummary) -> Result<Option<(u64, f32)>> {
        while let Some(front) = self.queue.front() {
            if front.read && front.values.is_none() {
                break;
            }
            let Some(mut line) = self.queue.pop_front() else {
                break;
            };
            let fresh = line.values.is_some();
            if let Some(v) = line.values.take() {
                self.last = Some(v);
            }
            let Some(v) = self.last.clone() else {
                return Err(Error::invalid(
                    "RunLog::write_ready",
                    "a read before the first unread step of a run",
                    format!("step {} with no read before it", line.step),
                ));
            };
            let mut fields = line.fields;
            let lr = fields.get("lr").and_then(Value::as_f64).unwrap_or(f64::NAN);
            if let Some(p) = fields.get("precision").and_then(Value::as_str) {
                self.precision = Some(p.to_string());
            }
            fields.insert("loss".into(), Value::from(v.loss as f64));
            fields.extend(v.extra.clone());
            if !fresh {
                fields.insert("stale".into(), true.into());
                fields.insert("loss_step".into(), v.iteration.into());
            }
            if let Some(file) = self.file.as_mut() {
                writeln!(file, "{}", Value::Object(fields))
                    .map_err(io_err("metrics", &self.path))?;
            }
            summary.losses.push(v.loss);
            if fresh {
                if !v.loss.is_finite() {
                    self.flush()?;
                    return Ok(Some((line.step, v.loss)));
                }
                self.history.push(line.step, v.loss);
                self.epoch_sum += v.loss as f64;
                self.epoch_reads += 1;
                if v.collapsed && !self.warned_collapse && self.file.is_some() {
                    eprintln!(
                        "\nwarning: the teacher output collapsed at iteration {} (see metrics.jsonl: entropy, kl_uniform)",
                        line.step
                    );
                    self.warned_collapse = true;
                }
            }
            self.progress_line(line.step, &v, lr);
            let step = line.step;
            if (step + 1) % self.span.iters_per_epoch == 0 || step + 1 == self.span.end {
                self.end_epoch(step, summary)?;
            }
        }
        Ok(None)
    }

    fn progress_line(&self, step: u64, v: &LossRead, lr: f64) {
        if !self.progress {
            return;
        }
        let Span {
            start, end, total, ..
        } = self.span;
        let done = step + 1 - start;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta = (end - step - 1) as f64 / rate.max(1e-9);
        // The loss shown is the last one read (its step in brackets when older than this one).
        let of = if v.iteration == step {
            String::new()
        } else {
            format!(" [step {}]", v.iteration + 1)
        };
        let msg = format!(
            "step {}/{total}  epoch {}  {rate:.2} steps/s  ETA {}  loss {:.4}{of}  lr {lr:.3e}",
            step + 1,
            step / self.span.iters_per_epoch,
            fmt_secs(eta),
            v.loss,
        );
        // Redrawn in place on a terminal; one line per 10 steps (and the last) in a log.
        if self.tty {
            eprint!("\r{msg}\x1b[K");
        } else if done % 10 == 1 || step + 1 == end {
            eprintln!("{msg}");
        }
    }

    /// Redraw the plot, print and record the mean of the epoch's reads.
    fn end_epoch(&mut self, step: u64, summary: &mut RunSummary) -> Result<()> {
        self.plot()?;
        if self.epoch_reads == 0 {
            return Ok(());
        }
        let mean = self.epoch_sum / self.epoch_reads as f64;
        if self.progress {
            // The loss as it falls, one line per epoch, whatever the terminal.
            let (pre, post) = if self.tty { ("\r", "\x1b[K") } else { ("", "") };
            let precision = match &self.precision {
                Some(p) => format!(", {p}"),
                None => String::new(),
            };
            eprintln!(
                "{pre}epoch {:3}  mean loss {mean:.4}  ({} reads{precision}){post}",
                step / self.span.iters_per_epoch,
                self.epoch_reads
            );
        }
        summary.epoch_losses.push(mean);
        self.epoch_sum = 0.0;
        self.epoch_reads = 0;
        Ok(())
    }

    /// Flush the file and redraw the plot (end of a run or a stop).
    pub fn close(mut self) -> Result<()> {
        if self.progress && self.tty {
            eprintln!();
        }
        self.flush()?;
        self.plot()
    }

    fn flush(&mut self) -> Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush().map_err(io_err("metrics", &self.path)),
            None => Ok(()),
        }
    }

    fn plot(&self) -> Result<()> {
        match self.file {
            Some(_) => write_loss_plot(&self.plot_path, &self.history),
            None => Ok(()),
        }
    }
}

pub(crate) fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Keep the metrics lines of iterations before `iteration` (a resume continues the curve from
/// the checkpoint) and return their read losses (not the stale lines) for the plot.
pub(crate) fn truncate_metrics(path: &Path, iteration: u64) -> Result<PlotSeries> {
    let op = "resume metrics";
    let mut series = PlotSeries::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(series);
    };
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(step), Some(loss)) = (v["step"].as_u64(), v["loss"].as_f64()) else {
            continue;
        };
        if step < iteration {
            if v["stale"] != Value::Bool(true) {
                series.push(step, loss as f32);
            }
            kept.push_str(line);
            kept.push('\n');
        }
    }
    crate::nn::state_file::write_atomically(op, &path.display().to_string(), kept.as_bytes())?;
    Ok(series)
}
