//! Data parallel over MPI (cargo feature `mpi`; needs Open MPI's `mpirun`): the `cads` binary
//! launched as `mpirun -np 2 --oversubscribe` trains like one process with the whole (global)
//! batch — a tiny CADS pretraining run (also its collapse monitors) and a tiny PVT-UNet run
//! (per-sample and batch Dice), same losses and final weights within the tolerances of
//! tests/replica_compare; a pretraining checkpoint of 2 ranks resumes on 1 and continues the
//! 1-rank run; the gradient all-reduce overlapped with the backward pass (the default) gives the
//! bits of the one after it (`CADS_DIST_OVERLAP=off`); a rank that fails ends the job with its
//! error, and a killed rank ends it too, each within a bound.
//!
//! `cargo test --release --features mpi --test mpi` (root needs OMPI_ALLOW_RUN_AS_ROOT=1 and
//! OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, which these tests set for their own launches).
#![cfg(feature = "mpi")]

mod common;
mod replica_compare;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::spheres::{sphere_volume, SphereConfig};
use cads::data::{write_nifti, Affine, Datatype, Volume};
use cads::models::PvtUnet;
use cads::nn::{load_safetensors, LoadOptions, Module};
use cads::pretrain::{CadsConfig, CadsModel};
use cads::segment::train::RunInfo;
use cads::util::Rng;
use replica_compare::{compare_states, host_state, Steps, LOSS_TOL};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cads_mpi_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cads ARGS` alone (np = 1) or under `mpirun -np NP --oversubscribe`.
fn cads_command(np: usize, args: &[&str]) -> Command {
    let cads = env!("CARGO_BIN_EXE_cads");
    let mut c = if np == 1 {
        Command::new(cads)
    } else {
        let mut c = Command::new("mpirun");
        c.args([
            "-np",
            &np.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .arg(cads);
        c
    };
    c.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Containers often forbid the cross-process memory attach of the shared-memory
        // transport's single-copy path; plain copies work everywhere.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("CADS_DIST_TIMEOUT_S", "120")
        // Tune into the tests' own cache folder, never the user's (mpirun passes the
        // environment on to the ranks it starts here).
        .env(cads::gpu::TUNE_CACHE_ENV, common::test_tune_cache());
    c
}

fn run_ok(np: usize, args: &[&str]) -> Output {
    run_ok_with(np, args, &[])
}

/// [`run_ok`] with extra environment variables.
fn run_ok_with(np: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = cads_command(np, args)
        .envs(env.iter().copied())
        .output()
        .expect("start cads / mpirun");
    assert!(
        out.status.success(),
        "np {np}: cads {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metrics_losses(run: &Path, key: &str) -> Vec<f32> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()[key]
                .as_f64()
                .unwrap() as f32
        })
        .collect()
}

fn compare_modules(what: &str, got: &dyn Module, want: &dyn Module, steps: Steps) {
    compare_states(what, &host_state(got), &host_state(want), steps);
}

/// A small CT (the phantom) as NIfTI: the pretraining input.
fn phantom_ct(dir: &Path) -> PathBuf {
    let (ct, _) = phantom(&PhantomConfig {
        dims: [40, 40, 20],
        spacing_mm: [2.0, 2.0, 2.0],
        noise_hu: 5.0,
        seed: 3,
    })
    .unwrap();
    let path = dir.join("ct.nii.gz");
    write_nifti(&path, &ct, None).unwrap();
    path
}

/// A tiny pretraining of one epoch of `iters` steps at global batch 2.
fn pretrain_args<'a>(ct: &'a str, out: &'a str, cache: &'a str, iters: &'a str) -> Vec<&'a str> {
    vec![
        "pretrain",
        "--preset",
        "tiny",
        "--data",
        ct,
        "--out",
        out,
        "--cache",
        cache,
        "--epochs",
        "1",
        "--iters-per-epoch",
        iters,
        "--batch",
        "2",
        "--workers",
        "1",
        "--checkpoint-every",
        "0",
        "--seed",
        "5",
    ]
}

/// Student and teacher of a pretraining checkpoint.
fn pretrain_model(run: &Path) -> CadsModel {
    let model = CadsModel::new(&common::gpu(), &CadsConfig::tiny()).unwrap();
    let ck = run.join("checkpoint.safetensors").display().to_string();
    for (prefix, module) in [
        ("model.student.", &model.student as &dyn Module),
        ("model.teacher.", &model.teacher as &dyn Module),
    ] {
        load_safetensors(module, &ck, &LoadOptions::strict().take_prefix(prefix)).unwrap();
    }
    model
}

#[test]
fn pretraining_on_two_ranks_equals_one_rank_and_resumes_on_one() {
    let dir = temp_dir("pretrain");
    let ct = phantom_ct(&dir);
    let s = |p: &Path| p.display().to_string();
    let (ct, cache) = (s(&ct), s(&dir.join("cache")));
    let (one, two, split) = (dir.join("one"), dir.join("two"), dir.join("split"));

    run_ok(1, &pretrain_args(&ct, &s(&one), &cache, "2"));
    let out = run_ok(2, &pretrain_args(&ct, &s(&two), &cache, "2"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("data parallel: 2 ranks (mpi), global batch 2 = 1 per rank"),
        "{text}"
    );

    let want: Vec<f64> = metrics_losses(&one, "loss")
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_eq!(want.len(), 2);
    common::assert_close("losses", &metrics_losses(&two, "loss"), &want, LOSS_TOL);
    // The collapse monitors are the whole batch's too (pretrain::replica_stats).
    for key in ["entropy", "kl_uniform", "feature_std"] {
        let want: Vec<f64> = metrics_losses(&one, key)
            .iter()
            .map(|&v| v as f64)
            .collect();
        common::assert_close(key, &metrics_losses(&two, key), &want, LOSS_TOL);
    }
    let steps = Steps::AdamW {
        lr_sum: 2.0 * CadsConfig::tiny().peak_lr(),
    };
    let (a, b) = (pretrain_model(&one), pretrain_model(&two));
    compare_modules("student", &b.student, &a.student, steps);
    compare_modules("teacher", &b.teacher, &a.teacher, steps);

    // One step on 2 ranks, then the rest on 1: the checkpoint holds the global state only.
    let split_s = s(&split);
    let mut first = pretrain_args(&ct, &split_s, &cache, "2");
    first.extend(["--max-steps", "1"]);
    run_ok(2, &first);
    let mut rest = pretrain_args(&ct, &split_s, &cache, "2");
    rest.push("--resume");
    run_ok(1, &rest);
    common::assert_close(
        "resumed losses",
        &metrics_losses(&split, "loss"),
        &want,
        LOSS_TOL,
    );
    let c = pretrain_model(&split);
    compare_modules("resumed student", &c.student, &a.student, steps);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An nnU-Net raw folder of sphere volumes (5 cases, one held out).
fn spheres_dataset(dir: &Path) -> PathBuf {
    let raw = dir.join("raw");
    for d in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(raw.join(d)).unwrap();
    }
    std::fs::write(
        raw.join("dataset.json"),
        r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "sphere": 1}, "numTraining": 5, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    let cfg = SphereConfig {
        size: [16, 32, 32],
        count: (2, 4),
        radius: (3.0, 6.0),
        noise_std: 0.3,
        ..SphereConfig::default()
    };
    let affine: Affine = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let mut rng = Rng::new(1);
    for case in 0..5 {
        let v = sphere_volume(&cfg, &mut rng).unwrap();
        // Host [D, H, W] row-major is NIfTI [X, Y, Z] = [W, H, D].
        let dims = [32, 32, 16];
        let image = Volume::new(v.image, dims, affine, Datatype::Float32).unwrap();
        let label = v.mask.iter().map(|&m| m as f32).collect();
        let label = Volume::new(label, dims, affine, Datatype::Uint8).unwrap();
        write_nifti(
            raw.join(format!("imagesTr/s{case}_0000.nii.gz")),
            &image,
            None,
        )
        .unwrap();
        write_nifti(raw.join(format!("labelsTr/s{case}.nii.gz")), &label, None).unwrap();
    }
    raw
}

fn segment_net(run: &Path) -> PvtUnet {
    let info: RunInfo =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    let net = PvtUnet::new(&common::gpu(), info.model_config()).unwrap();
    let ck = run
        .join("checkpoint_latest.safetensors")
        .display()
        .to_string();
    load_safetensors(&net, &ck, &LoadOptions::strict().take_prefix("model.net.")).unwrap();
    net
}

#[test]
fn segmentation_on_two_ranks_equals_one_rank() {
    segmentation_one_rank_against_two("segment", false);
}

/// nnU-Net's batch Dice: the ranks all-reduce the per-class sums (segment::global_batch_dice).
#[test]
fn segmentation_with_batch_dice_on_two_ranks_equals_one_rank() {
    segmentation_one_rank_against_two("segment_batch_dice", true);
}

fn segmentation_one_rank_against_two(name: &str, batch_dice: bool) {
    let dir = temp_dir(name);
    let raw = spheres_dataset(&dir).display().to_string();
    let args = |out: &Path| -> Vec<String> {
        let mut a = [
            "segment",
            "train",
            "--data",
            &raw,
            "--out",
            &out.display().to_string(),
            "--model",
            "tiny",
            "--patch",
            "16,32,32",
            "--batch",
            "2",
            "--epochs",
            "1",
            "--iterations",
            "2",
            "--optimizer",
            "sgd",
            "--seed",
            "3",
        ]
        .map(String::from)
        .to_vec();
        if batch_dice {
            a.push("--batch-dice".into());
        }
        a
    };
    let (one, two) = (dir.join("one"), dir.join("two"));
    let a = args(&one);
    run_ok(1, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let b = args(&two);
    run_ok(2, &b.iter().map(String::as_str).collect::<Vec<_>>());
    let want: Vec<f64> = metrics_losses(&one, "train_loss")
        .iter()
        .map(|&v| v as f64)
        .collect();
    common::assert_close(
        "epoch loss",
        &metrics_losses(&two, "train_loss"),
        &want,
        LOSS_TOL,
    );
    compare_modules("net", &segment_net(&two), &segment_net(&one), Steps::Sgd);

    // The all-reduce after the backward pass instead of during it: the same bits (two ranks
    // sum as a + b whatever the buckets).
    let serial = dir.join("serial");
    let c = args(&serial);
    let c: Vec<&str> = c.iter().map(String::as_str).collect();
    run_ok_with(2, &c, &[("CADS_DIST_OVERLAP", "off")]);
    assert_eq!(
        metrics_losses(&serial, "train_loss"),
        metrics_losses(&two, "train_loss")
    );
    assert_eq!(
        host_state(&segment_net(&serial)),
        host_state(&segment_net(&two)),
        "overlapped and serial all-reduce differ under MPI"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_rank_ends_the_job_with_its_error() {
    let dir = temp_dir("fail");
    let ct = phantom_ct(&dir).display().to_string();
    // The run folder is a file: rank 0 (which alone writes it) fails while rank 1 waits for it.
    let out_file = dir.join("not-a-folder");
    std::fs::write(&out_file, b"x").unwrap();
    let out_s = out_file.display().to_string();
    let started = Instant::now();
    let out = cads_command(2, &pretrain_args(&ct, &out_s, &out_s, "2"))
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("rank 0 of 2") && err.contains("MPI_Abort"),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pids of the processes whose parent is `parent` and whose environment says MPI rank
/// `rank`.
fn rank_pids(parent: u32, rank: usize) -> Vec<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4 (after the parenthesised name) is the parent pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            ppid == Some(parent) && env.split(|&b| b == 0).any(|kv| kv == want.as_bytes())
        })
        .collect()
}

#[test]
fn a_killed_rank_ends_the_job_within_a_bound() {
    let dir = temp_dir("kill");
    let ct = phantom_ct(&dir).display().to_string();
    let out = dir.join("run").display().to_string();
    let cache = dir.join("cache").display().to_string();
    let args = pretrain_args(&ct, &out, &cache, "100000"); // longer than the test
    let mut child = cads_command(2, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until rank 1 runs, give it time to enter training, then kill it.
    let started = Instant::now();
    let victim = loop {
        if let Some(&pid) = rank_pids(child.id(), 1).first() {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rank 1 never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(8));
    let killed = Instant::now();
    let status = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the job still ran 60 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("job ended {:?} after the kill: {status}", killed.elapsed());
    assert!(!status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
