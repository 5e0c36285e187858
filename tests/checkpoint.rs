//! Checkpoints resume exactly: a small student/teacher MLP trained N steps straight (AdamW, and
//! SGD with Nesterov momentum; random batches from a seeded `Rng`; scheduled lr / wd; EMA
//! teacher; a DINO-style center as an extra) against N/2 steps, a save, and a restart that builds
//! every module, optimizer and generator anew from the checkpoint and runs N/2 more: the losses
//! and final weights are bit-identical on the same adapter. Plus: corrupt, truncated, foreign,
//! newer-version and other-model files are typed errors that change nothing, and a write that
//! fails midway leaves the previous checkpoint readable.

mod common;

use cads::checkpoint::{Checkpoint, LoadedCheckpoint, Position, FORMAT, VERSION};
use cads::nn::state_file::write_atomically_with;
use cads::nn::{copy_state, ema_update, Linear, LinearInit, Module, StateEntry};
use cads::optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use cads::util::Rng;
use cads::{ops, Error, Gpu, Tensor};
use common::*;

const IN: usize = 6;
const OUT: usize = 4;
const BATCH: usize = 8;
const STEPS: usize = 6;

/// 6 → hidden → 4 with GELU, under the dotted names `fc1.*`, `fc2.*`.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(gpu: &Gpu, hidden: usize, seed: u64) -> Mlp {
        let mut rng = Rng::new(seed);
        Mlp {
            fc1: Linear::new(gpu, IN, hidden, true, LinearInit::Torch, &mut rng).unwrap(),
            fc2: Linear::new(gpu, hidden, OUT, true, LinearInit::Torch, &mut rng).unwrap(),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2
            .forward(&ops::gelu(&self.fc1.forward(x).unwrap()).unwrap())
            .unwrap()
    }
}

impl Module for Mlp {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.fc1.state(&format!("{prefix}fc1."), out);
        self.fc2.state(&format!("{prefix}fc2."), out);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    AdamW,
    Sgd,
}

/// Everything a training run holds.
struct Run {
    student: Mlp,
    teacher: Mlp,
    opt: Box<dyn Optimizer>,
    kind: Kind,
    rng: Rng,
    center: Tensor,
}

const CONFIG: &str = r#"{"hidden": 16, "steps": 6, "note": "checkpoint test"}"#;

/// A run built from scratch; `seed` changes every initial value (a restart must not depend on
/// them: the checkpoint overwrites all).
fn build(gpu: &Gpu, kind: Kind, hidden: usize, seed: u64) -> Run {
    let student = Mlp::new(gpu, hidden, seed);
    let teacher = Mlp::new(gpu, hidden, seed + 1);
    copy_state(&teacher, &student).unwrap();
    let groups = ParamGroup::split_decay_named(&student.named_parameters());
    let opt: Box<dyn Optimizer> = match kind {
        Kind::AdamW => Box::new(
            AdamW::new(
                groups,
                AdamWConfig {
                    lr: 1e-2,
                    weight_decay: 0.04,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
        Kind::Sgd => Box::new(Sgd::new(groups, SgdConfig::nnunet(0.05)).unwrap()),
    };
    Run {
        student,
        teacher,
        opt,
        kind,
        rng: Rng::new(seed + 2),
        center: Tensor::zeros(gpu, &[OUT]).unwrap(),
    }
}

/// One CADS-shaped iteration: schedules, a random batch, loss, backward, step, EMA, center.
fn step(gpu: &Gpu, run: &mut Run, it: usize) -> f32 {
    let t = it as f64;
    match run.kind {
        Kind::AdamW => {
            run.opt.set_lr_all(1e-2 * (1.0 - t / 10.0)).unwrap();
            run.opt.set_weight_decay(0, 0.04 + 0.02 * t).unwrap();
        }
        Kind::Sgd => run
            .opt
            .set_lr_all(0.05 * (1.0 - t / 10.0).powf(0.9))
            .unwrap(),
    }
    let x = run.rng.vec_uniform(BATCH * IN, -1.0, 1.0);
    let y = run.rng.vec_uniform(BATCH * OUT, -1.0, 1.0);
    let x = Tensor::from_slice(gpu, &x, &[BATCH, IN]).unwrap();
    let y = Tensor::from_slice(gpu, &y, &[BATCH, OUT]).unwrap();
    let pred = run.student.forward(&x);
    let loss = ops::mse(&pred, &y).unwrap();
    let grads = loss.backward().unwrap();
    run.opt.step(&grads).unwrap();
    ema_update(&run.teacher, &run.student, 0.9 + 0.01 * t).unwrap();
    // DINO center on the host: c ← 0.9·c + 0.1·mean over the batch of the teacher's output.
    let out = gpu.no_grad(|| run.teacher.forward(&x)).to_vec().unwrap();
    let mut c = run.center.to_vec().unwrap();
    for (j, cj) in c.iter_mut().enumerate() {
        let mean = (0..BATCH).map(|b| out[b * OUT + j]).sum::<f32>() / BATCH as f32;
        *cj = 0.9 * *cj + 0.1 * mean;
    }
    run.center = Tensor::from_slice(gpu, &c, &[OUT]).unwrap();
    loss.to_scalar().unwrap()
}

fn save(run: &Run, path: &str, it: usize) {
    Checkpoint::new()
        .model("student", &run.student)
        .model("teacher", &run.teacher)
        .optimizer("opt", run.opt.as_ref())
        .position(0, it as u64)
        .rng("data", &run.rng)
        .config(CONFIG)
        .extra("dino.center", &run.center)
        .save(path)
        .unwrap();
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Every number a run holds, as bit patterns.
fn snapshot(run: &Run) -> Vec<(String, Vec<u32>)> {
    let mut v = Vec::new();
    for (who, m) in [("student", &run.student), ("teacher", &run.teacher)] {
        for e in m.named_state() {
            v.push((format!("{who}.{}", e.name), bits(&e.tensor)));
        }
    }
    let state = run.opt.export_state().unwrap();
    for p in &state.params {
        for (slot, t) in &p.slots {
            v.push((format!("opt.{}.{slot}.step{:?}", p.name, p.step), bits(t)));
        }
    }
    for (g, group) in state.groups.iter().enumerate() {
        let hyper = [group.lr.to_bits(), group.weight_decay.to_bits()];
        v.push((
            format!("opt.group{g}"),
            hyper
                .iter()
                .flat_map(|h| [*h as u32, (h >> 32) as u32])
                .collect(),
        ));
    }
    v.push(("center".into(), bits(&run.center)));
    v.push((
        "rng".into(),
        vec![run.rng.state() as u32, (run.rng.state() >> 32) as u32],
    ));
    v
}

/// A scratch directory of this test binary.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cads-checkpoint-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn resume_is_bitwise(kind: Kind) {
    let gpu = gpu();
    let dir = scratch(&format!("{kind:?}"));
    let path = dir.join("run.safetensors");
    let path = path.to_str().unwrap();

    let mut straight = build(&gpu, kind, 16, 1);
    let losses: Vec<u32> = (0..STEPS)
        .map(|it| step(&gpu, &mut straight, it).to_bits())
        .collect();

    let mut first = build(&gpu, kind, 16, 1);
    let mut resumed: Vec<u32> = (0..STEPS / 2)
        .map(|it| step(&gpu, &mut first, it).to_bits())
        .collect();
    save(&first, path, STEPS / 2);
    drop(first);

    // A fresh process, in effect: everything built anew with other seeds, then restored.
    let mut run = build(&gpu, kind, 16, 500);
    let ck = LoadedCheckpoint::read(path).unwrap();
    assert_eq!(ck.version(), VERSION);
    assert_eq!(ck.config(), Some(CONFIG));
    assert_eq!(
        ck.position(),
        Position {
            epoch: 0,
            iteration: (STEPS / 2) as u64
        }
    );
    ck.restore(
        &[("student", &run.student), ("teacher", &run.teacher)],
        &mut [("opt", run.opt.as_mut())],
    )
    .unwrap();
    run.rng = ck.rng("data").unwrap();
    run.center = ck.extra(&gpu, "dino.center").unwrap();
    let start = ck.position().iteration as usize;
    resumed.extend((start..STEPS).map(|it| step(&gpu, &mut run, it).to_bits()));

    assert_eq!(resumed, losses, "{kind:?}: losses of the resumed run");
    let (want, got) = (snapshot(&straight), snapshot(&run));
    assert_eq!(want.len(), got.len());
    for ((name, w), (name2, g)) in want.iter().zip(&got) {
        assert_eq!(name, name2);
        assert!(w == g, "{kind:?}: {name} differs after the resume");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn adamw_run_resumes_bit_for_bit() {
    resume_is_bitwise(Kind::AdamW);
}

#[test]
fn sgd_momentum_run_resumes_bit_for_bit() {
    resume_is_bitwise(Kind::Sgd);
}

fn expect_bad_file(result: cads::Result<LoadedCheckpoint>, what: &str, needle: &str) {
    match result {
        Err(Error::BadFile { problem, .. }) => {
            assert!(problem.contains(needle), "{what}: {problem}")
        }
        other => panic!("{what}: expected BadFile, got {other:?}"),
    }
}

#[test]
fn corrupt_truncated_foreign_and_newer_files_are_typed_errors() {
    let gpu = gpu();
    let dir = scratch("corrupt");
    let path = dir.join("good.safetensors");
    let path = path.to_str().unwrap();
    let mut run = build(&gpu, Kind::AdamW, 16, 1);
    step(&gpu, &mut run, 0);
    save(&run, path, 1);
    let good = std::fs::read(path).unwrap();
    LoadedCheckpoint::from_bytes(good.clone(), "good").unwrap();

    // A byte flipped in the tensor data (the last byte belongs to some tensor).
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    expect_bad_file(
        LoadedCheckpoint::from_bytes(flipped, "flipped"),
        "flip",
        "checksum",
    );
    // A digit of the metadata changed (the iteration), header still valid JSON.
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..header_end].to_vec()).unwrap();
    let edited = header.replace("\"iteration\":\"1\"", "\"iteration\":\"7\"");
    assert_ne!(
        edited, header,
        "the test must find the iteration in the header"
    );
    let mut meta_edit = good[..8].to_vec();
    meta_edit.extend_from_slice(edited.as_bytes());
    meta_edit.extend_from_slice(&good[header_end..]);
    expect_bad_file(
        LoadedCheckpoint::from_bytes(meta_edit, "edited"),
        "edit",
        "checksum",
    );
    // Truncated anywhere, or empty.
    for cut in [0, 5, 100, good.len() / 2, good.len() - 1] {
        expect_bad_file(
            LoadedCheckpoint::from_bytes(good[..cut].to_vec(), "cut"),
            &format!("cut at {cut}"),
            "safetensors",
        );
    }
    // Not safetensors at all, and a valid safetensors file that is no checkpoint.
    expect_bad_file(
        LoadedCheckpoint::from_bytes(b"hello, not a checkpoint".to_vec(), "text"),
        "text",
        "safetensors",
    );
    let plain = cads::nn::to_safetensors_bytes(&run.student).unwrap();
    expect_bad_file(
        LoadedCheckpoint::from_bytes(plain, "plain"),
        "plain",
        FORMAT,
    );
    // A newer format version is refused by name (before its checksum is looked at).
    let newer = header.replace("\"format_version\":\"1\"", "\"format_version\":\"2\"");
    assert_ne!(newer, header);
    let mut newer_file = good[..8].to_vec();
    newer_file.extend_from_slice(newer.as_bytes());
    newer_file.extend_from_slice(&good[header_end..]);
    expect_bad_file(
        LoadedCheckpoint::from_bytes(newer_file, "newer"),
        "newer",
        "version 2",
    );
    // A missing file is an I/O error naming the path.
    let missing = dir.join("nope.safetensors");
    assert!(matches!(
        LoadedCheckpoint::read(missing.to_str().unwrap()),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_checkpoint_of_another_model_changes_nothing() {
    let gpu = gpu();
    let dir = scratch("other-model");
    let path = dir.join("ck.safetensors");
    let path = path.to_str().unwrap();
    let mut saved = build(&gpu, Kind::AdamW, 16, 1);
    step(&gpu, &mut saved, 0);
    save(&saved, path, 1);
    let ck = LoadedCheckpoint::read(path).unwrap();

    let check_untouched = |run: &mut Run, before: &[(String, Vec<u32>)], what: &str| {
        let after = snapshot(run);
        assert!(after == before, "{what}: a failed restore wrote something");
    };

    // Hidden width 12 instead of 16: shapes differ.
    let mut narrow = build(&gpu, Kind::AdamW, 12, 9);
    step(&gpu, &mut narrow, 0);
    let before = snapshot(&narrow);
    let err = ck
        .restore(
            &[("student", &narrow.student), ("teacher", &narrow.teacher)],
            &mut [("opt", narrow.opt.as_mut())],
        )
        .unwrap_err();
    // The optimizer is checked first and names its moments' shapes.
    assert!(matches!(err, Error::NameMismatch { .. }), "{err}");
    assert!(err.to_string().contains("fc1.weight.exp_avg"), "{err}");
    check_untouched(&mut narrow, &before, "narrow");

    // Student and optimizer fit, the teacher does not: the optimizer import was prepared but
    // must not be committed, and the student must not be written.
    let mut half = build(&gpu, Kind::AdamW, 16, 9);
    step(&gpu, &mut half, 0);
    half.teacher = Mlp::new(&gpu, 12, 9);
    let before = snapshot(&half);
    let err = ck
        .restore(
            &[("student", &half.student), ("teacher", &half.teacher)],
            &mut [("opt", half.opt.as_mut())],
        )
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("model.teacher.fc1."), "{err}");
    check_untouched(&mut half, &before, "teacher");

    // Same modules, but an SGD optimizer: the models pass their checks, the optimizer does not,
    // and the models must not have been written either.
    let mut sgd = build(&gpu, Kind::Sgd, 16, 9);
    step(&gpu, &mut sgd, 0);
    let before = snapshot(&sgd);
    let err = ck
        .restore(
            &[("student", &sgd.student), ("teacher", &sgd.teacher)],
            &mut [("opt", sgd.opt.as_mut())],
        )
        .unwrap_err();
    assert!(err.to_string().contains("AdamW"), "{err}");
    check_untouched(&mut sgd, &before, "sgd");

    // Other names: a module whose layers are called differently.
    struct Renamed(Mlp);
    impl Module for Renamed {
        fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
            self.0.fc1.state(&format!("{prefix}encoder."), out);
            self.0.fc2.state(&format!("{prefix}head."), out);
        }
    }
    let mut other = build(&gpu, Kind::AdamW, 16, 9);
    let renamed = Renamed(Mlp::new(&gpu, 16, 9));
    let renamed_before: Vec<Vec<u32>> = renamed
        .named_state()
        .iter()
        .map(|e| bits(&e.tensor))
        .collect();
    let before = snapshot(&other);
    let err = ck
        .restore(
            &[("student", &renamed), ("teacher", &other.teacher)],
            &mut [("opt", other.opt.as_mut())],
        )
        .unwrap_err();
    match &err {
        Error::StateKeys {
            missing,
            unexpected,
            ..
        } => {
            assert!(
                missing.contains(&"model.student.encoder.weight".to_string()),
                "{err}"
            );
            assert!(
                unexpected.contains(&"model.student.fc1.weight".to_string()),
                "{err}"
            );
        }
        other => panic!("expected StateKeys, got {other:?}"),
    }
    check_untouched(&mut other, &before, "renamed");
    let renamed_after: Vec<Vec<u32>> = renamed
        .named_state()
        .iter()
        .map(|e| bits(&e.tensor))
        .collect();
    assert!(renamed_after == renamed_before);

    // A module or optimizer left out, or one the checkpoint lacks.
    let err = ck
        .restore(
            &[("student", &other.student)],
            &mut [("opt", other.opt.as_mut())],
        )
        .unwrap_err();
    match &err {
        Error::NameMismatch { unexpected, .. } => {
            assert_eq!(unexpected, &vec!["model.teacher".to_string()])
        }
        other => panic!("expected NameMismatch, got {other:?}"),
    }
    assert!(ck
        .restore(
            &[
                ("student", &other.student),
                ("teacher", &other.teacher),
                ("ema", &other.teacher)
            ],
            &mut [("opt", other.opt.as_mut())],
        )
        .is_err());
    check_untouched(&mut other, &before, "lists");
    assert!(ck.rng("augment").is_err());
    assert!(ck.extra(&gpu, "center").is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_write_that_fails_midway_leaves_the_last_checkpoint() {
    let gpu = gpu();
    let dir = scratch("crash");
    let path = dir.join("ck.safetensors");
    let path = path.to_str().unwrap();
    let tmp = format!("{path}.tmp");
    let mut run = build(&gpu, Kind::AdamW, 16, 1);
    step(&gpu, &mut run, 0);
    save(&run, path, 1);
    let good = std::fs::read(path).unwrap();

    // The next checkpoint dies half-way through its write.
    step(&gpu, &mut run, 1);
    let next = Checkpoint::new()
        .model("student", &run.student)
        .position(0, 2)
        .to_bytes()
        .unwrap();
    let err = write_atomically_with("test", path, |w| {
        w.write_all(&next[..next.len() / 2])?;
        Err(std::io::Error::other("simulated crash"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert_eq!(
        std::fs::read(path).unwrap(),
        good,
        "the old checkpoint changed"
    );
    assert!(
        !std::path::Path::new(&tmp).exists(),
        "the torn temp file stayed"
    );
    assert_eq!(
        LoadedCheckpoint::read(path).unwrap().position().iteration,
        1
    );

    // A process killed mid-write leaves its temp file behind: reading ignores it and the next
    // save replaces it.
    std::fs::write(&tmp, &next[..next.len() / 3]).unwrap();
    assert_eq!(
        LoadedCheckpoint::read(path).unwrap().position().iteration,
        1
    );
    save(&run, path, 2);
    assert_eq!(
        LoadedCheckpoint::read(path).unwrap().position().iteration,
        2
    );
    assert!(!std::path::Path::new(&tmp).exists());

    // Names that would make keys ambiguous are refused before anything is written.
    let err = Checkpoint::new()
        .model("stu.dent", &run.student)
        .save(path)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let err = Checkpoint::new()
        .config("{not json")
        .save(path)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert_eq!(
        LoadedCheckpoint::read(path).unwrap().position().iteration,
        2
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn one_module_reads_out_of_a_checkpoint_with_the_strict_loader() {
    // E.g. the pretrained teacher initialising a segmentation encoder: the checkpoint's
    // `model.teacher.` keys are a plain PyTorch-layout state dict under a prefix.
    use cads::nn::{load_safetensors, LoadOptions};
    let gpu = gpu();
    let dir = scratch("one-module");
    let path = dir.join("ck.safetensors");
    let path = path.to_str().unwrap();
    let mut run = build(&gpu, Kind::Sgd, 16, 1);
    for it in 0..2 {
        step(&gpu, &mut run, it);
    }
    save(&run, path, 2);
    let fresh = Mlp::new(&gpu, 16, 77);
    let report = load_safetensors(
        &fresh,
        path,
        &LoadOptions::strict().take_prefix("model.teacher."),
    )
    .unwrap();
    assert_eq!(report.loaded.len(), 4);
    for (a, b) in fresh.named_state().iter().zip(run.teacher.named_state()) {
        assert!(bits(&a.tensor) == bits(&b.tensor), "{}", a.name);
    }
    std::fs::remove_dir_all(dir).unwrap();
}
