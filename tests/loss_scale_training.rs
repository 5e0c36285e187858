//! Dynamic loss scaling (src/optim/loss_scale.rs) in training, on a small MLP: scaled training
//! equals unscaled training (bitwise at power-of-two scales, within float tolerance otherwise),
//! with clipping on unscaled gradients; a checkpoint round trip resumes the scaler and the
//! optimizer exactly; the clip of a scaled step tolerates only an overflow. The scale sequence,
//! the unscale pass, skipped steps and protocol errors are in tests/loss_scale.rs.

mod common;
#[path = "common/loss_scale.rs"]
mod loss_scale_common;

use cads::checkpoint::{Checkpoint, LoadedCheckpoint};
use cads::nn::{Linear, LinearInit, Module, StateEntry};
use cads::optim::{
    clip_grad_norm, clip_grad_norm_unless_overflow, AdamW, AdamWConfig, LossScaler,
    LossScalerConfig, Optimizer, ParamGroup, Sgd, SgdConfig,
};
use cads::util::{Rng, Tolerance};
use cads::{ops, Error, Gpu, Gradients, Tensor};
use common::*;
use loss_scale_common::{bits, Opt};

const IN: usize = 5;
const HIDDEN: usize = 9;
const OUT: usize = 3;
const BATCH: usize = 8;

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(gpu: &Gpu, seed: u64) -> Mlp {
        let mut rng = Rng::new(seed);
        Mlp {
            fc1: Linear::new(gpu, IN, HIDDEN, true, LinearInit::Torch, &mut rng).unwrap(),
            fc2: Linear::new(gpu, HIDDEN, OUT, true, LinearInit::Torch, &mut rng).unwrap(),
        }
    }
    fn loss(&self, gpu: &Gpu, rng: &mut Rng) -> Tensor {
        let x = Tensor::from_slice(gpu, &rng.vec_uniform(BATCH * IN, -1.0, 1.0), &[BATCH, IN]);
        let y = Tensor::from_slice(gpu, &rng.vec_uniform(BATCH * OUT, -1.0, 1.0), &[BATCH, OUT]);
        let h = ops::gelu(&self.fc1.forward(&x.unwrap()).unwrap()).unwrap();
        ops::mse(&self.fc2.forward(&h).unwrap(), &y.unwrap()).unwrap()
    }
}

impl Module for Mlp {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.fc1.state(&format!("{prefix}fc1."), out);
        self.fc2.state(&format!("{prefix}fc2."), out);
    }
}

fn optimizer(kind: Opt, net: &Mlp) -> Box<dyn Optimizer> {
    let groups = ParamGroup::split_decay_named(&net.named_parameters());
    match kind {
        Opt::AdamW => Box::new(
            AdamW::new(
                groups,
                AdamWConfig {
                    lr: 1e-2,
                    weight_decay: 0.04,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
        _ => Box::new(Sgd::new(groups, SgdConfig::nnunet(0.05)).unwrap()),
    }
}

/// `steps` steps of the MLP with global clipping at 0.5 (active on most steps), loss-scaled or
/// not. Returns the parameters' bits and the norms the clip measured.
fn train(
    gpu: &Gpu,
    kind: Opt,
    scaling: Option<LossScalerConfig>,
    steps: usize,
) -> (Vec<Vec<u32>>, Vec<f32>) {
    let net = Mlp::new(gpu, 3);
    let params = net.parameter_tensors();
    let mut opt = optimizer(kind, &net);
    let mut scaler = scaling.map(|c| LossScaler::new(gpu, c).unwrap());
    let mut rng = Rng::new(11);
    let mut norms = Vec::new();
    for _ in 0..steps {
        let loss = net.loss(gpu, &mut rng);
        match &mut scaler {
            None => {
                let mut grads = loss.backward().unwrap();
                norms.push(clip_grad_norm(&params, &mut grads, 0.5).unwrap());
                opt.step(&grads).unwrap();
            }
            Some(scaler) => {
                let mut grads = scaler.scale(&loss).unwrap().backward().unwrap();
                let check = scaler.unscale_and_check(&params, &mut grads).unwrap();
                norms.push(clip_grad_norm(&params, &mut grads, 0.5).unwrap());
                opt.step_unless_overflow(&grads, &check).unwrap();
                scaler.update().unwrap();
                assert!(!check.found_inf().unwrap());
            }
        }
    }
    (params.iter().map(bits).collect(), norms)
}

#[test]
fn scaled_training_equals_unscaled_training() {
    let gpu = gpu();
    const STEPS: usize = 6;
    for kind in [Opt::AdamW, Opt::SgdMomentum] {
        let (plain, plain_norms) = train(&gpu, kind, None, STEPS);
        // Powers of two (the scale grows 2^16 → 2^19 over the run): bit for bit, clip norms too.
        let pow2 = LossScalerConfig {
            growth_interval: 2,
            ..Default::default()
        };
        let (scaled, scaled_norms) = train(&gpu, kind, Some(pow2), STEPS);
        assert_eq!(scaled_norms, plain_norms, "{kind:?}: clip saw other norms");
        assert_eq!(
            scaled, plain,
            "{kind:?}: power-of-two scaling changed the weights"
        );
        // A scale that is not a power of two rounds S·g and g·(1/S): float tolerance.
        let odd = LossScalerConfig {
            init_scale: 1000.0,
            growth_factor: 1.7,
            growth_interval: 2,
            ..Default::default()
        };
        let (odd, odd_norms) = train(&gpu, kind, Some(odd), STEPS);
        let as64 = |v: &[Vec<u32>]| -> Vec<f64> {
            v.iter()
                .flatten()
                .map(|b| f32::from_bits(*b) as f64)
                .collect()
        };
        let tol = Tolerance {
            abs: 1e-5,
            rel: 1e-4,
        };
        let got: Vec<f32> = as64(&odd).iter().map(|&v| v as f32).collect();
        assert_close(&format!("{kind:?} odd scale"), &got, &as64(&plain), tol);
        let n64: Vec<f64> = plain_norms.iter().map(|&v| v as f64).collect();
        assert_close(&format!("{kind:?} odd-scale norms"), &odd_norms, &n64, tol);
        assert_ne!(odd, plain, "{kind:?}: the odd scale should round somewhere");
    }
}

/// A loss-scaled AdamW run with an overflow before and after a checkpoint: the straight run and
/// the run restored into a fresh network, optimizer and scaler are bitwise equal.
#[test]
fn checkpoint_round_trip_resumes_scaler_and_optimizer_exactly() {
    let gpu = gpu();
    let config = LossScalerConfig {
        growth_interval: 3,
        ..Default::default()
    };
    // Steps 2 and 6 overflow (an inf in the first gradient).
    let step =
        |net: &Mlp, opt: &mut dyn Optimizer, scaler: &mut LossScaler, rng: &mut Rng, k: usize| {
            let params = net.parameter_tensors();
            let loss = net.loss(&gpu, rng);
            let mut grads = scaler.scale(&loss).unwrap().backward().unwrap();
            if k == 2 || k == 6 {
                let g = grads.remove(&params[0]).unwrap();
                let mut v = g.to_vec().unwrap();
                v[0] = f32::INFINITY;
                grads
                    .accumulate(
                        params[0].id(),
                        Tensor::from_slice(&gpu, &v, g.shape()).unwrap(),
                    )
                    .unwrap();
            }
            scaler.step(opt, &mut grads).unwrap();
            scaler.update().unwrap();
        };
    let net = Mlp::new(&gpu, 3);
    let mut opt = optimizer(Opt::AdamW, &net);
    let mut scaler = LossScaler::new(&gpu, config).unwrap();
    let mut rng = Rng::new(4);
    for k in 0..4 {
        step(&net, opt.as_mut(), &mut scaler, &mut rng, k);
    }
    // Saved right after `update`: the last step's flag is still in flight.
    let bytes = Checkpoint::new()
        .model("net", &net)
        .optimizer("opt", opt.as_ref())
        .loss_scaler("scaler", &scaler)
        .rng("data", &rng)
        .to_bytes()
        .unwrap();
    let ck = LoadedCheckpoint::from_bytes(bytes, "in memory").unwrap();
    assert_eq!(ck.loss_scaler_names(), vec!["scaler"]);
    let saved = ck.loss_scaler("scaler").unwrap();
    // 2^16, tracker 1, 2 → skip: 2^15, tracker 0 → 1.
    assert_eq!((saved.scale, saved.growth_tracker), (32768.0, 1));
    assert!(ck.loss_scaler("other").is_err());

    let net2 = Mlp::new(&gpu, 99);
    let mut opt2 = optimizer(Opt::AdamW, &net2);
    let mut scaler2 = LossScaler::new(&gpu, LossScalerConfig::default()).unwrap();
    ck.restore(&[("net", &net2)], &mut [("opt", opt2.as_mut())])
        .unwrap();
    scaler2.load_state(&saved).unwrap();
    let mut rng2 = ck.rng("data").unwrap();
    assert_eq!(scaler2.state().unwrap(), scaler.state().unwrap());
    for k in 4..9 {
        step(&net, opt.as_mut(), &mut scaler, &mut rng, k);
        step(&net2, opt2.as_mut(), &mut scaler2, &mut rng2, k);
    }
    let all = |net: &Mlp, opt: &dyn Optimizer| {
        let mut v: Vec<Vec<u32>> = net.parameter_tensors().iter().map(bits).collect();
        for ps in opt.export_state().unwrap().params {
            v.push(vec![ps.step.unwrap() as u32]);
            v.extend(ps.slots.iter().map(|(_, t)| bits(t)));
        }
        v
    };
    assert_eq!(all(&net2, opt2.as_ref()), all(&net, opt.as_ref()));
    assert_eq!(scaler2.state().unwrap(), scaler.state().unwrap());
    assert_eq!(scaler.skipped_steps().unwrap(), 2);

    // A checkpoint without scalers (as written before them) has none.
    let bytes = Checkpoint::new().model("net", &net).to_bytes().unwrap();
    let ck = LoadedCheckpoint::from_bytes(bytes, "in memory").unwrap();
    assert!(ck.loss_scaler_names().is_empty());
}

/// The clip of a loss-scaled step: the clip's norm on clean gradients, `None` (not an error) on
/// an overflow, and still the NonFinite error when the gradients are finite but their norm is not.
#[test]
fn clipping_a_scaled_step_tolerates_only_an_overflow() {
    let gpu = gpu();
    let p = Tensor::parameter(&gpu, &[0.0; 3], &[3]).unwrap();
    let params = [p.clone()];
    let run = |scale: f64, g: [f32; 3]| {
        let mut scaler = LossScaler::new(
            &gpu,
            LossScalerConfig {
                init_scale: scale,
                ..Default::default()
            },
        )
        .unwrap();
        let mut grads = Gradients::default();
        let g = Tensor::from_slice(&gpu, &g, &[3]).unwrap();
        grads.accumulate(p.id(), g).unwrap();
        let check = scaler.unscale_and_check(&params, &mut grads).unwrap();
        clip_grad_norm_unless_overflow(&params, &mut grads, 1.0, &check)
    };
    let norm = run(4.0, [12.0, 16.0, 0.0]).unwrap();
    assert_eq!(norm, Some(5.0), "the norm of the unscaled gradient");
    assert_eq!(run(4.0, [1.0, f32::INFINITY, 0.0]).unwrap(), None);
    assert_eq!(run(4.0, [f32::NAN, 1.0, 0.0]).unwrap(), None);
    // 1e20² overflows the sum of squares; no gradient is inf, so this is a real error.
    assert!(matches!(
        run(1.0, [1e20, 0.0, 0.0]),
        Err(Error::NonFinite { .. })
    ));
}
