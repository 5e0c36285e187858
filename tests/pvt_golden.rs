//! The encoder against PyTorch goldens, through the authors' checkpoint format.
//!
//! `scripts/make_pvt_golden.py` (PyTorch, run by hand) built a small PVTv2 with the authors'
//! module names and layouts, saved it as their training script does (`{'teacher', 'student',
//! ...}`, keys `backbone.`/`head.`) to tests/data/pvt_golden/checkpoint.pth, and wrote the skip
//! and every stage output of both paths to outputs.safetensors. Here the torch-free converter
//! turns the checkpoint into safetensors (CI has python3 but no torch), the encoder loads it
//! strictly, and every output must match. A wrong name cannot pass: the strict load fails on a
//! name the file lacks, and renaming any one key of the file is shown to fail naming that key.

mod common;

use std::path::PathBuf;
use std::process::Command;

use cads::models::pvt::{Modality, PvtConfig, PvtEncoder};
use cads::util::{Rng, F32_ACCUM};
use cads::{Error, Tensor};
use common::assert_close;
use safetensors::tensor::TensorView;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pvt_golden");

/// The config of make_pvt_golden.py.
fn config() -> PvtConfig {
    PvtConfig {
        in_channels: 1,
        stem_channels: 8,
        embed_dims: [8, 16, 16, 24],
        heads: [1, 2, 2, 3],
        mlp_ratios: [2, 2, 2, 2],
        depths: [1, 1, 1, 1],
        sr_ratios: [4, 2, 2, 1],
        drop_path_rate: 0.0,
        with_image_path: true,
        seed: 99,
    }
}

/// make_pvt_golden.py's `input_value`: element i of both inputs (C = 1, so NCDHW = NDHWC).
fn input(shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| ((0.731 * i as f64).sin() * (0.117 * i as f64).cos()) as f32)
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cads_pvt_golden_{}_{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run the converter without torch; the safetensors bytes it wrote.
fn convert(key: &str, dir: &std::path::Path) -> Vec<u8> {
    let out = dir.join(format!("{key}.safetensors"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/convert_cads_checkpoint.py"
    );
    let run = Command::new("python3")
        .args([
            script,
            "--no-torch",
            &format!("{DATA}/checkpoint.pth"),
            out.to_str().unwrap(),
            "--key",
            key,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "converter failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(&out).unwrap()
}

fn goldens() -> Vec<u8> {
    std::fs::read(format!("{DATA}/outputs.safetensors")).unwrap()
}

fn check_outputs(enc: &PvtEncoder, modality: Modality, shape: &[usize], golden: &[u8]) {
    let gpu = common::gpu();
    let file = safetensors::SafeTensors::deserialize(golden).unwrap();
    let x = Tensor::from_slice(&gpu, &input(shape), shape).unwrap();
    let out = enc.forward(&x, modality, false, &mut Rng::new(0)).unwrap();
    let what = match modality {
        Modality::Volume => "volume",
        Modality::Image => "image",
    };
    let outputs = std::iter::once(("skip".to_string(), &out.skip)).chain(
        out.stages
            .iter()
            .enumerate()
            .map(|(k, t)| (format!("stage{}", k + 1), t)),
    );
    for (name, got) in outputs {
        let key = format!("{what}.{name}");
        let want = file.tensor(&key).unwrap();
        assert_eq!(got.shape(), want.shape(), "{key}");
        let want: Vec<f64> = bytemuck::pod_collect_to_vec::<u8, f32>(want.data())
            .into_iter()
            .map(f64::from)
            .collect();
        assert_close(&key, &got.to_vec().unwrap(), &want, F32_ACCUM);
    }
}

#[test]
fn the_authors_checkpoint_loads_strictly_and_every_stage_matches_pytorch() {
    let gpu = common::gpu();
    let dir = scratch("load");
    let teacher = convert("teacher", &dir);
    let enc = PvtEncoder::new(&gpu, config()).unwrap();
    let report = enc
        .load_safetensors_bytes(&teacher, "teacher.safetensors", &enc.checkpoint_options())
        .unwrap();
    // Every encoder name came from the file; only the DINO head was left, as expected.
    assert_eq!(report.loaded.len(), enc.named_parameters(None).len());
    assert!(report.missing.is_empty() && report.unknown.is_empty());
    assert!(!report.skipped.is_empty());
    assert!(
        report.skipped.iter().all(|k| k.starts_with("head.")),
        "{:?}",
        report.skipped
    );
    let golden = goldens();
    check_outputs(&enc, Modality::Volume, &[1, 16, 32, 36, 1], &golden);
    check_outputs(&enc, Modality::Image, &[2, 32, 48, 1], &golden);

    // The student (keys `module.backbone.`, `module.` dropped by the converter) holds the same
    // weights in this checkpoint and loads the same way.
    let student = convert("student", &dir);
    let other = PvtEncoder::new(&gpu, config()).unwrap();
    other
        .load_safetensors_bytes(&student, "student.safetensors", &other.checkpoint_options())
        .unwrap();
    for ((name, a), (_, b)) in enc
        .named_parameters(None)
        .iter()
        .zip(other.named_parameters(None))
    {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn renaming_any_one_key_makes_the_strict_load_fail_naming_it() {
    let gpu = common::gpu();
    let dir = scratch("rename");
    let bytes = convert("teacher", &dir);
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, TensorView)> = file.tensors();
    let enc = PvtEncoder::new(&gpu, config()).unwrap();
    let before = enc.named_parameters(None)[0].1.to_vec().unwrap();
    let options = enc.checkpoint_options();
    let mut checked = 0;
    for (target, _) in tensors.iter().filter(|(k, _)| k.starts_with("backbone.")) {
        let renamed = format!("{target}_renamed");
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(k, v)| {
                let k = if k == target {
                    renamed.clone()
                } else {
                    k.clone()
                };
                (k, v.clone())
            })
            .collect();
        let blob = safetensors::serialize(views, None).unwrap();
        let err = enc
            .load_safetensors_bytes(&blob, "renamed.safetensors", &options)
            .unwrap_err();
        let name = target.strip_prefix("backbone.").unwrap();
        match &err {
            Error::StateKeys {
                missing,
                unexpected,
                ..
            } => {
                assert_eq!(missing, &vec![name.to_string()], "{target}");
                assert_eq!(unexpected, &vec![renamed.clone()], "{target}");
            }
            other => panic!("{target}: {other}"),
        }
        assert!(err.to_string().contains(name), "{err}");
        checked += 1;
    }
    assert_eq!(checked, enc.named_parameters(None).len());
    // Nothing was written by any failed load.
    assert_eq!(enc.named_parameters(None)[0].1.to_vec().unwrap(), before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_converter_refuses_an_absent_key_and_writes_nothing() {
    let dir = scratch("absent");
    let out = dir.join("x.safetensors");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/convert_cads_checkpoint.py"
    );
    let run = Command::new("python3")
        .args([
            script,
            "--no-torch",
            &format!("{DATA}/checkpoint.pth"),
            out.to_str().unwrap(),
            "--key",
            "ema",
        ])
        .output()
        .expect("python3 runs");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("'ema'") && stderr.contains("'teacher'"),
        "{stderr}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// cads → the authors' checkpoint → cads, torch-free both ways: `nn::save_safetensors`, the
/// converter's `.pth` writer (`{'teacher': {'backbone.…': tensor}}`, what torch.load reads), its
/// `.pth` reader, and a strict load give back every weight bit for bit.
#[test]
fn weights_saved_by_cads_round_trip_through_a_pytorch_checkpoint() {
    let gpu = common::gpu();
    let dir = scratch("back");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/convert_cads_checkpoint.py"
    );
    let mut cfg = config();
    cfg.seed = 5;
    let enc = PvtEncoder::new(&gpu, cfg).unwrap();
    let saved = dir.join("cads.safetensors");
    let pth = dir.join("cads.pth");
    let back = dir.join("back.safetensors");
    cads::nn::save_safetensors(&enc, saved.to_str().unwrap()).unwrap();
    for args in [
        vec!["--to-pth", saved.to_str().unwrap(), pth.to_str().unwrap()],
        vec![
            pth.to_str().unwrap(),
            back.to_str().unwrap(),
            "--key",
            "teacher",
        ],
    ] {
        let run = Command::new("python3")
            .arg(script)
            .arg("--no-torch")
            .args(&args)
            .output()
            .expect("python3 runs");
        assert!(
            run.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let other = PvtEncoder::new(&gpu, config()).unwrap();
    other
        .load_safetensors(back.to_str().unwrap(), &other.checkpoint_options())
        .unwrap();
    for ((name, a), (_, b)) in enc
        .named_parameters(None)
        .iter()
        .zip(other.named_parameters(None))
    {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
