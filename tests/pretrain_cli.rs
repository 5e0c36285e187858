//! `cads pretrain` as a user runs it: a real SIGINT (Ctrl-C) in the middle of the run makes the
//! command save a checkpoint and exit 0 within a bound, and `--resume` continues from that
//! checkpoint's iteration with the metrics as one curve.
//!
//! The test spawns the `cads` binary, so run it on the system's Vulkan driver (a runner such as
//! scripts/newer-lavapipe.sh's does not reach the child process).

mod common;

use cads::checkpoint::LoadedCheckpoint;
use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::write_nifti;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The metrics lines' steps.
fn metric_steps(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

fn checkpoint_iteration(path: &Path) -> u64 {
    LoadedCheckpoint::read(&path.display().to_string())
        .unwrap()
        .position()
        .iteration
}

#[test]
fn ctrl_c_saves_a_checkpoint_exits_0_and_resume_continues_from_it() {
    let dir = std::env::temp_dir().join(format!("cads_pretrain_cli_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ct, _) = phantom(&PhantomConfig {
        dims: [40, 40, 20],
        spacing_mm: [2.0, 2.0, 2.0],
        noise_hu: 5.0,
        seed: 3,
    })
    .unwrap();
    let ct_path = dir.join("ct.nii.gz");
    write_nifti(&ct_path, &ct, None).unwrap();
    let out = dir.join("run");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "pretrain",
            "--preset",
            "tiny",
            "--data",
            ct_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            // Long enough never to end by itself: only the signal stops it.
            "--epochs",
            "50",
            "--iters-per-epoch",
            "20",
            "--checkpoint-every",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let mut child = common::cads_command()
        .args(args(&[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = out.join("metrics.jsonl");
    let t0 = Instant::now();
    while metric_steps(&metrics).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "cads pretrain ended ({status}) before its first metrics line: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if t0.elapsed() > Duration::from_secs(600) {
            child.kill().ok();
            panic!("no metrics line after 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let signalled_at = metric_steps(&metrics).len() as u64;
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    // It finishes the step under way and one more (the stop is taken after a read step), then
    // saves: seconds on lavapipe, so two minutes is a generous bound.
    let t1 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t1.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            panic!("cads pretrain still running 120 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(status.success(), "exit {status} after SIGINT: {stderr}");
    assert!(stderr.contains("stopping: saving a checkpoint"), "{stderr}");
    let checkpoint = out.join("checkpoint.safetensors");
    let k = checkpoint_iteration(&checkpoint);
    assert!(
        k >= signalled_at && k < 50 * 20,
        "checkpoint at iteration {k}, signal after {signalled_at} steps"
    );
    assert!(
        stdout.contains(&format!("interrupted at iteration {k}")),
        "{stdout}"
    );
    assert_eq!(metric_steps(&metrics), (0..k).collect::<Vec<_>>());
    assert!(out.join("teacher_backbone.safetensors").is_file());

    // --resume continues at iteration k: one more step, the curve extended by exactly it.
    let o = common::cads_command()
        .args(args(&["--resume", "--max-steps", "1"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "resume: {stderr}");
    assert!(
        stderr.contains(&format!("at iteration {k} (epoch {})", k / 20)),
        "{stderr}"
    );
    assert_eq!(checkpoint_iteration(&checkpoint), k + 1);
    assert_eq!(metric_steps(&metrics), (0..=k).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}
