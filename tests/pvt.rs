//! PVTv2 encoder: stage shapes in 3D and 2D, parameter counts of the b1 configuration, a
//! training step that changes every parameter, and typed errors for bad input.

mod common;

use cads::models::pvt::{Modality, PvtConfig, PvtEncoder};
use cads::util::Rng;
use cads::{ops, Tensor};
use common::*;

fn small() -> PvtConfig {
    PvtConfig::reduced()
}

#[test]
fn b1_parameter_counts_match_cads() {
    let gpu = gpu();
    let enc = PvtEncoder::new(&gpu, PvtConfig::default()).unwrap();
    // Counted by hand from CADS.md's architecture (see the note on issue 4).
    assert_eq!(enc.parameter_count(Some(Modality::Volume)), 23_911_424);
    assert_eq!(enc.parameter_count(None), 27_811_968);
    let names: Vec<String> = enc
        .named_parameters(None)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in [
        "patch_embed1.proj.0.weight",
        "block1.0.attn.q.weight",
        "block1.0.attn.sr.weight",
        "block4.1.mlp.dwconv.dwconv.bias",
        "norm4.weight",
        "patch_embed1.proj_next.bias",
        "patch_embed1.proj_2D.3.weight",
        "patch_embed1.proj_next_2D.bias",
        "patch_embed3.proj_2D.weight",
        "block2.1.attn.sr_2D.weight",
    ] {
        assert!(names.iter().any(|k| k == key), "missing {key}");
    }
}

/// Conv init as the authors' `_init_weights`: N(0, √(2 / fan_out)) with fan_out =
/// kernel_size[0]·kernel_size[1]·Cout/groups, which for a Conv3d leaves out kW.
#[test]
fn conv_init_follows_the_authors_fan_out() {
    let gpu = gpu();
    let enc = PvtEncoder::new(&gpu, PvtConfig::default()).unwrap();
    let params = enc.named_parameters(None);
    let std_of = |name: &str| {
        let v = params
            .iter()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .to_vec()
            .unwrap();
        (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    for (name, fan_out) in [
        ("patch_embed4.proj.weight", 3.0 * 3.0 * 512.0),
        ("patch_embed4.proj_2D.weight", 3.0 * 3.0 * 512.0),
        ("block1.0.mlp.dwconv.dwconv.weight", 3.0 * 3.0),
        ("block1.0.attn.sr.weight", 8.0 * 8.0 * 64.0),
        ("patch_embed1.proj.0.weight", 7.0 * 7.0 * 64.0),
    ] {
        let (got, want) = (std_of(name), (2.0f64 / fan_out).sqrt());
        assert!(
            (got / want - 1.0).abs() < 0.05,
            "{name}: std {got}, want {want}"
        );
    }
}

#[test]
fn b1_stage_shapes_for_the_cads_views() {
    let gpu = gpu();
    let enc = PvtEncoder::new(&gpu, PvtConfig::default()).unwrap();
    let mut rng = Rng::new(1);
    let vol = Tensor::from_slice(
        &gpu,
        &rng.vec_uniform(16 * 48 * 48, -1.0, 1.0),
        &[1, 16, 48, 48, 1],
    )
    .unwrap();
    let out = gpu
        .no_grad(|| enc.forward(&vol, Modality::Volume, false, &mut rng))
        .unwrap();
    assert_eq!(out.skip.shape(), &[1, 8, 24, 24, 64]);
    let want = [
        [8, 12, 12, 64],
        [4, 6, 6, 128],
        [2, 3, 3, 320],
        [1, 2, 2, 512],
    ];
    for (s, w) in out.stages.iter().zip(want) {
        assert_eq!(&s.shape()[1..], &w);
    }
    let img =
        Tensor::from_slice(&gpu, &rng.vec_uniform(96 * 96, -1.0, 1.0), &[1, 96, 96, 1]).unwrap();
    let out = gpu
        .no_grad(|| enc.forward(&img, Modality::Image, false, &mut rng))
        .unwrap();
    let want = [[24, 24, 64], [12, 12, 128], [6, 6, 320], [3, 3, 512]];
    for (s, w) in out.stages.iter().zip(want) {
        assert_eq!(&s.shape()[1..], &w);
    }
    assert!(out.stages[3]
        .to_vec()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn backward_reaches_every_parameter_of_each_path() {
    let gpu = gpu();
    let enc = PvtEncoder::new(&gpu, small()).unwrap();
    let mut rng = Rng::new(2);
    for (modality, shape) in [
        (Modality::Volume, vec![2, 16, 32, 32, 1]),
        (Modality::Image, vec![2, 32, 64, 1]),
    ] {
        let n: usize = shape.iter().product();
        let x = Tensor::from_slice(&gpu, &rng.vec_uniform(n, -1.0, 1.0), &shape).unwrap();
        let out = enc.forward(&x, modality, true, &mut rng).unwrap();
        // A loss on every stage so every block is on the path.
        let mut loss = ops::mean_all(&out.skip).unwrap();
        for s in &out.stages {
            loss = ops::add(
                &loss,
                &ops::mean_all(&ops::unary(ops::UnaryOp::Square, s).unwrap()).unwrap(),
            )
            .unwrap();
        }
        let grads = loss.backward().unwrap();
        for (name, p) in enc.named_parameters(Some(modality)) {
            let g = grads
                .get(&p)
                .unwrap_or_else(|| panic!("{modality:?}: no gradient for {name}"));
            let v = g.to_vec().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{name}: non-finite gradient"
            );
        }
        // Parameters of the other modality (the convs it does not use) get no gradient.
        let used: Vec<String> = enc
            .named_parameters(Some(modality))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut unused = 0;
        for (name, p) in enc.named_parameters(None) {
            if used.contains(&name) {
                continue;
            }
            unused += 1;
            // Only convs are per modality; `_2D` marks exactly the image path's.
            assert_eq!(name.contains("_2D"), modality == Modality::Volume, "{name}");
            assert!(
                grads.get(&p).is_none(),
                "{modality:?}: unexpected gradient for {name}"
            );
        }
        assert!(unused > 0);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let enc = PvtEncoder::new(&gpu, small()).unwrap();
    let mut rng = Rng::new(3);
    let bad_size = Tensor::zeros(&gpu, &[1, 16, 42, 32, 1]).unwrap();
    let err = enc
        .forward(&bad_size, Modality::Volume, false, &mut rng)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("stem stride") && err.contains("[16, 42, 32]"),
        "{err}"
    );
    let too_small = Tensor::zeros(&gpu, &[1, 8, 32, 32, 1]).unwrap();
    assert!(
        enc.forward(&too_small, Modality::Volume, false, &mut rng)
            .is_err(),
        "smaller than the total stride"
    );
    let wrong_rank = Tensor::zeros(&gpu, &[1, 32, 32, 1]).unwrap();
    assert!(enc
        .forward(&wrong_rank, Modality::Volume, false, &mut rng)
        .is_err());
    // A stage-1 grid of 8×8×8 is too small for an SR conv of 16.
    let tight = PvtEncoder::new(
        &gpu,
        PvtConfig {
            sr_ratios: [16, 2, 1, 1],
            ..small()
        },
    )
    .unwrap();
    let x = Tensor::zeros(&gpu, &[1, 16, 32, 32, 1]).unwrap();
    assert!(
        gpu.no_grad(|| tight.forward(&x, Modality::Volume, false, &mut rng))
            .is_err(),
        "SR conv larger than the grid"
    );
    let bad_cfg = PvtConfig {
        heads: [3, 2, 5, 8],
        ..PvtConfig::default()
    };
    assert!(PvtEncoder::new(&gpu, bad_cfg).is_err());
}

#[test]
fn cli_info_prints_the_pvt_parameter_count() {
    let out = common::cads_command()
        .args(["info", "--model", "pvt"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("23911424") && text.contains("27811968"),
        "{text}"
    );
}
