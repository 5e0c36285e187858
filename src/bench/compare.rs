//! Peers side by side: `cads bench --compare PEERS.jsonl` and `cads bench --report DIR`.
//!
//! A peer file holds JSON lines in the shape `cads bench` prints (`op`, `case`, `ms`, optional
//! `gflops`, `peer` or `adapter`): scripts/bench_torch_peers.py writes them for PyTorch,
//! scripts/burn_peer_lines.py turns the Burn harness's output (../shared/peers/burn-bench) into
//! them. Blank lines and lines starting with `#` are skipped. A peer line matches our line with
//! the same `op` and `case`; the ratio printed is the **speed-up** `peer ms / cads ms` (above 1:
//! cads is faster), computed on milliseconds because both sides time the same shapes.
//!
//! `--compare` appends `"peers":[{"peer":..,"ms":..,"speedup":..}]` to each matching JSON line.
//! `--report DIR` writes, from the one run: `bench.jsonl` (the lines as printed), `report.md`
//! (a Markdown table: case, variant, ms, rate, % of the FMA peak measured in the same run, and
//! each peer's ms and speed-up), `peak.png` (the compute cases as % of that peak) and, when peers
//! matched, `peers.png` (the speed-ups, with a line at parity).

use std::collections::BTreeSet;
use std::path::Path;

use super::chart::{render_png, short_number, Bar, BarChart};
use super::{Outcome, Report, Work};
use crate::error::{Error, Result};
use crate::util::file::write_atomically;

/// One peer measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerLine {
    pub op: String,
    pub case: String,
    pub ms: f64,
    /// Who measured: the line's `peer`, else its `adapter`, else the file name.
    pub peer: String,
}

#[derive(serde::Deserialize)]
struct PeerJson {
    op: String,
    case: String,
    ms: Option<f64>,
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
        out.push(PeerLine {
            op: p.op,
            case: p.case,
            ms,
            peer: p.peer.or(p.adapter).unwrap_or_else(|| source.to_string()),
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

/// The peers measured on `r`'s op and case, with the speed-up `peer ms / r.ms`.
pub fn matches<'a>(r: &Report, peers: &'a [PeerLine]) -> Vec<(&'a PeerLine, f64)> {
    peers
        .iter()
        .filter(|p| p.op == r.op && p.case == r.case)
        .map(|p| (p, p.ms / r.ms))
        .collect()
}

#[derive(serde::Serialize)]
struct PeerRatio<'a> {
    peer: &'a str,
    ms: Box<serde_json::value::RawValue>,
    speedup: Box<serde_json::value::RawValue>,
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
        .map(|(p, s)| PeerRatio {
            peer: &p.peer,
            ms: super::fixed(p.ms, 4),
            speedup: super::fixed(*s, 2),
        })
        .collect();
    let list = serde_json::to_string(&ratios).expect("strings and raw numbers always serialize");
    let body = line.strip_suffix('}').unwrap_or(&line);
    format!("{body},\"peers\":{list}}}")
}

/// Peer names in first-seen order.
fn peer_names(peers: &[PeerLine]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    peers
        .iter()
        .filter(|p| seen.insert(p.peer.clone()))
        .map(|p| p.peer.clone())
        .collect()
}

/// Rate of a report as text with its unit.
fn rate(r: &Report) -> String {
    let per_ms = |x: f64| x / (r.ms * 1e6);
    match r.work {
        Work::Flops(f) => format!("{:.2} GFLOP/s", per_ms(f)),
        Work::Bytes(b) => format!("{:.2} GB/s", per_ms(b)),
        Work::Rays { rays, .. } => format!("{:.4} Mrays/s", rays / (r.ms * 1e3)),
        Work::Voxels(v) => format!("{:.4} Mvoxels/s", v / (r.ms * 1e3)),
    }
}

/// The Markdown report of one run: a header naming the adapter, timer and FMA peak, then one
/// row per case with each peer's ms and speed-up side by side, then any failed cases.
pub fn markdown(outcomes: &[Outcome], peers: &[PeerLine]) -> String {
    let reports: Vec<&Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Measured(r) => Some(r),
            Outcome::Failed(_) | Outcome::TooLarge(_) => None,
        })
        .collect();
    let names = peer_names(peers);
    let mut md = String::from("# cads bench\n\n");
    if let Some(r) = reports.first() {
        md += &format!("Adapter: {} (timer: {}).", r.adapter, r.timer);
    }
    if let Some(peak) = reports.iter().find(|r| r.op == "fma_peak") {
        md += &format!(" Measured FMA peak: {}.", rate(peak));
    }
    md += " Speed-up = peer ms / cads ms (above 1: cads is faster).\n\n";
    md += "| case | variant | ms | rate | % of peak |";
    let mut rule = String::from("|---|---|---|---|---|");
    for n in &names {
        md += &format!(" {n} ms | speed-up vs {n} |");
        rule += "---|---|";
    }
    md += &format!("\n{rule}\n");
    for r in &reports {
        md += &format!(
            "| {}/{} | {} | {:.3} | {} | {} |",
            r.op,
            r.case,
            r.variant.as_deref().unwrap_or(""),
            r.ms,
            rate(r),
            r.pct_peak.map_or(String::new(), |p| format!("{p:.1}"))
        );
        let found = matches(r, peers);
        for n in &names {
            match found.iter().find(|(p, _)| &p.peer == n) {
                Some((p, s)) => md += &format!(" {:.3} | {s:.2}× |", p.ms),
                None => md += " | |",
            }
        }
        md += "\n";
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed(f) => Some(format!("- {}/{}: {}\n", f.op, f.case, f.error)),
            Outcome::Measured(_) | Outcome::TooLarge(_) => None,
        })
        .collect();
    if !failed.is_empty() {
        md += "\nFailed cases:\n\n";
        md += &failed.concat();
    }
    let too_large: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::TooLarge(t) => Some(format!(
                "- {}/{}: needs {} bytes in one buffer, the adapter's {} is {}\n",
                t.op, t.case, t.bytes_needed, t.limit, t.limit_bytes
            )),
            _ => None,
        })
        .collect();
    if !too_large.is_empty() {
        md += "\nCases too large for this adapter (not run):\n\n";
        md += &too_large.concat();
    }
    md
}

/// The % of peak chart (compute cases other than the peak itself), if any case has one.
pub fn peak_chart(outcomes: &[Outcome]) -> Option<BarChart> {
    let mut adapter = String::new();
    let mut peak = None;
    let bars: Vec<Bar> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Measured(r) => Some(r),
            Outcome::Failed(_) | Outcome::TooLarge(_) => None,
        })
        .filter_map(|r| {
            adapter.clone_from(&r.adapter);
            if r.op == "fma_peak" {
                peak = r.gflops();
                return None;
            }
            Some(Bar {
                label: format!("{}/{}", r.op, r.case),
                value: r.pct_peak?,
                series: 0,
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    let peak = peak.map_or(String::new(), |p| format!(" ({} GFLOP/s)", short_number(p)));
    Some(BarChart {
        title: format!("{adapter}: % of the measured FMA peak{peak}"),
        axis: "% of peak".into(),
        series: vec!["cads".into()],
        bars,
        reference: None,
    })
}

/// The speed-up chart (one bar per case and peer), if any peer matched.
pub fn peers_chart(outcomes: &[Outcome], peers: &[PeerLine]) -> Option<BarChart> {
    let names = peer_names(peers);
    let mut adapter = String::new();
    let mut bars = Vec::new();
    for o in outcomes {
        let Outcome::Measured(r) = o else { continue };
        adapter.clone_from(&r.adapter);
        for (p, s) in matches(r, peers) {
            let series = names.iter().position(|n| *n == p.peer).unwrap_or(0);
            bars.push(Bar {
                label: format!("{}/{}", r.op, r.case),
                value: s,
                series,
            });
        }
    }
    (!bars.is_empty()).then(|| BarChart {
        title: format!("{adapter}: cads speed-up over each peer (peer ms / cads ms)"),
        axis: "speed-up (1 = parity)".into(),
        series: names,
        bars,
        reference: Some(1.0),
    })
}

/// Write `bench.jsonl`, `report.md`, `peak.png` and (with matching peers) `peers.png` into
/// `dir` (created if missing); returns the paths written.
pub fn write_report(dir: &Path, outcomes: &[Outcome], peers: &[PeerLine]) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op: "bench --report",
        path: dir.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        write_atomically("bench --report", &path, bytes)?;
        written.push(path.display().to_string());
        Ok(())
    };
    let lines: String = outcomes
        .iter()
        .map(|o| line_with_peers(o, peers) + "\n")
        .collect();
    put("bench.jsonl", lines.as_bytes())?;
    put("report.md", markdown(outcomes, peers).as_bytes())?;
    if let Some(chart) = peak_chart(outcomes) {
        put("peak.png", &render_png(&chart)?)?;
    }
    if let Some(chart) = peers_chart(outcomes, peers) {
        put("peers.png", &render_png(&chart)?)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Failure;

    fn report(op: &str, case: &str, ms: f64, pct: Option<f64>) -> Outcome {
        Outcome::Measured(Report {
            op: op.into(),
            case: case.into(),
            variant: (op == "matmul").then(|| "vec4_32x4_w8".into()),
            ms,
            work: Work::Flops(2e9),
            pct_peak: pct,
            adapter: "llvmpipe".into(),
            timer: "gpu",
            peak_bytes: None,
            micro_batches: None,
            bytes: None,
            precision: None,
        })
    }

    const PEERS: &str = "# Burn 0.22 on Mesa 26\n\n\
        {\"op\":\"matmul\",\"case\":\"1024\",\"ms\":55.0,\"gflops\":38.7,\"peer\":\"burn 0.22\"}\n\
        {\"op\":\"matmul\",\"case\":\"1024\",\"ms\":20.0,\"adapter\":\"cpu\"}\n\
        {\"op\":\"conv3d_fwd\",\"case\":\"c32\",\"error\":\"out of memory\"}\n";

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

    #[test]
    fn the_report_writes_a_table_and_charts() {
        let peers = parse_peers("f", PEERS).unwrap();
        let outcomes = vec![
            report("fma_peak", "64k_x8x8", 20.0, Some(100.0)),
            report("matmul", "1024", 44.0, Some(43.2)),
            Outcome::Failed(Failure {
                op: "conv3d_fwd".into(),
                case: "c32".into(),
                error: "boom".into(),
                adapter: "llvmpipe".into(),
            }),
        ];
        let md = markdown(&outcomes, &peers);
        assert!(
            md.contains("| burn 0.22 ms | speed-up vs burn 0.22 |"),
            "{md}"
        );
        assert!(md.contains("| matmul/1024 | vec4_32x4_w8 | 44.000 | 45.45 GFLOP/s | 43.2 | 55.000 | 1.25× | 20.000 | 0.45× |"), "{md}");
        assert!(md.contains("- conv3d_fwd/c32: boom"), "{md}");
        let peak = peak_chart(&outcomes).unwrap();
        assert_eq!(peak.bars.len(), 1, "the peak itself is not a bar");
        assert!(peak.title.contains("100 GFLOP/s"), "{}", peak.title);
        assert_eq!(peers_chart(&outcomes, &peers).unwrap().bars.len(), 2);
        assert!(peers_chart(&outcomes, &[]).is_none());

        let dir = std::env::temp_dir().join(format!("cads-report-unit-{}", std::process::id()));
        let written = write_report(&dir, &outcomes, &peers).unwrap();
        assert_eq!(written.len(), 4, "{written:?}");
        let png = std::fs::read(dir.join("peers.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let lines = std::fs::read_to_string(dir.join("bench.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
