//! `cads pretrain --devices 2`: two replicas in one process (threads, one device each on the
//! one adapter here) train like `cads pretrain` with the whole batch on one device: the same
//! per-step losses in metrics.jsonl within the tolerance of tests/replica_compare. Spawns the
//! `cads` binary (run with the system's lavapipe, not the private-prefix runner).

mod common;
mod replica_compare;

use std::path::Path;

use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::write_nifti;
use replica_compare::LOSS_TOL;

fn cads(args: &[&str]) -> String {
    let out = common::cads_command().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cads {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn losses(run: &Path) -> Vec<f32> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap() as f32
        })
        .collect()
}

#[test]
fn two_devices_in_one_process_pretrain_like_one() {
    let dir = std::env::temp_dir().join(format!("cads_dp_cli_{}", std::process::id()));
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
    let s = |p: &Path| p.display().to_string();
    let (ct_s, cache) = (s(&ct_path), s(&dir.join("cache")));
    let run = |out: &Path, devices: &str| {
        cads(&[
            "pretrain",
            "--preset",
            "tiny",
            "--data",
            &ct_s,
            "--out",
            &s(out),
            "--cache",
            &cache,
            "--epochs",
            "1",
            "--iters-per-epoch",
            "2",
            "--batch",
            "2",
            "--workers",
            "1",
            "--checkpoint-every",
            "0",
            "--seed",
            "5",
            "--devices",
            devices,
        ])
    };
    run(&dir.join("one"), "1");
    let text = run(&dir.join("two"), "2");
    assert!(
        text.contains("data parallel: 2 ranks (local), global batch 2 = 1 per rank"),
        "{text}"
    );
    let want: Vec<f64> = losses(&dir.join("one")).iter().map(|&v| v as f64).collect();
    assert_eq!(want.len(), 2);
    common::assert_close("losses", &losses(&dir.join("two")), &want, LOSS_TOL);
    let _ = std::fs::remove_dir_all(&dir);
}
