//! PVT-UNet: output shapes and skip wiring on a tiny config (anisotropic input), the input check
//! naming the nearest valid size, a strict encoder load from a teacher file (authors' `backbone.`
//! names, DINO head and 2D path present), and a frozen encoder that gets no update.

mod common;

use cads::models::pvt::{Modality, PvtEncoder};
use cads::models::{PvtUnet, PvtUnetConfig};
use cads::nn::{Module, StateEntry};
use cads::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use cads::util::Rng;
use cads::{Error, Tensor};

fn input(gpu: &cads::Gpu, dhw: [usize; 3], seed: u64) -> Tensor {
    let n = dhw.iter().product();
    let data = Rng::new(seed).vec_normal(n, 1.0);
    Tensor::from_slice(gpu, &data, &[1, dhw[0], dhw[1], dhw[2], 1]).unwrap()
}

#[test]
fn outputs_have_the_strides_of_their_levels_and_every_parameter_is_wired() {
    let gpu = common::gpu();
    let net = PvtUnet::new(&gpu, PvtUnetConfig::tiny(3)).unwrap();
    // D, H, W = 16, 32, 64: the W axis differs from H so a swapped axis would show.
    let x = input(&gpu, [16, 32, 64], 1);
    let outs = net.forward(&x, true, false, &mut Rng::new(0)).unwrap();
    let shapes: Vec<Vec<usize>> = outs.iter().map(|t| t.shape().to_vec()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![1, 16, 32, 64, 3],
            vec![1, 8, 16, 32, 3],
            vec![1, 8, 8, 16, 3],
            vec![1, 4, 4, 8, 3],
            vec![1, 2, 2, 4, 3],
        ]
    );
    for (o, s) in outs.iter().zip(PvtUnet::output_strides()) {
        assert_eq!(&o.shape()[1..4], &[16 / s[0], 32 / s[1], 64 / s[2]]);
    }
    // Decoder blocks take the concatenation: 2 × the skip's channels (stem 8; stages 8, 16, 32).
    let skips = [8, 8, 16, 32];
    for (l, level) in net.decoder.iter().enumerate() {
        let w = level.block.convs[0].weight.shape(); // [3, 3, 3, Cin, Cout]
        assert_eq!((w[3], w[4]), (2 * skips[l], skips[l]), "decoder level {l}");
    }
    // A loss on the full-resolution output alone reaches every parameter (no dead branch: each
    // skip and each level is on the path), encoder included.
    let loss =
        cads::ops::mean_all(&cads::ops::unary(cads::ops::UnaryOp::Square, &outs[0]).unwrap())
            .unwrap();
    let grads = loss.backward().unwrap();
    let mut coarse_heads = 0;
    for (name, p) in net.named_parameters() {
        let has = grads.get(&p).is_some();
        if name.starts_with("heads.") && name != "heads.0.weight" && name != "heads.0.bias" {
            assert!(
                !has,
                "{name}: a coarse head is not on the full-resolution path"
            );
            coarse_heads += 1;
        } else {
            assert!(has, "{name} gets no gradient");
        }
    }
    assert_eq!(coarse_heads, 8);
    // Names: encoder under `encoder.` with the authors' names, then decoder, final, heads.
    let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "encoder.patch_embed1.proj.0.weight");
    assert!(names.contains(&"encoder.block4.0.attn.q.weight".to_string()));
    assert!(names.contains(&"decoder.0.up.weight".to_string()));
    assert!(names.contains(&"decoder.3.block.conv1.weight".to_string()));
    assert!(names.contains(&"final.block.conv0.weight".to_string()));
    assert_eq!(names.last().unwrap(), "heads.4.bias");
    assert!(!names.iter().any(|n| n.contains("_2D")));
    let split = net.encoder_parameters().len() + net.decoder_parameters().len();
    assert_eq!(split, names.len());
}

#[test]
fn an_input_off_the_total_stride_names_the_nearest_valid_size() {
    let gpu = common::gpu();
    let net = PvtUnet::new(&gpu, PvtUnetConfig::tiny(2)).unwrap();
    let err = net
        .forward(
            &input(&gpu, [20, 30, 64], 2),
            false,
            false,
            &mut Rng::new(0),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                op: "PvtUnet::forward",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("[16, 32, 64]") && msg.contains("[20, 30, 64]"),
        "{msg}"
    );
    assert_eq!(PvtUnet::nearest_valid([60, 170, 10]), [64, 160, 32]);
}

/// A teacher file as the converter writes the authors' checkpoint: the encoder (with its 2D
/// path) under `backbone.`, the DINO head under `head.`.
fn teacher_file(cfg: &PvtUnetConfig, seed: u64, path: &std::path::Path) -> PvtEncoder {
    let gpu = common::gpu();
    let mut enc_cfg = cfg.encoder.clone();
    enc_cfg.with_image_path = true;
    enc_cfg.seed = seed;
    let teacher = PvtEncoder::new(&gpu, enc_cfg).unwrap();
    let mut entries: Vec<StateEntry> = Vec::new();
    teacher.state("backbone.", &mut entries);
    let head = Tensor::parameter(&gpu, &[0.5; 6], &[2, 3]).unwrap();
    entries.push(StateEntry::parameter(
        "head.mlp.0.",
        "weight",
        &head,
        cads::nn::Layout::Linear,
    ));
    let bytes = cads::nn::entries_to_safetensors_bytes(&entries, None).unwrap();
    std::fs::write(path, bytes).unwrap();
    teacher
}

#[test]
fn a_teacher_file_loads_strictly_into_the_encoder_alone() {
    let gpu = common::gpu();
    let cfg = PvtUnetConfig::tiny(2);
    let dir = std::env::temp_dir().join(format!("cads_pvt_unet_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("teacher.safetensors");
    let teacher = teacher_file(&cfg, 77, &path);
    let net = PvtUnet::new(&gpu, cfg.clone()).unwrap();
    let decoder_before: Vec<Vec<f32>> = net
        .decoder_parameters()
        .iter()
        .map(|(_, t)| t.to_vec().unwrap())
        .collect();
    let report = net.load_encoder(path.to_str().unwrap()).unwrap();
    assert!(
        report.skipped.iter().any(|k| k.starts_with("head.")),
        "{report:?}"
    );
    assert!(
        report.skipped.iter().any(|k| k.contains("_2D")),
        "{report:?}"
    );
    assert!(report.missing.is_empty() && report.unknown.is_empty());
    // Every volume-path tensor now equals the teacher's; the decoder is untouched.
    let theirs = teacher.named_parameters(Some(Modality::Volume));
    let ours = net.encoder.named_parameters(None);
    assert_eq!(theirs.len(), ours.len());
    for ((n1, a), (n2, b)) in theirs.iter().zip(&ours) {
        assert_eq!(n1, n2);
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{n1}");
    }
    for ((name, t), before) in net.decoder_parameters().iter().zip(&decoder_before) {
        assert_eq!(&t.to_vec().unwrap(), before, "{name} changed");
    }
    // A teacher of another width fails strictly and changes nothing.
    let mut other = cfg.clone();
    other.encoder.embed_dims = [8, 16, 32, 64];
    other.encoder.heads = [1, 2, 4, 8];
    let bad = dir.join("wide.safetensors");
    teacher_file(&other, 1, &bad);
    let before = net.encoder.named_parameters(None)[0].1.to_vec().unwrap();
    let err = net.load_encoder(bad.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("block4"), "{err}");
    assert_eq!(
        net.encoder.named_parameters(None)[0].1.to_vec().unwrap(),
        before
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_frozen_encoder_gets_no_gradient_and_no_update() {
    let gpu = common::gpu();
    let net = PvtUnet::new(&gpu, PvtUnetConfig::tiny(2)).unwrap();
    let groups = vec![
        ParamGroup::named(net.encoder_parameters()).with_lr(1e-3),
        ParamGroup::named(net.decoder_parameters()),
    ];
    let mut opt = Sgd::new(groups, SgdConfig::nnunet(1e-2)).unwrap();
    assert_eq!(opt.lr(0).unwrap(), 1e-3);
    let snapshot = |ps: Vec<(String, Tensor)>| -> Vec<Vec<f32>> {
        ps.iter().map(|(_, t)| t.to_vec().unwrap()).collect()
    };
    let enc0 = snapshot(net.encoder_parameters());
    let dec0 = snapshot(net.decoder_parameters());
    let x = input(&gpu, [16, 32, 32], 3);
    let outs = net.forward(&x, true, true, &mut Rng::new(0)).unwrap();
    let loss = cads::ops::mean_all(&outs[0]).unwrap();
    let grads = loss.backward().unwrap();
    for (name, p) in net.encoder_parameters() {
        assert!(
            grads.get(&p).is_none(),
            "{name} got a gradient while frozen"
        );
    }
    opt.step(&grads).unwrap();
    assert_eq!(
        snapshot(net.encoder_parameters()),
        enc0,
        "frozen encoder changed"
    );
    assert_ne!(
        snapshot(net.decoder_parameters()),
        dec0,
        "decoder did not train"
    );
}

/// The teacher `cads pretrain --preset tiny` exports (the engine's `export_backbone` of a tiny
/// CADS model) loads strictly into the `cads-tiny` segmentation preset, and not into `tiny`,
/// whose encoder has other widths.
#[test]
fn a_tiny_cads_teacher_loads_into_the_cads_tiny_preset_only() {
    use cads::pretrain::engine::export_backbone;
    use cads::pretrain::{CadsConfig, CadsModel};
    use cads::segment::config::ModelPreset;
    let gpu = common::gpu();
    let dir = std::env::temp_dir().join(format!("cads_pvt_unet_tiny_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("teacher_backbone.safetensors");
    let model = CadsModel::new(&gpu, &CadsConfig::tiny()).unwrap();
    export_backbone(&model.teacher, &path).unwrap();
    let path = path.to_str().unwrap();

    let net = PvtUnet::new(&gpu, ModelPreset::CadsTiny.model_config(8, 0.1, 5)).unwrap();
    let report = net.load_encoder(path).unwrap();
    assert!(
        report.missing.is_empty() && report.unknown.is_empty(),
        "{report:?}"
    );
    let teacher = model.teacher.named_parameters();
    let first = net.encoder.named_parameters(None)[0].clone();
    let theirs = teacher
        .iter()
        .find(|(n, _)| *n == format!("backbone.{}", first.0))
        .unwrap_or_else(|| panic!("backbone.{} in the teacher", first.0));
    assert_eq!(first.1.to_vec().unwrap(), theirs.1.to_vec().unwrap());

    let tiny = PvtUnet::new(&gpu, ModelPreset::Tiny.model_config(8, 0.1, 5)).unwrap();
    assert!(tiny.load_encoder(path).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
