//! Whether a checkpoint may continue under the config of the resuming command.
//!
//! A resumed run must be the run that was started: every recipe field must match, except the
//! execution-only ones (`read_every`, `checkpoint_blocks`), which change how a step runs, not
//! what it computes, and the precision.
//!
//! Precision (`f32` / `amp`) may change on resume, with a note: switching autocast on or off
//! between a checkpoint and its continuation is what PyTorch users do (e.g. an f32 run moved to a
//! GPU with tensor cores); the master weights and the optimizer state are f32 either way, so the
//! checkpoint means the same thing under both. Loss scaling follows the precision (on by default
//! with `amp`), so with a precision change `loss_scale` may change too: a scaler that the
//! checkpoint lacks starts afresh at 2^16 (torch's GradScaler without a saved state), one the new
//! run does not use is dropped, and one both use continues from its saved scale. At the same
//! precision `loss_scale` stays part of the recipe (a skipped step is a different run). The epoch count is the one recipe field a user routinely wants to change
//! (lengthen a run that went well), and it is special: the lr, weight-decay and
//! teacher-momentum cosines span `epochs × iters_per_epoch` iterations, so another length gives
//! other values on the steps already taken. The schedules of both lengths are therefore
//! compared on every step taken:
//!
//! - equal on all of them (e.g. a checkpoint at iteration 0 or 1): the resume is a straight run
//!   of the new length, and is accepted;
//! - different: refused with the first differing iteration, the jump at the resume point and
//!   what to do; with `extend_schedules` (`cads pretrain --extend-schedules`) a LONGER run is
//!   accepted and continues on its own schedules from the resume point (what DINO-style code
//!   does when its `--epochs` changes), the jump printed.

use super::config::CadsConfig;
use super::step::{CadsSchedules, ScheduleValues};
use crate::error::{Error, Result};

/// Relative agreement of two scheduled values (both computed in f64 by the same formulas).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
}

fn agree(a: &ScheduleValues, b: &ScheduleValues) -> bool {
    close(a.lr, b.lr)
        && close(a.weight_decay, b.weight_decay)
        && close(a.teacher_momentum, b.teacher_momentum)
        && close(a.teacher_temp, b.teacher_temp)
        && a.last_layer_frozen == b.last_layer_frozen
}

/// The top-level fields whose JSON differs, as `name: saved -> now`.
fn differing_fields(saved: &CadsConfig, now: &CadsConfig) -> Result<Vec<String>> {
    let as_object = |c: &CadsConfig| -> Result<serde_json::Map<String, serde_json::Value>> {
        match serde_json::to_value(c) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => Err(Error::invalid(
                "resume",
                "a config as a JSON object",
                "another value",
            )),
        }
    };
    let (a, b) = (as_object(saved)?, as_object(now)?);
    Ok(a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} -> {}", b.get(k).cloned().unwrap_or_default()))
        .collect())
}

/// See the module docs. `iteration`: the checkpoint's (the next step to take).
pub fn check_resume(
    saved: &CadsConfig,
    now: &CadsConfig,
    iters_per_epoch: u64,
    iteration: u64,
    extend_schedules: bool,
) -> Result<Option<String>> {
    let op = "resume";
    let mut notes = Vec::new();
    if saved.read_every != now.read_every {
        notes.push(format!(
            "read_every {} -> {}",
            saved.read_every, now.read_every
        ));
    }
    if saved.checkpoint_blocks != now.checkpoint_blocks {
        notes.push(format!(
            "checkpoint_blocks {} -> {}",
            saved.checkpoint_blocks, now.checkpoint_blocks
        ));
    }
    let precision_changes = saved.precision != now.precision;
    if precision_changes {
        notes.push(format!(
            "precision {} -> {} (the f32 master weights and optimizer state continue)",
            saved.precision, now.precision
        ));
        if saved.loss_scale != now.loss_scale {
            notes.push(match now.loss_scale {
                true => "loss scaling off -> on (a fresh scaler at 2^16)".to_string(),
                false => "loss scaling on -> off (the checkpoint's scaler state is dropped)".into(),
            });
        }
    }
    let recipe = CadsConfig {
        read_every: now.read_every,
        checkpoint_blocks: now.checkpoint_blocks,
        epochs: now.epochs,
        precision: now.precision,
        loss_scale: match precision_changes {
            true => now.loss_scale,
            false => saved.loss_scale,
        },
        ..saved.clone()
    };
    if recipe != *now {
        return Err(Error::invalid(
            op,
            "the recipe the checkpoint was trained with (a resumed run continues the same run; \
             start a new run in another --out folder for another recipe)",
            {
                let mut fields = differing_fields(&recipe, now)?.join(", ");
                if recipe.loss_scale != now.loss_scale {
                    fields.push_str(
                        " (--loss-scale / --no-loss-scale; --precision amp turns it on unless \
                         --no-loss-scale)",
                    );
                }
                fields
            },
        ));
    }
    if saved.epochs != now.epochs {
        let old = CadsSchedules::new(saved, iters_per_epoch)?;
        let new = CadsSchedules::new(now, iters_per_epoch)?;
        let first_difference = (0..iteration).find(|&i| !agree(&old.at(i), &new.at(i)));
        let (e0, e1) = (saved.epochs, now.epochs);
        match first_difference {
            None => notes.push(format!(
                "epochs {e0} -> {e1}: the schedules of the {iteration} steps taken are the same \
                 for both lengths, so this is a straight {e1}-epoch run"
            )),
            Some(first) => {
                let (a, b) = (old.at(iteration), new.at(iteration));
                let jump =
                    format!(
                    "at iteration {iteration} lr {:.4e} -> {:.4e}, weight decay {:.4} -> {:.4}, \
                     teacher momentum {:.6} -> {:.6}",
                    a.lr, b.lr, a.weight_decay, b.weight_decay, a.teacher_momentum,
                    b.teacher_momentum
                );
                let why = format!(
                    "the lr, weight-decay and teacher-momentum cosines span epochs × iterations \
                     per epoch, so a {e1}-epoch run would have taken the {iteration} steps \
                     already taken with other values (first at iteration {first}), and \
                     continuing is not a straight {e1}-epoch run ({jump})"
                );
                if e1 > e0 && extend_schedules {
                    notes.push(format!(
                        "epochs {e0} -> {e1} with --extend-schedules: from here the schedules \
                         are the {e1}-epoch run's; {why}"
                    ));
                } else if e1 > e0 {
                    return Err(Error::invalid(
                        op,
                        format!("--epochs {e0}, the checkpoint's"),
                        format!(
                            "--epochs {e1}: {why}. To finish the run as started, resume with \
                             --epochs {e0}; to lengthen it anyway, resume with --epochs {e1} \
                             --extend-schedules (the rest of the run follows the {e1}-epoch \
                             schedules); or start a new {e1}-epoch run in another --out folder"
                        ),
                    ));
                } else {
                    return Err(Error::invalid(
                        op,
                        format!("--epochs {e0}, the checkpoint's (a run is only lengthened)"),
                        format!(
                            "--epochs {e1}: {why}. To stop this run early on its own \
                             schedules, resume with --epochs {e0} and --max-steps"
                        ),
                    ));
                }
            }
        }
    }
    Ok((!notes.is_empty()).then(|| notes.join("; ")))
}
