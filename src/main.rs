//! The `cads` command line.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cads", version, about = "GPU-native CADS pretraining and PVT-UNet segmentation on wgpu")]
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
    /// Print the adapter, backend, limits and features.
    Info,
    /// Render a digitally reconstructed radiograph of a CT to a PNG.
    Drr(cli::drr::DrrArgs),
}

fn main() {
    let args = Args::parse();
    let choice = cads::gpu::AdapterChoice::from_env()
        .with_overrides(args.backend.as_deref(), args.adapter.as_deref());
    let result = match args.command.unwrap_or(Command::Info) {
        Command::Info => cli::info::run(&choice),
        Command::Drr(a) => cli::drr::run(&choice, &a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
