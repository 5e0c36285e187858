//! Peers side by side: `cads bench --compare PEERS.jsonl` (and the peers of `--report DIR`,
//! written by [`super::report`]).
//!
//! A peer file holds JSON lines in the shape `cads bench` prints (`op`, `case`, `ms`, optional
//! `gflops`, `precision`, `peak_bytes`, `peer` or `adapter`): scripts/bench_torch_peers.py
//! writes them for PyTorch, scripts/burn_peer_lines.py turns the Burn harness's output
//! (../shared/peers/burn-bench) into them. Blank lines and lines starting with `#` are skipped.
//! A peer line matches our line with the same `op`, `case` and `precision`, a line of either
//! side that names none being f32 (only the whole-step cases name it, and PyTorch's AMP lines
//! must not be compared with our f32 steps). Two ratios, both "above 1: cads is better":
//!
//! - the **speed-up** `peer ms / cads ms`, computed on milliseconds because both sides time the
//!   same shapes;
//! - the **memory ratio** `peer peak_bytes / cads peak_bytes`, where both lines carry a peak
//!   (the whole-step cases: our buffer pool's peak, PyTorch's allocator peak; see
//!   src/bench/mod.rs and scripts/bench_torch_peers.py for what each counts).
//!
//! `--compare` appends
//! `"peers":[{"peer":..,"ms":..,"speedup":..,"peak_bytes":..,"memory_ratio":..}]` to each
//! matching JSON line (`peak_bytes` where the peer measured one, `memory_ratio` where both
//! sides did).

use std::collections::BTreeSet;
use std::path::Path;

use super::{Outcome, Report, F32};
use crate::error::{Error, Result};

/// One peer measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerLine {
    pub op: String,
    pub case: String,
    pub ms: f64,
    /// Who measured: the line's `peer`, else its `adapter`, else the file name.
    pub peer: String,
    /// The number format (`"f32"` when the line names none).
    pub precision: String,
    /// Peak memory of one run, when the peer measured it.
    pub peak_bytes: Option<u64>,
}

#[derive(serde::Deserialize)]
struct PeerJson {
    op: String,
    case: String,
    ms: Option<f64>,
    precision: Option<String>,
    /// A float, so that `2.5e9` parses too; checked to be a positive whole number.
    peak_bytes: Option<f64>,
    peer: Option<String>,
    adapter: Option<String>,
    error: Option<String>,
}

/// Parse peer JSON lines; `source` names the file in errors and is the fallback peer name. A
/// line that is not such a JSON object is an error naming the file and line; a line reporting
/// an `error` (a failed peer case) is skipped.
pub fn parse_peers(source: &str, text: &str) -> Result<Vec<PeerLine>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: String| Error::BadFile {
            op: "bench --compare",
            path: source.to_string(),
            problem: format!("line {}: {problem}", i + 1),
        };
        let p: PeerJson = serde_json::from_str(line)
            .map_err(|e| bad(format!("expected a JSON object with op, case and ms: {e}")))?;
        if p.error.is_some() {
            continue;
        }
        let ms =
            p.ms.filter(|ms| ms.is_finite() && *ms > 0.0)
                .ok_or_else(|| bad(format!("{}/{}: expected a positive \"ms\"", p.op, p.case)))?;
        let peak_bytes = match p.peak_bytes {
            None => None,
            Some(b) if b.is_finite() && b >= 1.0 && b.fract() == 0.0 && b < u64::MAX as f64 => {
                Some(b as u64)
            }
            Some(b) => {
                return Err(bad(format!(
                    "{}/{}: expected \"peak_bytes\" a positive whole number, got {b}",
                    p.op, p.case
                )))
            }
        };
        let precision = match p.precision {
            None => F32.to_string(),
            Some(name) if !name.trim().is_empty() => name,
            Some(_) => {
                return Err(bad(format!(
                    "{}/{}: expected a non-empty \"precision\"",
                    p.op, p.case
                )))
            }
        };
        out.push(PeerLine {
            op: p.op,
            case: p.case,
            ms,
            peer: p.peer.or(p.adapter).unwrap_or_else(|| source.to_string()),
            precision,
            peak_bytes,
        });
    }
    Ok(out)
}

/// Read every peer file.
pub fn read_peers(paths: &[impl AsRef<Path>]) -> Result<Vec<PeerLine>> {
    let mut all = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            op: "bench --compare",
            path: path.display().to_string(),
            source,
        })?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        all.extend(parse_peers(&name, &text)?);
    }
    Ok(all)
}

/// A peer line that measured the same case as one of ours, with the two ratios.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerMatch<'a> {
    pub peer: &'a PeerLine,
    /// `peer ms / cads ms`: above 1, cads is faster.
    pub speedup: f64,
    /// `peer peak / cads peak` where both are known: above 1, cads needs less memory.
    pub memory_ratio: Option<f64>,
}

/// The peers measured on `r`'s op, case and precision (f32 where a side names none).
pub fn matches<'a>(r: &Report, peers: &'a [PeerLine]) -> Vec<PeerMatch<'a>> {
    let precision = r.precision.unwrap_or(F32);
    peers
        .iter()
        .filter(|p| p.op == r.op && p.case == r.case && p.precision == precision)
        .map(|p| PeerMatch {
            peer: p,
            speedup: p.ms / r.ms,
            memory_ratio: match (p.peak_bytes, r.peak_bytes) {
                (Some(theirs), Some(ours)) if ours > 0 => Some(theirs as f64 / ours as f64),
                _ => None,
            },
        })
        .collect()
}

#[derive(serde::Serialize)]
struct PeerRatio<'a> {
    peer: &'a str,
    ms: Box<serde_json::value::RawValue>,
    speedup: Box<serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_ratio: Option<Box<serde_json::value::RawValue>>,
}

/// `outcome`'s JSON line with `"peers":[..]` appended when peers measured the same case.
pub fn line_with_peers(outcome: &Outcome, peers: &[PeerLine]) -> String {
    let line = outcome.to_json();
    let Outcome::Measured(r) = outcome else {
        return line;
    };
    let found = matches(r, peers);
    if found.is_empty() {
        return line;
    }
    let ratios: Vec<PeerRatio> = found
        .iter()
        .map(|m| PeerRatio {
            peer: &m.peer.peer,
            ms: super::fixed(m.peer.ms, 4),
            speedup: super::fixed(m.speedup, 2),
            peak_bytes: m.peer.peak_bytes,
            memory_ratio: m.memory_ratio.map(|r| super::fixed(r, 2)),
        })
        .collect();
    let list = serde_json::to_string(&ratios).expect("strings and raw numbers always serialize");
    let body = line.strip_suffix('}').unwrap_or(&line);
    format!("{body},\"peers\":{list}}}")
}

/// Peer names in first-seen order.
pub(crate) fn peer_names(peers: &[PeerLine]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    peers
        .iter()
        .filter(|p| seen.insert(p.peer.clone()))
        .map(|p| p.peer.clone())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::Work;

    /// One of our lines (a matmul names its variant).
    pub(crate) fn report(op: &str, case: &str, ms: f64, pct: Option<f64>) -> Outcome {
        Outcome::Measured(Report {
            op: op.into(),
            case: case.into(),
            variant: (op == "matmul").then(|| "vec4_32x4_w8".into()),
            precision: None,
            ms,
            work: Work::Flops(2e9),
            pct_peak: pct,
            adapter: "llvmpipe".into(),
            timer: "gpu",
            peak_bytes: None,
            micro_batches: None,
            bytes: None,
            backward_ms: None,
        })
    }

    /// One of our whole-step lines: a precision and a peak.
    pub(crate) fn step(precision: &'static str, ms: f64, peak_bytes: u64) -> Outcome {
        let Outcome::Measured(mut r) = report("pvt_encoder_fwd_bwd", "vol16x48x48_n2", ms, None)
        else {
            unreachable!("report() is a measurement")
        };
        r.precision = Some(precision);
        r.peak_bytes = Some(peak_bytes);
        Outcome::Measured(r)
    }

    pub(crate) const PEERS: &str = "# Burn 0.22 on Mesa 26\n\n\
        {\"op\":\"matmul\",\"case\":\"1024\",\"ms\":55.0,\"gflops\":38.7,\"peer\":\"burn 0.22\"}\n\
        {\"op\":\"matmul\",\"case\":\"1024\",\"ms\":20.0,\"adapter\":\"cpu\"}\n\
        {\"op\":\"conv3d_fwd\",\"case\":\"c32\",\"error\":\"out of memory\"}\n";

    /// PyTorch's whole-step lines as scripts/bench_torch_peers.py prints them: the same case in
    /// f32 and in AMP, and a line of another peer that names no precision (so f32).
    pub(crate) const STEP_PEERS: &str = "\
        {\"op\": \"pvt_encoder_fwd_bwd\", \"case\": \"vol16x48x48_n2\", \"precision\": \"f32\", \"ms\": 400.0, \"peak_bytes\": 300000000, \"peak_measure\": \"cpu_tensor_bytes\", \"peer\": \"torch\"}\n\
        {\"op\": \"pvt_encoder_fwd_bwd\", \"case\": \"vol16x48x48_n2\", \"precision\": \"amp\", \"amp_dtype\": \"bfloat16\", \"ms\": 250.0, \"peak_bytes\": 1.2e8, \"peer\": \"torch\"}\n\
        {\"op\": \"pvt_encoder_fwd_bwd\", \"case\": \"vol16x48x48_n2\", \"ms\": 800.0, \"peer\": \"other\"}\n";

    #[test]
    fn peer_lines_parse_with_names_from_peer_adapter_or_file() {
        let p = parse_peers("burn", PEERS).unwrap();
        assert_eq!(p.len(), 2, "comment, blank and error lines skipped");
        assert_eq!(p[0].peer, "burn 0.22");
        assert_eq!(p[1].peer, "cpu");
        let p = parse_peers("file", "{\"op\":\"a\",\"case\":\"b\",\"ms\":1}").unwrap();
        assert_eq!(p[0].peer, "file");
    }

    #[test]
    fn bad_peer_lines_are_errors_naming_file_and_line() {
        let e = parse_peers("peers.jsonl", "\n{\"op\":\"a\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("peers.jsonl") && e.contains("line 2"), "{e}");
        let e = parse_peers("p", "{\"op\":\"a\",\"case\":\"b\",\"ms\":0}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive"), "{e}");
    }

    #[test]
    fn peer_lines_read_precision_and_peak_bytes() {
        let p = parse_peers("f", STEP_PEERS).unwrap();
        let got: Vec<(&str, Option<u64>)> = p
            .iter()
            .map(|l| (l.precision.as_str(), l.peak_bytes))
            .collect();
        assert_eq!(
            got,
            [
                ("f32", Some(300_000_000)),
                ("amp", Some(120_000_000)),
                ("f32", None)
            ],
            "a line without precision is f32; 1.2e8 bytes reads as a whole number"
        );
        for (bad, why) in [
            (r#""peak_bytes":-5"#, "peak_bytes"),
            (r#""peak_bytes":10.5"#, "peak_bytes"),
            (r#""peak_bytes":0"#, "peak_bytes"),
            (r#""precision":" ""#, "precision"),
        ] {
            let line = format!(r#"{{"op":"a","case":"b","ms":1,{bad}}}"#);
            let e = parse_peers("p.jsonl", &line).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("a/b") && e.contains("line 1"),
                "{e}"
            );
        }
    }

    #[test]
    fn peers_match_on_precision_and_gain_the_memory_ratio() {
        let peers = parse_peers("f", STEP_PEERS).unwrap();
        let names = |r: &Outcome| -> Vec<(String, String)> {
            let Outcome::Measured(r) = r else {
                unreachable!()
            };
            matches(r, &peers)
                .iter()
                .map(|m| (m.peer.peer.clone(), m.peer.precision.clone()))
                .collect()
        };
        let f32_pair = vec![
            ("torch".to_string(), "f32".to_string()),
            ("other".to_string(), "f32".to_string()),
        ];
        // Our f32 step: PyTorch's f32 line and the line without precision, never the AMP one.
        assert_eq!(names(&step("f32", 200.0, 200_000_000)), f32_pair);
        // A line of ours without precision is f32 too.
        let Outcome::Measured(mut plain) = step("f32", 200.0, 200_000_000) else {
            unreachable!()
        };
        plain.precision = None;
        assert_eq!(names(&Outcome::Measured(plain)), f32_pair);
        // An AMP step of ours meets only the AMP line.
        let amp = step("amp", 100.0, 100_000_000);
        assert_eq!(names(&amp), [("torch".to_string(), "amp".to_string())]);

        let line = line_with_peers(&step("f32", 200.0, 200_000_000), &peers);
        assert!(
            line.contains(r#""precision":"f32","ms":200.0000"#),
            "{line}"
        );
        assert!(line.ends_with(
            r#""peers":[{"peer":"torch","ms":400.0000,"speedup":2.00,"peak_bytes":300000000,"memory_ratio":1.50},{"peer":"other","ms":800.0000,"speedup":4.00}]}"#
        ), "{line}");
        let line = line_with_peers(&amp, &peers);
        assert!(line.ends_with(
            r#""peers":[{"peer":"torch","ms":250.0000,"speedup":2.50,"peak_bytes":120000000,"memory_ratio":1.20}]}"#
        ), "{line}");
        // Our line without a peak: the peer's peak is shown, no ratio.
        let line = line_with_peers(
            &report("pvt_encoder_fwd_bwd", "vol16x48x48_n2", 200.0, None),
            &peers,
        );
        assert!(
            line.contains(r#""speedup":2.00,"peak_bytes":300000000},"#),
            "{line}"
        );
        assert!(!line.contains("memory_ratio"), "{line}");
    }

    #[test]
    fn matching_lines_gain_the_speedup_of_each_peer() {
        let peers = parse_peers("f", PEERS).unwrap();
        let ours = report("matmul", "1024", 44.0, Some(43.2));
        let line = line_with_peers(&ours, &peers);
        assert!(line.ends_with(
            r#""peers":[{"peer":"burn 0.22","ms":55.0000,"speedup":1.25},{"peer":"cpu","ms":20.0000,"speedup":0.45}]}"#
        ), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["variant"], "vec4_32x4_w8");
        // No peer for this case: the line is unchanged.
        let other = report("conv3d_fwd", "c32", 10.0, None);
        assert_eq!(line_with_peers(&other, &peers), other.to_json());
    }
}
