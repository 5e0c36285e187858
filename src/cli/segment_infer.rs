//! `cads segment plan | evaluate` (and `predict` with the model): the inference and evaluation half
//! of the PVT-UNet recipe, `cads::segment::{fingerprint, plan, predict, evaluate}`.

use std::path::PathBuf;

use cads::gpu::AdapterChoice;
use cads::segment::dataset::SegDataset;
use cads::segment::evaluate::evaluate_folders;
use cads::segment::fingerprint::{fingerprint, SAMPLES_PER_CASE};
use cads::segment::plan::{DeviceBudget, Plan};
use cads::{Error, Gpu, Result};

#[derive(clap::Args)]
pub struct PlanArgs {
    /// nnU-Net raw dataset folder (dataset.json, imagesTr/, labelsTr/) or a JSON list.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the plan (JSON, editable; every later step reads it back).
    #[arg(long, default_value = "plan.json")]
    pub out: PathBuf,
    /// Device memory the training may use, GiB (wgpu reports none; nnU-Net plans for 8).
    #[arg(long, default_value_t = 8.0)]
    pub gpu_memory_gb: f64,
    /// Foreground voxels sampled per case for the intensity statistics.
    #[arg(long, default_value_t = SAMPLES_PER_CASE)]
    pub samples_per_case: usize,
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Folder of predicted label maps (`<case>.nii.gz`; a `_0000` suffix is ignored).
    #[arg(long)]
    pub pred: PathBuf,
    /// Folder of reference label maps (`<case>.nii.gz`).
    #[arg(long)]
    pub gt: PathBuf,
    /// Label values to score, comma separated (default: every non-zero value in the references).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<u32>>,
    /// Tolerance of the normalised surface distance, mm.
    #[arg(long, default_value_t = 2.0)]
    pub tolerance_mm: f64,
    /// Write the report as JSON here (default: print it).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one CSV row per case and label (and the means) here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

fn write(op: &'static str, path: &PathBuf, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    })
}

/// `cads segment plan`: fingerprint the dataset and write the plan.
pub fn plan(choice: &AdapterChoice, a: &PlanArgs) -> Result<()> {
    if !(a.gpu_memory_gb.is_finite() && a.gpu_memory_gb > 0.0) {
        return Err(Error::invalid("cads segment plan", "--gpu-memory-gb > 0", a.gpu_memory_gb));
    }
    let gpu = Gpu::with_choice(choice)?;
    let dataset = SegDataset::open(&a.data)?;
    let fp = fingerprint(&dataset, a.samples_per_case)?;
    let budget = DeviceBudget::from_gpu(&gpu, Some((a.gpu_memory_gb * (1u64 << 30) as f64) as u64));
    let plan = Plan::from_fingerprint(&fp, &dataset.labels, budget)?;
    plan.save(&a.out)?;
    let f = &fp.foreground;
    println!("cases:          {}", fp.cases.len());
    println!("labels:         {:?}", plan.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>());
    println!("foreground HU:  mean {:.1}, std {:.1}, 0.5% {:.1}, 99.5% {:.1} ({} samples)", f.mean, f.std, f.percentile_00_5, f.percentile_99_5, f.samples);
    println!("target spacing: {:?} mm [D, H, W]", plan.target_spacing_mm);
    println!("median shape:   {:?}", plan.median_shape);
    println!("patch × batch:  {:?} × {} (≈ {:.2} GiB of {:.2})", plan.patch, plan.batch, plan.memory.training_bytes(plan.patch, plan.batch) as f64 / (1u64 << 30) as f64, plan.memory.budget_bytes as f64 / (1u64 << 30) as f64);
    println!("plan:           {}", a.out.display());
    Ok(())
}

/// `cads segment evaluate`: Dice, HD95 and NSD per case and label, with means.
pub fn evaluate(a: &EvaluateArgs) -> Result<()> {
    let report = evaluate_folders(&a.pred, &a.gt, a.labels.as_deref(), a.tolerance_mm)?;
    let json = report.to_json()?;
    match &a.json {
        Some(p) => write("cads segment evaluate", p, &json)?,
        None => println!("{json}"),
    }
    if let Some(p) = &a.csv {
        write("cads segment evaluate", p, &report.to_csv())?;
    }
    for (l, m) in &report.mean {
        eprintln!(
            "label {l}: Dice {:.4}, HD95 {:.2} mm ({} of {} cases defined), NSD@{} mm {:.4}",
            m.dice, m.hd95_mm, m.hd95_cases, m.cases, report.tolerance_mm, m.nsd
        );
    }
    Ok(())
}
