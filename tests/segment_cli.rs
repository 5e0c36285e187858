//! The `cads segment` commands end to end: `plan` on a small nnU-Net folder writes a plan that
//! loads back; `predict` runs a (tiny, untrained) PVT-UNet checkpoint written the way `cads
//! segment train` wrote one before plans and puts the label map on the input's own (LPS) grid;
//! `train` computes and writes `OUT/plan.json`, preprocesses into the cache once and reuses it on
//! the next run, records the plan in run.json, and `predict` then applies that plan.

mod common;

use cads::checkpoint::Checkpoint;
use cads::data::nifti::read_nifti;
use cads::data::{write_nifti, Affine, Datatype, Volume};
use cads::models::PvtUnet;
use cads::segment::config::{ModelPreset, SegTrainConfig};
use cads::segment::plan::Plan;
use cads::segment::train::{CtNormalization, RunInfo};

const LPS: Affine = [
    [-0.8, 0.0, 0.0, 30.0],
    [0.0, -0.8, 0.0, 40.0],
    [0.0, 0.0, 2.0, -10.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn ct(dims: [usize; 3]) -> Volume {
    let n = dims.iter().product::<usize>();
    let data = (0..n).map(|i| ((i * 37) % 400) as f32 - 200.0).collect();
    Volume::new(data, dims, LPS, Datatype::Int16).unwrap()
}

/// A label map on `img`'s grid: `value` where the CT is above 0 HU, else background.
fn label_where_positive(img: &Volume, value: f32) -> Volume {
    let data = img.data.iter().map(|&v| value * (v > 0.0) as u8 as f32);
    Volume::new(data.collect(), img.dims, LPS, Datatype::Uint8).unwrap()
}

fn cads(args: &[&str]) -> String {
    let out = common::cads_command().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cads {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plan_and_predict_commands() {
    let dir = std::env::temp_dir().join(format!("cads-seg-cli-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    for d in ["raw/imagesTr", "raw/labelsTr"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // plan
    std::fs::write(
        dir.join("raw/dataset.json"),
        r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 1, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    let img = ct([40, 36, 20]);
    let lab = label_where_positive(&img, 1.0);
    write_nifti(dir.join("raw/imagesTr/a_0000.nii.gz"), &img, None).unwrap();
    write_nifti(dir.join("raw/labelsTr/a.nii.gz"), &lab, None).unwrap();
    let plan_path = dir.join("plan.json");
    let text = cads(&[
        "segment",
        "plan",
        "--data",
        dir.join("raw").to_str().unwrap(),
        "--out",
        plan_path.to_str().unwrap(),
    ]);
    assert!(text.contains("target spacing"), "{text}");
    let plan = Plan::load(&plan_path).unwrap();
    assert_eq!(
        plan.target_spacing_mm,
        [2.0, 0.800000011920929, 0.800000011920929]
    );

    // predict: a checkpoint as `cads segment train` writes it (model "net", RunInfo config).
    let gpu = common::gpu();
    let info = RunInfo {
        train: SegTrainConfig {
            model: ModelPreset::Tiny,
            patch: [16, 32, 32],
            ..SegTrainConfig::default()
        },
        classes: 3,
        class_names: vec!["background".into(), "a".into(), "b".into()],
        normalization: Some(CtNormalization {
            lo: -200.0,
            hi: 200.0,
            mean: 0.0,
            std: 100.0,
        }),
        plan: None,
    };
    let net = PvtUnet::new(&gpu, info.model_config()).unwrap();
    let ck = dir.join("checkpoint_best.safetensors");
    Checkpoint::new()
        .model("net", &net)
        .config(&serde_json::to_string(&info).unwrap())
        .save(ck.to_str().unwrap())
        .unwrap();
    let input = dir.join("case_0000.nii.gz");
    write_nifti(&input, &ct([40, 36, 20]), None).unwrap();
    let out = dir.join("pred");
    cads(&[
        "segment",
        "predict",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch",
        "2",
    ]);
    let pred = read_nifti(out.join("case.nii.gz")).unwrap();
    let orig = read_nifti(&input).unwrap();
    assert_eq!((pred.dims, pred.affine), (orig.dims, orig.affine));
    assert!(pred.data.iter().all(|&v| v == 0.0 || v == 1.0 || v == 2.0));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_writes_the_plan_reuses_the_cache_and_predict_applies_it() {
    let dir = std::env::temp_dir().join(format!("cads-seg-cli-train-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    for d in ["raw/imagesTr", "raw/labelsTr"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("raw/dataset.json"),
        r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 3}, "numTraining": 2, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    for id in ["a", "b"] {
        let img = ct([40, 36, 20]);
        let lab = label_where_positive(&img, 3.0);
        write_nifti(
            dir.join(format!("raw/imagesTr/{id}_0000.nii.gz")),
            &img,
            None,
        )
        .unwrap();
        write_nifti(dir.join(format!("raw/labelsTr/{id}.nii.gz")), &lab, None).unwrap();
    }
    let run = dir.join("run");
    let train = || {
        cads(&[
            "segment",
            "train",
            "--data",
            dir.join("raw").to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--model",
            "tiny",
            "--epochs",
            "1",
            "--iterations",
            "2",
            "--patch",
            "16,32,32",
            "--batch",
            "1",
            "--val-fraction",
            "0.5",
        ])
    };
    let first = train();
    assert!(
        first.contains("computed from the fingerprint of 2 cases"),
        "{first}"
    );
    assert!(first.contains("0 cases reused, 2 preprocessed"), "{first}");
    let plan = Plan::load(run.join("plan.json")).unwrap();
    assert_eq!(
        plan.target_spacing_mm,
        [2.0, 0.800000011920929, 0.800000011920929]
    );
    let key_dir = run.join("preprocessed").join(plan.preprocessing_key());
    assert!(key_dir.join("a.image.f32").exists() && key_dir.join("b.label.f32").exists());
    let second = train();
    assert!(second.contains("(read)"), "{second}");
    assert!(
        second.contains("2 cases reused, 0 preprocessed"),
        "{second}"
    );
    let info: RunInfo =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info.plan.as_ref(), Some(&plan));
    assert_eq!(info.train.patch, [16, 32, 32]);

    // An edited plan cannot resume a run trained with the old one (another preprocessing).
    let mut edited = plan.clone();
    edited.target_spacing_mm = [4.0, 1.6, 1.6];
    edited.save(dir.join("edited.json")).unwrap();
    let out = common::cads_command()
        .args([
            "segment",
            "train",
            "--data",
            dir.join("raw").to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--plan",
            dir.join("edited.json").to_str().unwrap(),
            "--model",
            "tiny",
            "--epochs",
            "2",
            "--iterations",
            "2",
            "--patch",
            "16,32,32",
            "--resume",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("same preprocessing"),
        "{err}"
    );

    // predict reads the plan from the checkpoint and writes label values (0 or 3).
    let input = dir.join("case_0000.nii.gz");
    write_nifti(&input, &ct([40, 36, 20]), None).unwrap();
    let text = cads(&[
        "segment",
        "predict",
        "--checkpoint",
        run.join("checkpoint_latest.safetensors").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.join("pred").to_str().unwrap(),
    ]);
    assert!(text.contains("plan of the run: target spacing"), "{text}");
    let pred = read_nifti(dir.join("pred/case.nii.gz")).unwrap();
    let orig = read_nifti(&input).unwrap();
    assert_eq!((pred.dims, pred.affine), (orig.dims, orig.affine));
    assert!(pred.data.iter().all(|&v| v == 0.0 || v == 3.0));
    std::fs::remove_dir_all(&dir).ok();
}

/// `cads segment plan` on a Decathlon task folder: the cases its dataset.json lists (images
/// without a channel suffix, a macOS `._` fork beside each), labels keyed by value.
#[test]
fn plan_reads_a_decathlon_task_folder() {
    let dir = std::env::temp_dir().join(format!("cads-seg-cli-msd-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    for d in ["Task09_Spleen/imagesTr", "Task09_Spleen/labelsTr"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let task = dir.join("Task09_Spleen");
    std::fs::write(
        task.join("dataset.json"),
        r#"{"name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"}, "numTraining": 2, "numTest": 0, "training": [{"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"}, {"image": "./imagesTr/spleen_3.nii.gz", "label": "./labelsTr/spleen_3.nii.gz"}], "test": []}"#,
    )
    .unwrap();
    for (id, dims) in [("spleen_2", [40, 36, 20]), ("spleen_3", [36, 40, 22])] {
        let img = ct(dims);
        let lab = label_where_positive(&img, 1.0);
        write_nifti(task.join(format!("imagesTr/{id}.nii.gz")), &img, None).unwrap();
        write_nifti(task.join(format!("labelsTr/{id}.nii.gz")), &lab, None).unwrap();
        std::fs::write(task.join(format!("imagesTr/._{id}.nii.gz")), b"Mac OS X").unwrap();
    }
    let plan_path = dir.join("plan.json");
    let text = cads(&[
        "segment",
        "plan",
        "--data",
        task.to_str().unwrap(),
        "--out",
        plan_path.to_str().unwrap(),
    ]);
    assert!(text.contains("target spacing"), "{text}");
    let plan = Plan::load(&plan_path).unwrap();
    let labels: Vec<(&str, u32)> = plan
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value))
        .collect();
    assert_eq!(labels, [("background", 0), ("spleen", 1)]);
    std::fs::remove_dir_all(&dir).ok();
}
