//! The `cads` command line.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cads",
    version,
    about = "GPU-native CADS pretraining and PVT-UNet segmentation on wgpu"
)]
struct Args {
    /// Restrict adapters to these backends (comma list: vulkan, metal, dx12, gl). Same as WGPU_BACKEND.
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Pick the first adapter whose name contains this text. Same as WGPU_ADAPTER_NAME.
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a small MLP with AdamW on a toy problem and print the loss.
    Demo {
        /// Training steps.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// Random seed (data and initialisation).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Print the adapter, backend, limits and features (with --model pvt: the encoder's size).
    Info {
        /// Also build this model's default configuration and print its parameter counts (pvt).
        #[arg(long)]
        model: Option<String>,
    },
    /// Run the benchmark suite: one JSON line per case (op, ms, GFLOP/s or GB/s, % of FMA peak).
    Bench {
        /// Only cases whose `op/case` name contains this text, or one of several separated by
        /// `|` (e.g. `matmul/2048|conv3d_fwd_bwd/c32`).
        #[arg(long)]
        filter: Option<String>,
        /// Peer timings of the same cases (JSON lines from scripts/bench_torch_peers.py or
        /// scripts/burn_peer_lines.py; repeatable): each line gains the peers of the same op,
        /// case and precision with their ms, the speed-up peer ms / cads ms and, where both
        /// measured peak bytes, the memory ratio peer bytes / cads bytes.
        #[arg(long, value_name = "PEERS.jsonl")]
        compare: Vec<std::path::PathBuf>,
        /// Also write bench.jsonl, report.md and PNG bar charts (% of the measured FMA peak;
        /// speed-ups over the peers; memory ratios) of this run into this folder.
        #[arg(long, value_name = "DIR")]
        report: Option<std::path::PathBuf>,
    },
    /// Check every kernel variant this adapter runs against the CPU reference (forward and
    /// backward, small random inputs): one line per check; exit status 1 if any is wrong.
    Check {
        /// Only checks whose `family/variant` name contains this text, or one of several
        /// separated by `|` (e.g. `conv3d/igemm|matmul/wg`).
        #[arg(long)]
        filter: Option<String>,
        /// One JSON object per check instead of the table, with the kernels (`shader::entry`)
        /// each check launched (recorded through the profiler, which waits after every launch).
        #[arg(long)]
        json: bool,
    },
    /// Print shape, spacing, orientation, datatype, affine and value range of a volume.
    Inspect {
        /// A NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr) file, a DICOM series (folder or one
        /// of its files) or a DeepLesion series folder.
        file: String,
        /// The DICOM SeriesInstanceUID to read from a folder holding several series, or the
        /// sub-volume (FIRST-LAST slice numbers) of a DeepLesion series folder.
        #[arg(long)]
        series: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Report distinct labels even for a float volume.
        #[arg(long)]
        labels: bool,
    },
    /// Render a digitally reconstructed radiograph of a CT to a PNG.
    Drr(cli::drr::DrrArgs),
    /// Convert a volume (NIfTI, NRRD, DICOM series, DeepLesion slices) to NIfTI with its RAS
    /// affine.
    Convert {
        /// A NIfTI or NRRD file, a DICOM series (folder or one of its files) or a DeepLesion
        /// series folder.
        input: String,
        /// The NIfTI to write (.nii or .nii.gz).
        output: String,
        /// The DICOM SeriesInstanceUID to read from a folder holding several series, or the
        /// sub-volume (FIRST-LAST slice numbers) of a DeepLesion series folder.
        #[arg(long)]
        series: Option<String>,
        /// Stored type (uint8, int8, int16, uint16, int32, uint32, float32, float64); default: the
        /// input's, with its scaling, voxels copied unchanged.
        #[arg(long)]
        datatype: Option<String>,
    },
    /// CADS self-supervised pretraining: progress, metrics.jsonl, loss.png, checkpoints, the
    /// teacher backbone as safetensors. With no command at all, a short tiny-preset run.
    Pretrain(cli::pretrain::PretrainArgs),
    /// PVT-UNet segmentation: train (and, with the inference branch, predict / evaluate).
    #[command(subcommand)]
    Segment(cli::segment::SegmentCommand),
}

fn main() {
    let args = Args::parse();
    let choice = cads::gpu::AdapterChoice::from_env()
        .with_overrides(args.backend.as_deref(), args.adapter.as_deref());
    // No command: the default job, a short CADS pretraining (tiny preset) on the sample CT.
    let Some(command) = args.command else {
        if let Err(e) = cli::pretrain::default_job(&choice) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    };
    let result = match command {
        Command::Demo { steps, seed } => cli::demo::run(&choice, steps, seed),
        Command::Info { model } => cli::info::run(&choice, model.as_deref()),
        Command::Bench {
            filter,
            compare,
            report,
        } => cli::bench::run(&choice, filter.as_deref(), &compare, report.as_deref()),
        Command::Check { filter, json } => cli::check::run(&choice, filter.as_deref(), json),
        Command::Inspect {
            file,
            series,
            json,
            labels,
        } => cli::inspect::run(&file, series.as_deref(), json, labels),
        Command::Drr(a) => cli::drr::run(&choice, &a),
        Command::Convert {
            input,
            output,
            series,
            datatype,
        } => cli::convert::run(&input, &output, series.as_deref(), datatype.as_deref()),
        Command::Pretrain(a) => cli::pretrain::run(&choice, &a),
        Command::Segment(c) => cli::segment::run(&choice, &c),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
