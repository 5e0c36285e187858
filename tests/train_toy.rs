//! End to end: the toy MLP trained with AdamW drops its loss by a stated factor.

mod common;

use cads::train::toy::{train_mlp, ToyConfig};

#[test]
fn mlp_with_adamw_drops_its_loss_at_least_tenfold() {
    let gpu = common::gpu();
    let cfg = ToyConfig {
        steps: 200,
        ..ToyConfig::default()
    };
    let losses = train_mlp(&gpu, &cfg, |_, _| {}).unwrap();
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        first > 0.9 && first < 1.4,
        "initial loss {first} should be near ln 3"
    );
    assert!(last * 10.0 < first, "loss fell only from {first} to {last}");
    assert!(losses.iter().all(|l| l.is_finite()));
}
