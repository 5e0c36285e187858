//! `--precision f32|amp` on the command line (`cads pretrain`, `cads segment train`), tiny runs:
//!
//! - an amp run finishes with finite losses, names amp (start line, epoch line, metrics.jsonl,
//!   run.json) and scales its loss by default; its first-step loss is within 5e-3 relative of
//!   the f32 run's from the same seed (the reasoning is in tests/precision_train.rs; measured
//!   on lavapipe: ~1e-6 for the tiny CADS recipe) and, for CADS, not bit-identical to it;
//! - `--precision bogus` fails naming the option, the value and f32 or amp;
//! - resume across precisions continues with a note, the loss scaler started afresh or dropped,
//!   each metrics line naming the precision its step ran in; loss scaling changed at the same
//!   precision is refused;
//! - with SHADER_F16 withheld (`CADS_NO_F16=1`) amp says in one line that it is unavailable and
//!   trains in f32, bit-identical to f32, and records f32.
//!
//! The tests spawn the `cads` binary, so run them on the system's Vulkan driver (or with the
//! environment of ~/.cache/cads/mesa-trixie/env.sh), not through a cargo runner.

mod common;

use cads::checkpoint::LoadedCheckpoint;
use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::{write_nifti, Affine, Datatype, Volume};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Relative tolerance on the first-step loss, amp against f32 (tests/precision_train.rs).
const LOSS_REL: f64 = 5e-3;

fn cads(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::cads_command();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run and require success; (stdout, stderr).
fn ok(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let o = cads(args, env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "cads {args:?} failed:\n{out}\n{err}");
    (out, err)
}

fn metrics(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn precisions(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|v| v["precision"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cads-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_bad_precision_names_the_option_the_value_and_the_choices() {
    for command in [
        &["pretrain", "--out", "/nonexistent/cads-run"][..],
        &[
            "segment",
            "train",
            "--data",
            "/nonexistent",
            "--out",
            "/nonexistent/cads-run",
        ][..],
    ] {
        let mut args = command.to_vec();
        args.extend(["--precision", "bogus"]);
        let o = cads(&args, &[]);
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        for part in ["--precision", "bogus", "f32 or amp"] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
    }
    // --loss-scale and --no-loss-scale exclude each other.
    let o = cads(
        &[
            "pretrain",
            "--out",
            "/nonexistent/x",
            "--loss-scale",
            "--no-loss-scale",
        ],
        &[],
    );
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("cannot be used with"),
        "{err}"
    );
}

#[test]
fn pretrain_amp_against_f32_resume_across_precisions_and_the_f16_fallback() {
    let dir = temp_dir("precision-pretrain");
    let (ct, _) = phantom(&PhantomConfig {
        dims: [40, 40, 20],
        spacing_mm: [2.0, 2.0, 2.0],
        noise_hu: 5.0,
        seed: 3,
    })
    .unwrap();
    let ct_path = dir.join("ct.nii.gz");
    write_nifti(&ct_path, &ct, None).unwrap();
    let cache = dir.join("cache");
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "pretrain",
            "--preset",
            "tiny",
            "--data",
            ct_path.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
            "--iters-per-epoch",
            "3",
            "--checkpoint-every",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |out: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let a = args(out, extra);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    let stage = |v: &Value| -> Vec<f64> {
        v["stage_losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };

    // f32, one step of three (the run is resumed below).
    let f32_out = dir.join("f32");
    let (stdout, _) = run(&f32_out, &["--max-steps", "1"], &[]);
    assert!(
        stdout.contains("precision f32") && !stdout.contains("loss scaling"),
        "{stdout}"
    );
    let f32_first = metrics(&f32_out.join("metrics.jsonl"))[0].clone();

    // amp, the whole run: finite losses, amp named, loss scaling on by default.
    let amp_out = dir.join("amp");
    let (stdout, stderr) = run(&amp_out, &["--precision", "amp"], &[]);
    assert!(
        stdout.contains("precision amp") && stdout.contains("loss scaling"),
        "{stdout}"
    );
    assert!(
        stderr.contains("(3 reads, amp)"),
        "the epoch line: {stderr}"
    );
    let lines = metrics(&amp_out.join("metrics.jsonl"));
    assert_eq!(precisions(&lines), ["amp", "amp", "amp"]);
    assert!(lines
        .iter()
        .all(|v| v["loss"].as_f64().unwrap().is_finite()));
    // Each line carries the scale its step ran with: 2^16 first, then unchanged or halved (a
    // skipped step), never grown within 2000 steps; f32 lines carry none.
    assert!(f32_first.get("loss_scale").is_none(), "f32 has no scale");
    let scales: Vec<f64> = lines
        .iter()
        .map(|v| v["loss_scale"].as_f64().unwrap())
        .collect();
    assert_eq!(scales[0], 65536.0, "{scales:?}");
    assert!(
        scales
            .windows(2)
            .all(|w| w[1] == w[0] || w[1] == w[0] / 2.0),
        "{scales:?}"
    );
    let (l32, lamp) = (
        f32_first["loss"].as_f64().unwrap(),
        lines[0]["loss"].as_f64().unwrap(),
    );
    eprintln!(
        "pretrain first-step loss: f32 {l32:.7}, amp {lamp:.7}, relative {:.2e}",
        rel(lamp, l32)
    );
    assert!(rel(lamp, l32) <= LOSS_REL, "amp {lamp} vs f32 {l32}");
    for (a, b) in stage(&lines[0]).into_iter().zip(stage(&f32_first)) {
        assert!(rel(a, b) <= LOSS_REL, "stage loss: amp {a} vs f32 {b}");
    }
    assert_ne!(stage(&lines[0]), stage(&f32_first), "amp ran the f32 path");
    let ck_path = |out: &Path| out.join("checkpoint.safetensors").display().to_string();
    let ck = LoadedCheckpoint::read(&ck_path(&amp_out)).unwrap();
    let scale = ck.loss_scaler("loss_scaler").unwrap();
    // The tiny heads' f16 gradients overflow at 2^16: the scaler backs off (steps skipped).
    eprintln!("amp scaler after 3 steps: {scale:?}");
    assert!(scale.scale <= 65536.0 && scale.scale >= 65536.0 / 8.0);
    assert!(ck.config().unwrap().contains("\"precision\": \"amp\""));

    // f32 -> amp on resume: noted, a fresh scaler, the step's line says amp.
    let (_, stderr) = run(
        &f32_out,
        &["--resume", "--max-steps", "1", "--precision", "amp"],
        &[],
    );
    assert!(
        stderr.contains("resume: precision f32 -> amp")
            && stderr.contains("loss scaling off -> on"),
        "{stderr}"
    );
    let ck = LoadedCheckpoint::read(&ck_path(&f32_out)).unwrap();
    assert_eq!(ck.position().iteration, 2);
    assert_eq!(ck.loss_scaler_names(), ["loss_scaler"]);
    // amp -> f32: noted, the scaler dropped.
    let (_, stderr) = run(&f32_out, &["--resume"], &[]);
    assert!(
        stderr.contains("resume: precision amp -> f32")
            && stderr.contains("loss scaling on -> off"),
        "{stderr}"
    );
    let ck = LoadedCheckpoint::read(&ck_path(&f32_out)).unwrap();
    assert_eq!(ck.position().iteration, 3);
    assert!(ck.loss_scaler_names().is_empty());
    let lines = metrics(&f32_out.join("metrics.jsonl"));
    assert_eq!(precisions(&lines), ["f32", "amp", "f32"]);
    assert!(lines
        .iter()
        .all(|v| v["loss"].as_f64().unwrap().is_finite()));
    // Loss scaling changed at the same precision: refused, saying how to keep it.
    let a = args(
        &amp_out,
        &["--resume", "--precision", "amp", "--no-loss-scale"],
    );
    let o = cads(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let (_, stderr) = text(&o);
    assert!(
        !o.status.success()
            && stderr.contains("loss_scale: true -> false")
            && stderr.contains("--no-loss-scale"),
        "{stderr}"
    );

    // No SHADER_F16: one line says so, f32 runs (bit-identical) and is recorded.
    let fallback = dir.join("fallback");
    let (stdout, stderr) = run(
        &fallback,
        &["--max-steps", "1", "--precision", "amp"],
        &[("CADS_NO_F16", "1")],
    );
    assert_eq!(
        stderr
            .matches("mixed precision is unavailable on this adapter")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stdout.contains("precision f32") && !stdout.contains("loss scaling"),
        "{stdout}"
    );
    let first = metrics(&fallback.join("metrics.jsonl"))[0].clone();
    assert_eq!(first["precision"], "f32");
    assert_eq!(
        (first["loss"].as_f64(), stage(&first)),
        (f32_first["loss"].as_f64(), stage(&f32_first))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segment_train_amp_against_f32_and_resume_across_precisions() {
    const LPS: Affine = [
        [-0.8, 0.0, 0.0, 30.0],
        [0.0, -0.8, 0.0, 40.0],
        [0.0, 0.0, 2.0, -10.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let dir = temp_dir("precision-segment");
    for d in ["raw/imagesTr", "raw/labelsTr"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("raw/dataset.json"),
        r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 2, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    let dims = [40, 36, 20];
    let n = dims.iter().product::<usize>();
    for (id, shift) in [("a", 0usize), ("b", 11)] {
        let data: Vec<f32> = (0..n)
            .map(|i| (((i + shift) * 37) % 400) as f32 - 200.0)
            .collect();
        let label = data.iter().map(|&v| (v > 0.0) as u8 as f32).collect();
        let img = Volume::new(data, dims, LPS, Datatype::Int16).unwrap();
        let lab = Volume::new(label, dims, LPS, Datatype::Uint8).unwrap();
        write_nifti(
            dir.join(format!("raw/imagesTr/{id}_0000.nii.gz")),
            &img,
            None,
        )
        .unwrap();
        write_nifti(dir.join(format!("raw/labelsTr/{id}.nii.gz")), &lab, None).unwrap();
    }
    let raw = dir.join("raw");
    let cache = dir.join("preprocessed");
    let train = |out: &Path, extra: &[&str]| -> (String, String) {
        let mut a = vec![
            "segment",
            "train",
            "--data",
            raw.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--model",
            "tiny",
            "--iterations",
            "1",
            "--patch",
            "16,32,32",
            "--batch",
            "1",
            "--val-fraction",
            "0.5",
        ];
        a.extend_from_slice(extra);
        ok(&a, &[])
    };
    let (f32_out, amp_out) = (dir.join("f32"), dir.join("amp"));
    train(&f32_out, &["--epochs", "1"]);
    let (stdout, _) = train(&amp_out, &["--epochs", "1", "--precision", "amp"]);
    assert!(stdout.contains("precision amp, loss scaling"), "{stdout}");
    assert!(stdout.contains("(amp)"), "the epoch line: {stdout}");
    let (m32, mamp) = (
        metrics(&f32_out.join("metrics.jsonl")),
        metrics(&amp_out.join("metrics.jsonl")),
    );
    assert_eq!(
        (precisions(&m32), precisions(&mamp)),
        (vec!["f32".to_string()], vec!["amp".to_string()])
    );
    // One iteration: the epoch's loss is the first step's.
    let (l32, lamp) = (
        m32[0]["train_loss"].as_f64().unwrap(),
        mamp[0]["train_loss"].as_f64().unwrap(),
    );
    eprintln!(
        "segment first-step loss: f32 {l32:.7}, amp {lamp:.7}, relative {:.2e}",
        rel(lamp, l32)
    );
    assert!(
        lamp.is_finite() && rel(lamp, l32) <= LOSS_REL,
        "amp {lamp} vs f32 {l32}"
    );
    let run_json: Value =
        serde_json::from_str(&std::fs::read_to_string(amp_out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["train"]["precision"], "amp");
    assert_eq!(run_json["train"]["loss_scale"], true);
    // The scale the epoch ended at, and the skipped steps: a fresh scaler starts at 2^16 and
    // halves at each skipped step (it could only grow after 2000 good steps), so the two agree.
    assert!(m32[0].get("loss_scale").is_none(), "f32 has no scale");
    let (scale, skipped) = (
        mamp[0]["loss_scale"].as_f64().unwrap(),
        mamp[0]["skipped_steps"].as_u64().unwrap(),
    );
    assert!(skipped <= 1, "one iteration, {skipped} skipped");
    assert_eq!(scale, 65536.0 * 0.5f64.powi(skipped as i32));

    // amp -> f32 on resume (one more epoch): noted, the scaler dropped, the line says f32.
    let (_, stderr) = train(&amp_out, &["--epochs", "2", "--resume"]);
    assert!(
        stderr.contains("resume: precision amp -> f32, loss scaling on -> off"),
        "{stderr}"
    );
    let lines = metrics(&amp_out.join("metrics.jsonl"));
    assert_eq!(precisions(&lines), ["amp", "f32"]);
    assert!(lines
        .iter()
        .all(|v| v["train_loss"].as_f64().unwrap().is_finite()));
    let ck = LoadedCheckpoint::read(
        &amp_out
            .join("checkpoint_latest.safetensors")
            .display()
            .to_string(),
    )
    .unwrap();
    assert!(ck.loss_scaler_names().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
