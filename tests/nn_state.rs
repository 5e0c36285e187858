//! Named state and the generic safetensors save/load: names and layouts of every layer kind,
//! a save → load round trip through PyTorch layouts, strictness, partial loads and their report.

mod common;

use cads::models::{UNet3d, UNet3dConfig};
use cads::nn::{
    entries_to_safetensors_bytes, load_entries_bytes, load_safetensors, load_safetensors_bytes,
    save_safetensors, to_safetensors_bytes, DropPath, LayerNorm, Layout, Linear, LinearInit,
    LoadOptions, Module, StateKind,
};
use cads::util::Rng;
use cads::Error;

fn unet(seed: u64) -> UNet3d {
    let gpu = common::gpu();
    let mut rng = Rng::new(seed);
    UNet3d::new(
        &gpu,
        &mut rng,
        UNet3dConfig {
            widths: vec![4, 8],
            ..UNet3dConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn every_layer_lists_its_state_with_its_pytorch_layout() {
    let gpu = common::gpu();
    let mut rng = Rng::new(1);
    let lin = Linear::new(&gpu, 3, 5, true, LinearInit::Torch, &mut rng).unwrap();
    let state = lin.named_state();
    let got: Vec<(&str, Layout, StateKind)> = state
        .iter()
        .map(|e| (e.name.as_str(), e.layout, e.kind))
        .collect();
    assert_eq!(
        got,
        [
            ("weight", Layout::Linear, StateKind::Parameter),
            ("bias", Layout::Plain, StateKind::Parameter)
        ]
    );
    assert_eq!(state[0].pytorch_shape().unwrap(), vec![5, 3]);
    let ln = LayerNorm::new(&gpu, 6, 1e-6).unwrap();
    assert_eq!(ln.named_parameters().len(), 2);
    assert!(DropPath::new(0.1).unwrap().named_state().is_empty());
    assert!(DropPath::new(1.0).is_err());

    let net = unet(2);
    let layouts: Vec<(String, Layout, Vec<usize>)> = net
        .named_state()
        .into_iter()
        .map(|e| {
            let pt = e.pytorch_shape().unwrap();
            (e.name, e.layout, pt)
        })
        .collect();
    let find = |n: &str| layouts.iter().find(|(k, _, _)| k == n).unwrap().clone();
    // Conv3d [Cout, Cin, k, k, k]; ConvTranspose3d [Cin, Cout, k, k, k].
    assert_eq!(
        find("encoder.1.conv0.weight"),
        (
            "encoder.1.conv0.weight".into(),
            Layout::Conv3d,
            vec![8, 4, 3, 3, 3]
        )
    );
    assert_eq!(
        find("up.0.weight"),
        (
            "up.0.weight".into(),
            Layout::ConvTranspose3d,
            vec![8, 4, 2, 2, 2]
        )
    );
    assert_eq!(
        net.parameter_count(),
        net.parameter_tensors()
            .iter()
            .map(|t| t.numel())
            .sum::<usize>()
    );
}

#[test]
fn save_then_load_restores_every_tensor_through_pytorch_layouts() {
    let a = unet(3);
    let b = unet(4);
    let dir = std::env::temp_dir().join(format!("cads_nn_state_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unet.safetensors");
    let path = path.to_str().unwrap();
    save_safetensors(&a, path).unwrap();
    assert!(!std::path::Path::new(&format!("{path}.tmp")).exists());
    // The file holds PyTorch layouts: up.0.weight is [Cin 8, Cout 4, 2, 2, 2], and its element
    // [i, o, a, b, c] is ours [a, b, c, i, o].
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let up = file.tensor("up.0.weight").unwrap();
    assert_eq!(up.shape(), &[8, 4, 2, 2, 2]);
    let torch: Vec<f32> = bytemuck::pod_collect_to_vec(up.data());
    let ours = a.ups[0].weight.to_vec().unwrap();
    let (i, o, t) = (5, 3, 6); // t = (1, 1, 0)
    assert_eq!(torch[(i * 4 + o) * 8 + t], ours[(t * 8 + i) * 4 + o]);

    let report = load_safetensors(&b, path, &LoadOptions::strict()).unwrap();
    assert_eq!(report.loaded.len(), a.named_state().len());
    assert!(report.skipped.is_empty() && report.missing.is_empty() && report.unknown.is_empty());
    for (ea, eb) in a.named_state().iter().zip(b.named_state()) {
        assert_eq!(ea.name, eb.name);
        assert_eq!(
            ea.tensor.to_vec().unwrap(),
            eb.tensor.to_vec().unwrap(),
            "{}",
            ea.name
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn strict_and_partial_loads() {
    let a = unet(5);
    let b = unet(6);
    let before = b.head.weight.to_vec().unwrap();
    // Re-key a's file under `model.` and add a head of another network.
    let bytes = to_safetensors_bytes(&a).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "decoder.0.conv1.weight")
        .map(|(k, v)| (format!("model.{k}"), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    blobs.push(("aux.weight".into(), vec![2], vec![0; 8]));
    // f16 is accepted on load: head.bias as f16.
    let head_bias = a.head.bias.as_ref().unwrap().to_vec().unwrap();
    let f16: Vec<u8> = head_bias
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let i = blobs
        .iter()
        .position(|(k, _, _)| k == "model.head.bias")
        .unwrap();
    blobs[i].2 = f16;
    let views: Vec<(String, safetensors::tensor::TensorView)> = blobs
        .iter()
        .map(|(k, s, d)| {
            let dtype = if k == "model.head.bias" {
                safetensors::Dtype::F16
            } else {
                safetensors::Dtype::F32
            };
            (
                k.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();

    // Strict: every key is unexpected and every name missing; nothing is written.
    let err =
        load_safetensors_bytes(&b, &bytes, "m.safetensors", &LoadOptions::strict()).unwrap_err();
    match &err {
        Error::StateKeys {
            missing,
            unexpected,
            expected,
            ..
        } => {
            assert_eq!(*expected, b.named_state().len());
            assert_eq!(missing.len(), b.named_state().len());
            assert!(unexpected.contains(&"aux.weight".to_string()));
        }
        other => panic!("{other}"),
    }
    // Taking `model.` leaves aux.weight skipped, and decoder.0.conv1.weight missing: an error
    // naming it, unless allowed.
    let take = LoadOptions::strict().take_prefix("model.");
    let err = load_safetensors_bytes(&b, &bytes, "m.safetensors", &take).unwrap_err();
    assert!(
        matches!(&err, Error::StateKeys { missing, unexpected, .. }
            if missing == &vec!["decoder.0.conv1.weight".to_string()] && unexpected.is_empty()),
        "{err}"
    );
    assert_eq!(b.head.weight.to_vec().unwrap(), before);
    let report = load_safetensors_bytes(
        &b,
        &bytes,
        "m.safetensors",
        &take
            .clone()
            .allow_missing("decoder.0.")
            .allow_missing("encoder.1.")
            .skip_prefix("encoder.1."),
    )
    .unwrap();
    // Skipping file keys the module has does not excuse them: they are allowed missing too.
    assert_eq!(
        report.missing,
        [
            "encoder.1.conv0.weight",
            "encoder.1.conv1.weight",
            "decoder.0.conv1.weight"
        ]
    );
    assert!(report.unknown.is_empty());
    assert!(report.skipped.contains(&"aux.weight".to_string()));
    assert!(report
        .skipped
        .contains(&"model.encoder.1.conv0.weight".to_string()));
    assert_eq!(
        b.head.weight.to_vec().unwrap(),
        a.head.weight.to_vec().unwrap()
    );
    let got = b.head.bias.as_ref().unwrap().to_vec().unwrap();
    for (g, w) in got.iter().zip(&head_bias) {
        assert_eq!(*g, half::f16::from_f32(*w).to_f32());
    }
}

#[test]
fn several_modules_share_one_file_under_their_prefixes() {
    let (a, b) = (unet(7), unet(8));
    let mut entries = Vec::new();
    a.state("student.", &mut entries);
    b.state("teacher.", &mut entries);
    let meta = std::collections::HashMap::from([("step".to_string(), "12".to_string())]);
    let bytes = entries_to_safetensors_bytes(&entries, Some(meta)).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["step"], "12");
    // The teacher half loads into a fresh net; the student half is skipped as expected.
    let c = unet(9);
    let report = load_safetensors_bytes(
        &c,
        &bytes,
        "both.safetensors",
        &LoadOptions::strict().take_prefix("teacher."),
    )
    .unwrap();
    assert_eq!(report.skipped.len(), a.named_state().len());
    assert_eq!(
        c.head.weight.to_vec().unwrap(),
        b.head.weight.to_vec().unwrap()
    );
    // Both at once through the entries-level load.
    let (d, e) = (unet(10), unet(11));
    let mut targets = Vec::new();
    d.state("student.", &mut targets);
    e.state("teacher.", &mut targets);
    let report =
        load_entries_bytes(&targets, &bytes, "both.safetensors", &LoadOptions::strict()).unwrap();
    assert_eq!(report.loaded.len(), entries.len());
    assert_eq!(
        d.head.weight.to_vec().unwrap(),
        a.head.weight.to_vec().unwrap()
    );
    // A name listed twice is refused.
    let twice = [entries[0].clone(), entries[0].clone()];
    assert!(entries_to_safetensors_bytes(&twice, None).is_err());
}
