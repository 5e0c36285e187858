//! `cads segment plan | predict | evaluate`: the inference and evaluation half of the PVT-UNet
//! recipe, `cads::segment::{fingerprint, plan, predict, evaluate}`.

use std::path::PathBuf;

use cads::checkpoint::LoadedCheckpoint;
use cads::data::nifti::read_nifti;
use cads::data::orientation::to_canonical;
use cads::gpu::AdapterChoice;
use cads::models::PvtUnet;
use cads::nn::{load_safetensors, LoadOptions};
use cads::segment::dataset::LabelName;
use cads::segment::dataset::SegDataset;
use cads::segment::evaluate::evaluate_folders;
use cads::segment::fingerprint::dhw_spacing;
use cads::segment::fingerprint::{fingerprint, SAMPLES_PER_CASE};
use cads::segment::plan::{
    CtNormalization, DeviceBudget, ImageResampling, LabelResampling, Plan, PLAN_VERSION,
    TOTAL_STRIDE,
};
use cads::segment::predict::{nifti_files, predict_file};
use cads::segment::sliding_window::{tensor_forward, SlidingWindowConfig};
use cads::segment::train::RunInfo;
use cads::{Error, Gpu, Result, Tensor};

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
    /// Image resampling written into the plan: cubic (B-spline, nnU-Net's order 3; the default)
    /// or linear.
    #[arg(long, default_value = "cubic")]
    pub image_interp: ImageResampling,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// A checkpoint of `cads segment train` (RUN/checkpoint_best.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A CT (.nii / .nii.gz) or a folder of them.
    #[arg(long)]
    pub input: PathBuf,
    /// Output folder: `<case>.nii.gz` label maps on each input's own grid.
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of a window shared with its neighbour.
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    /// Mirroring test-time augmentation over all three axes (8 flips; 8× the time).
    #[arg(long)]
    pub mirror: bool,
    /// Windows per forward.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Also write `<case>_prob_<label>.nii.gz` per class.
    #[arg(long)]
    pub probabilities: bool,
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
        return Err(Error::invalid(
            "cads segment plan",
            "--gpu-memory-gb > 0",
            a.gpu_memory_gb,
        ));
    }
    let gpu = Gpu::with_choice(choice)?;
    let dataset = SegDataset::open(&a.data)?;
    let fp = fingerprint(&dataset, a.samples_per_case)?;
    let budget = DeviceBudget::from_gpu(&gpu, Some((a.gpu_memory_gb * (1u64 << 30) as f64) as u64));
    let mut plan = Plan::from_fingerprint(&fp, &dataset.labels, budget)?;
    plan.image_resampling = a.image_interp;
    plan.save(&a.out)?;
    let f = &fp.foreground;
    out!("cases:          {}", fp.cases.len());
    out!(
        "labels:         {:?}",
        plan.labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect::<Vec<_>>()
    );
    out!(
        "foreground HU:  mean {:.1}, std {:.1}, 0.5% {:.1}, 99.5% {:.1} ({} samples)",
        f.mean,
        f.std,
        f.percentile_00_5,
        f.percentile_99_5,
        f.samples
    );
    out!(
        "target spacing: {:?} mm [D, H, W], images {:?}, labels {:?}",
        plan.target_spacing_mm,
        plan.image_resampling,
        plan.label_resampling
    );
    out!("median shape:   {:?}", plan.median_shape);
    out!(
        "patch × batch:  {:?} × {} (≈ {:.2} GiB of {:.2})",
        plan.patch,
        plan.batch,
        plan.memory.training_bytes(plan.patch, plan.batch) as f64 / (1u64 << 30) as f64,
        plan.memory.budget_bytes as f64 / (1u64 << 30) as f64
    );
    out!("plan:           {}", a.out.display());
    Ok(())
}

/// `cads segment evaluate`: Dice, HD95 and NSD per case and label, with means.
pub fn evaluate(a: &EvaluateArgs) -> Result<()> {
    let report = evaluate_folders(&a.pred, &a.gt, a.labels.as_deref(), a.tolerance_mm)?;
    let json = report.to_json()?;
    match &a.json {
        Some(p) => write("cads segment evaluate", p, &json)?,
        None => out!("{json}"),
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

/// `cads segment predict`: the trained PVT-UNet over each input, label maps on the input's grid.
///
/// The network, its classes and its preprocessing come from the checkpoint's run description
/// ([`RunInfo`]): the training plan (target spacing, CT normalisation, image resampling, label
/// values), with the training patch as window; the logits are resampled back to each input's own
/// grid. A checkpoint from before plans (no `plan` in its run description) was trained on the
/// cases' own grids, so prediction then runs at each input's own canonical spacing.
pub fn predict(choice: &AdapterChoice, a: &PredictArgs) -> Result<()> {
    const OP: &str = "cads segment predict";
    let path = a.checkpoint.display().to_string();
    let ck = LoadedCheckpoint::read(&path)?;
    let info: RunInfo =
        serde_json::from_str(ck.config().unwrap_or("")).map_err(|e| Error::BadFile {
            op: OP,
            path: path.clone(),
            problem: format!(
                "no run description of cads segment train in the checkpoint config: {e}"
            ),
        })?;
    let gpu = Gpu::with_choice(choice)?;
    let net = PvtUnet::new(&gpu, info.model_config())?;
    load_safetensors(
        &net,
        &path,
        &LoadOptions::strict().take_prefix("model.net."),
    )?;
    let norm = info.normalization.ok_or_else(|| Error::BadFile {
        op: OP,
        path: path.clone(),
        problem: "the run description has no CT normalisation".into(),
    })?;
    let labels: Vec<LabelName> = info
        .class_names
        .iter()
        .enumerate()
        .map(|(k, name)| LabelName {
            name: name.clone(),
            value: k as u32,
        })
        .collect();
    let inputs = if a.input.is_dir() {
        nifti_files(&a.input, OP)?
    } else {
        vec![a.input.clone()]
    };
    if inputs.is_empty() {
        return Err(Error::invalid(
            OP,
            "NIfTI inputs",
            format!("none in {}", a.input.display()),
        ));
    }
    let mut window = SlidingWindowConfig::new(info.train.patch);
    window.overlap = a.overlap;
    window.batch = a.batch;
    window.mirror_axes = [a.mirror; 3];
    let forward_net = |x: &Tensor| net.predict(x);
    if let Some(p) = &info.plan {
        out!(
            "plan of the run: target spacing {:?} mm [D, H, W], images {:?}",
            p.target_spacing_mm,
            p.image_resampling
        );
    }
    for input in &inputs {
        let plan = match &info.plan {
            Some(p) => p.clone(),
            None => own_grid_plan(input, &info, &labels, norm, &gpu, a.batch)?,
        };
        let t0 = std::time::Instant::now();
        let mut forward = tensor_forward(&gpu, info.classes, &forward_net);
        let out = predict_file(input, &a.out, &plan, &window, a.probabilities, &mut forward)?;
        out!(
            "{} -> {} ({:.1} s)",
            input.display(),
            out.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The plan of a run trained without one: the input's own canonical spacing, the run's CT
/// normalisation, class k written as value k.
fn own_grid_plan(
    input: &std::path::Path,
    info: &RunInfo,
    labels: &[LabelName],
    norm: cads::segment::train::CtNormalization,
    gpu: &Gpu,
    batch: usize,
) -> Result<Plan> {
    let spacing = dhw_spacing(&to_canonical(&read_nifti(input)?)?.0);
    Ok(Plan {
        version: PLAN_VERSION,
        target_spacing_mm: spacing,
        median_shape: info.train.patch,
        patch: info.train.patch,
        batch,
        total_stride: TOTAL_STRIDE,
        labels: labels.to_vec(),
        normalization: CtNormalization {
            clip_low: norm.lo as f64,
            clip_high: norm.hi as f64,
            mean: norm.mean as f64,
            std: norm.std as f64,
        },
        image_resampling: ImageResampling::Linear,
        label_resampling: LabelResampling::Nearest,
        memory: Plan::inference_memory(gpu),
    })
}
