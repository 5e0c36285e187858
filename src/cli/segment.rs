//! `cads segment …`: the PVT-UNet recipe of `cads::segment` on the command line. The inference
//! and evaluation commands live in `segment_infer`.

use cads::gpu::AdapterChoice;
use cads::Result;
use clap::Subcommand;

use super::segment_infer::{EvaluateArgs, PlanArgs};

#[derive(Subcommand)]
pub enum SegmentCommand {
    /// Fingerprint a dataset (spacings, shapes, foreground HU) and write an editable plan.json.
    Plan(PlanArgs),
    /// Dice, HD95 (mm) and NSD per case and label between two folders of label maps.
    Evaluate(EvaluateArgs),
}

pub fn run(choice: &AdapterChoice, command: &SegmentCommand) -> Result<()> {
    match command {
        SegmentCommand::Plan(a) => super::segment_infer::plan(choice, a),
        SegmentCommand::Evaluate(a) => super::segment_infer::evaluate(a),
    }
}
