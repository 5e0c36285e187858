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
    /// Train a small MLP with AdamW on a toy problem and print the loss (the default job).
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
        /// Only cases whose `op/case` name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Print shape, spacing, orientation, datatype, affine and value range of a NIfTI file.
    Inspect {
        /// A .nii or .nii.gz file.
        file: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Report distinct labels even for a float volume.
        #[arg(long)]
        labels: bool,
    },
    /// Render a digitally reconstructed radiograph of a CT to a PNG.
    Drr(cli::drr::DrrArgs),
    /// PVT-UNet segmentation: train (and, with the inference branch, predict / evaluate).
    #[command(subcommand)]
    Segment(cli::segment::SegmentCommand),
}

fn main() {
    let args = Args::parse();
    let choice = cads::gpu::AdapterChoice::from_env()
        .with_overrides(args.backend.as_deref(), args.adapter.as_deref());
    let command = args.command.unwrap_or(Command::Demo {
        steps: 300,
        seed: 0,
    });
    let result = match command {
        Command::Demo { steps, seed } => cli::demo::run(&choice, steps, seed),
        Command::Info { model } => cli::info::run(&choice, model.as_deref()),
        Command::Bench { filter } => cli::bench::run(&choice, filter.as_deref()),
        Command::Inspect { file, json, labels } => cli::inspect::run(&file, json, labels),
        Command::Drr(a) => cli::drr::run(&choice, &a),
        Command::Segment(c) => cli::segment::run(&choice, &c),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
