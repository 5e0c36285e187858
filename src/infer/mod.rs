//! Inference helpers: turning logits into labels and scoring segmentations (Dice). Sliding-window
//! inference and HD95 belong here too when they land.

pub mod dice;

pub use dice::{argmax_classes, dice, DiceCounts};
