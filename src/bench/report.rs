//! `cads bench --report DIR`: from one run, `bench.jsonl` (the lines as printed, with their
//! peers), `report.md` (a Markdown table: case, variant, precision, ms, rate, % of the FMA peak
//! measured in the same run, peak memory, and each peer's ms, speed-up and memory ratio),
//! `peak.png` (the compute cases as % of that peak) and, when peers matched, `peers.png` (the
//! speed-ups) and, when both sides measured peaks, `memory.png` (the memory ratios), both with a
//! line at parity. The peers and the two ratios are [`super::compare`]'s.

use std::path::Path;

use super::chart::{render_png, short_number, Bar, BarChart};
use super::compare::{line_with_peers, matches, peer_names, PeerLine, PeerMatch};
use super::{Outcome, Report, Work, F32};
use crate::error::{Error, Result};
use crate::util::file::write_atomically;

/// Rate of a report as text with its unit.
fn rate(r: &Report) -> String {
    let per_ms = |x: f64| x / (r.ms * 1e6);
    match r.work {
        Work::Flops(f) => format!("{:.2} GFLOP/s", per_ms(f)),
        Work::Bytes(b) => format!("{:.2} GB/s", per_ms(b)),
        Work::Rays { rays, .. } => format!("{:.4} Mrays/s", rays / (r.ms * 1e3)),
        Work::Voxels(v) => format!("{:.4} Mvoxels/s", v / (r.ms * 1e3)),
        Work::Launches(n) => format!("{:.2} µs/launch", r.ms * 1e3 / n),
    }
}

/// A case's name on a chart's bar: `op/case`, and its precision when that is not f32 (the
/// table has a column for it).
fn label(r: &Report) -> String {
    match r.precision {
        Some(p) if p != F32 => format!("{}/{} {p}", r.op, r.case),
        _ => format!("{}/{}", r.op, r.case),
    }
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64)
}

/// The Markdown report of one run: a header naming the adapter, timer and FMA peak, then one
/// row per case with each peer's ms, speed-up and memory ratio side by side, then any failed
/// cases and those too large for the adapter.
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
    if let Some(peak) = measured_peak(&reports) {
        md += &format!(" Measured FMA peak: {peak:.2} GFLOP/s.");
    }
    md += " Speed-up = peer ms / cads ms (above 1: cads is faster). Memory = peer peak bytes / \
           cads peak bytes (above 1: cads needs less). Peers are matched on op, case and \
           precision (none named = f32).\n\n";
    md += "| case | variant | precision | ms | rate | % of peak | peak MiB |";
    let mut rule = String::from("|---|---|---|---|---|---|---|");
    for n in &names {
        md += &format!(" {n} ms | speed-up vs {n} | memory vs {n} |");
        rule += "---|---|---|";
    }
    md += &format!("\n{rule}\n");
    for r in &reports {
        md += &format!(
            "| {}/{} | {} | {} | {:.3} | {} | {} | {} |",
            r.op,
            r.case,
            r.variant.as_deref().unwrap_or(""),
            r.precision.unwrap_or(""),
            r.ms,
            rate(r),
            r.pct_peak.map_or(String::new(), |p| format!("{p:.1}")),
            r.peak_bytes.map_or(String::new(), mib)
        );
        let found = matches(r, peers);
        for n in &names {
            match found.iter().find(|m| &m.peer.peer == n) {
                Some(m) => {
                    let memory = m.memory_ratio.map_or(String::new(), |x| format!("{x:.2}×"));
                    md += &format!(" {:.3} | {:.2}× | {memory} |", m.peer.ms, m.speedup);
                }
                None => md += " | | |",
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

/// The FMA peak of the run in GFLOP/s: the `fma_peak` line's rate, or, when the filter left that
/// line out (the suite measures the peak all the same), `gflops / (pct_peak / 100)` of any case,
/// which is how `pct_peak` was computed.
fn measured_peak(reports: &[&Report]) -> Option<f64> {
    if let Some(r) = reports.iter().find(|r| r.op == "fma_peak") {
        return r.gflops();
    }
    reports.iter().find_map(|r| match (r.gflops(), r.pct_peak) {
        (Some(g), Some(pct)) if pct > 0.0 => Some(g * 100.0 / pct),
        _ => None,
    })
}

/// The % of peak chart (compute cases other than the peak itself), if any case has one.
pub fn peak_chart(outcomes: &[Outcome]) -> Option<BarChart> {
    let reports: Vec<&Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Measured(r) => Some(r),
            Outcome::Failed(_) | Outcome::TooLarge(_) => None,
        })
        .collect();
    let bars: Vec<Bar> = reports
        .iter()
        .filter(|r| r.op != "fma_peak")
        .filter_map(|r| {
            Some(Bar {
                label: label(r),
                value: r.pct_peak?,
                series: 0,
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    let adapter = reports.last().map_or("", |r| r.adapter.as_str());
    let peak = measured_peak(&reports)
        .map_or(String::new(), |p| format!(" ({} GFLOP/s)", short_number(p)));
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
    ratio_chart(
        outcomes,
        peers,
        |m| Some(m.speedup),
        "cads speed-up over each peer (peer ms / cads ms)",
        "speed-up (1 = parity)",
    )
}

/// The memory chart (one bar per case and peer where both measured a peak), if any.
pub fn memory_chart(outcomes: &[Outcome], peers: &[PeerLine]) -> Option<BarChart> {
    ratio_chart(
        outcomes,
        peers,
        |m| m.memory_ratio,
        "peak memory of each peer over that of cads (peer bytes / cads bytes)",
        "memory ratio (1 = parity, above: cads needs less)",
    )
}

/// One bar per case and matching peer with a `pick`ed ratio, a line at parity; the legend lists
/// the peers that have bars.
fn ratio_chart(
    outcomes: &[Outcome],
    peers: &[PeerLine],
    pick: impl Fn(&PeerMatch) -> Option<f64>,
    title: &str,
    axis: &str,
) -> Option<BarChart> {
    let mut adapter = String::new();
    let mut found = Vec::new();
    for o in outcomes {
        let Outcome::Measured(r) = o else { continue };
        adapter.clone_from(&r.adapter);
        for m in matches(r, peers) {
            if let Some(value) = pick(&m) {
                found.push((label(r), value, m.peer.peer.clone()));
            }
        }
    }
    let series: Vec<String> = peer_names(peers)
        .into_iter()
        .filter(|n| found.iter().any(|(_, _, p)| p == n))
        .collect();
    let bars: Vec<Bar> = found
        .into_iter()
        .map(|(label, value, peer)| Bar {
            label,
            value,
            series: series.iter().position(|n| *n == peer).unwrap_or(0),
        })
        .collect();
    (!bars.is_empty()).then(|| BarChart {
        title: format!("{adapter}: {title}"),
        axis: axis.into(),
        series,
        bars,
        reference: Some(1.0),
    })
}

/// Write `bench.jsonl`, `report.md`, `peak.png` and (with matching peers) `peers.png` and (with
/// memory ratios) `memory.png` into `dir` (created if missing); returns the paths written. A
/// chart this run has no bars for is removed if an earlier report left one there, so the folder
/// never mixes two runs.
pub fn write_report(dir: &Path, outcomes: &[Outcome], peers: &[PeerLine]) -> Result<Vec<String>> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io {
            op: "bench --report",
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
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
    let charts = [
        ("peak.png", peak_chart(outcomes)),
        ("peers.png", peers_chart(outcomes, peers)),
        ("memory.png", memory_chart(outcomes, peers)),
    ];
    for (name, chart) in charts {
        match chart {
            Some(chart) => put(name, &render_png(&chart)?)?,
            None => match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(&dir.join(name))(e))
                }
                _ => {}
            },
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::compare::parse_peers;
    use crate::bench::compare::tests::{report, step, PEERS, STEP_PEERS};
    use crate::bench::Failure;

    fn peers() -> Vec<PeerLine> {
        let mut peers = parse_peers("f", PEERS).unwrap();
        peers.extend(parse_peers("f", STEP_PEERS).unwrap());
        peers
    }

    /// The peak, a matmul (two Burn-side peers), our f32 encoder step (PyTorch f32 and another
    /// peer without precision) and a failed case.
    fn run() -> Vec<Outcome> {
        vec![
            report("fma_peak", "64k_x8x8", 20.0, Some(100.0)),
            report("matmul", "1024", 44.0, Some(43.2)),
            step("f32", 200.0, 200 << 20),
            Outcome::Failed(Failure {
                op: "conv3d_fwd".into(),
                case: "c32".into(),
                error: "boom".into(),
                adapter: "llvmpipe".into(),
            }),
        ]
    }

    /// Width, height and the number of distinct colours of a PNG.
    fn decode(bytes: &[u8]) -> (u32, u32, usize) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let colours: std::collections::BTreeSet<&[u8]> =
            buf[..info.buffer_size()].chunks(3).collect();
        (info.width, info.height, colours.len())
    }

    #[test]
    fn the_table_has_every_peer_side_by_side_on_its_own_precision() {
        let md = markdown(&run(), &peers());
        // Peers in first-seen order, three columns each.
        assert!(
            md.contains(
                "| case | variant | precision | ms | rate | % of peak | peak MiB | burn 0.22 ms \
                 | speed-up vs burn 0.22 | memory vs burn 0.22 | cpu ms |"
            ),
            "{md}"
        );
        // 55 / 44 = 1.25 and 20 / 44 = 0.45; no peak, so no memory ratios.
        assert!(md.contains("| matmul/1024 | vec4_32x4_w8 |  | 44.000 | 45.45 GFLOP/s | 43.2 |  | 55.000 | 1.25× |  | 20.000 | 0.45× |  | | | | | | |"), "{md}");
        // 400 / 200 = 2.00, 300e6 B / 200 MiB = 1.43; the AMP line (250 ms) is not in the f32
        // row; "other" has no peak, so no memory ratio.
        assert!(md.contains("| pvt_encoder_fwd_bwd/vol16x48x48_n2 |  | f32 | 200.000 | 10.00 GFLOP/s |  | 200.0 | | | | | | | 400.000 | 2.00× | 1.43× | 800.000 | 4.00× |  |"), "{md}");
        assert!(!md.contains("250.000"), "{md}");
        assert!(md.contains("Measured FMA peak: 100.00 GFLOP/s."), "{md}");
        assert!(md.contains("- conv3d_fwd/c32: boom"), "{md}");
    }

    #[test]
    fn charts_hold_the_matched_ratios() {
        let (outcomes, peers) = (run(), peers());
        let peak = peak_chart(&outcomes).unwrap();
        assert_eq!(peak.bars.len(), 1, "the peak itself is not a bar");
        assert!(peak.title.contains("100 GFLOP/s"), "{}", peak.title);
        let speed: Vec<(String, f64)> = peers_chart(&outcomes, &peers)
            .unwrap()
            .bars
            .iter()
            .map(|b| (b.label.clone(), (b.value * 100.0).round() / 100.0))
            .collect();
        let encoder = "pvt_encoder_fwd_bwd/vol16x48x48_n2".to_string();
        assert_eq!(
            speed,
            [
                ("matmul/1024".to_string(), 1.25),
                ("matmul/1024".to_string(), 0.45),
                (encoder.clone(), 2.0),
                (encoder.clone(), 4.0)
            ]
        );
        assert!(peers_chart(&outcomes, &[]).is_none());
        let memory = memory_chart(&outcomes, &peers).unwrap();
        assert_eq!(memory.series, ["torch"], "only peers with a memory ratio");
        assert_eq!(memory.bars.len(), 1);
        assert!((memory.bars[0].value - 300e6 / (200u64 << 20) as f64).abs() < 1e-12);
        // An AMP step of ours meets PyTorch's AMP line and is labelled with its precision.
        let amp = [step("amp", 100.0, 100_000_000)];
        let amp_bars = memory_chart(&amp, &peers).unwrap().bars;
        assert_eq!(amp_bars[0].label, "pvt_encoder_fwd_bwd/vol16x48x48_n2 amp");
        assert!((amp_bars[0].value - 1.2).abs() < 1e-12);
        assert!(
            memory_chart(&outcomes[..2], &peers).is_none(),
            "no peaks, no chart"
        );
        // A run whose filter left the fma_peak line out: the peak comes back from pct_peak
        // (the matmul's 45.45 GFLOP/s at 43.2 % is 105.22 GFLOP/s).
        let filtered = &outcomes[1..];
        assert!(
            markdown(filtered, &peers).contains("Measured FMA peak: 105.22 GFLOP/s."),
            "{}",
            markdown(filtered, &peers)
        );
        let title = peak_chart(filtered).unwrap().title;
        assert!(title.contains("(105 GFLOP/s)"), "{title}");
    }

    #[test]
    fn the_report_folder_holds_the_lines_the_table_and_charts_that_decode() {
        let (outcomes, peers) = (run(), peers());
        let dir = std::env::temp_dir().join(format!("cads-report-unit-{}", std::process::id()));
        let written = write_report(&dir, &outcomes, &peers).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "bench.jsonl",
                "report.md",
                "peak.png",
                "peers.png",
                "memory.png"
            ]
        );
        let lines = std::fs::read_to_string(dir.join("bench.jsonl")).unwrap();
        let expected: Vec<String> = outcomes
            .iter()
            .map(|o| line_with_peers(o, &peers))
            .collect();
        assert_eq!(lines.lines().collect::<Vec<_>>(), expected);
        assert!(lines.contains(r#""memory_ratio":1.43"#), "{lines}");
        assert_eq!(
            std::fs::read_to_string(dir.join("report.md")).unwrap(),
            markdown(&outcomes, &peers)
        );
        for png in ["peak.png", "peers.png", "memory.png"] {
            let (w, h, colours) = decode(&std::fs::read(dir.join(png)).unwrap());
            assert!(w > 100 && h > 50, "{png}: {w}×{h}");
            assert!(colours >= 3, "{png}: background, ink and a bar colour");
        }
        // Again without peers, into the same folder: no ratio charts, and the earlier run's are
        // gone rather than left beside this run's table.
        let written = write_report(&dir, &outcomes, &[]).unwrap();
        assert_eq!(written.len(), 3, "{written:?}");
        assert!(!dir.join("peers.png").exists() && !dir.join("memory.png").exists());
        assert!(!std::fs::read_to_string(dir.join("report.md"))
            .unwrap()
            .contains("torch"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
