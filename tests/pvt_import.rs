//! Loading PyTorch-layout weights from safetensors into the PVT encoder by the authors' names.

mod common;

use cads::models::pvt::{PvtConfig, PvtEncoder};
use cads::nn::LoadOptions;
use cads::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn small() -> PvtConfig {
    PvtConfig::reduced()
}

/// PyTorch shape of a cads parameter, written out here from the names (the image path's convs,
/// `_2D`, are `nn.Conv2d`), independently of the library's `Layout`.
fn torch_shape(name: &str, ours: &[usize]) -> Vec<usize> {
    match *ours {
        [i, o] => vec![o, i],
        [1, kh, kw, ci, co] if name.contains("_2D") => vec![co, ci, kh, kw],
        [kd, kh, kw, ci, co] => vec![co, ci, kd, kh, kw],
        _ => ours.to_vec(),
    }
}

/// A synthetic teacher checkpoint: every encoder parameter under `backbone.` (values = a per-key
/// offset + the flat PyTorch index / 1e4) except `skip`, plus `extra` keys.
fn checkpoint(enc: &PvtEncoder, skip: &str, bad_shape: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (k, (name, t)) in enc.named_parameters(None).into_iter().enumerate() {
        if name == skip {
            continue;
        }
        let mut shape = torch_shape(&name, t.shape());
        if bad_shape == Some(name.as_str()) {
            shape[0] += 1;
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| k as f32 + i as f32 * 1e-4).collect();
        blobs.push((
            format!("backbone.{name}"),
            shape,
            bytemuck::cast_slice(&data).to_vec(),
        ));
    }
    for key in extra {
        blobs.push((key.to_string(), vec![2, 3], vec![0u8; 24]));
    }
    let views: Vec<(String, TensorView)> = blobs
        .iter()
        .map(|(k, s, d)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn weights_land_in_cads_layout_by_the_authors_names() {
    let gpu = common::gpu();
    let enc = PvtEncoder::new(&gpu, small()).unwrap();
    let params = enc.named_parameters(None);
    let index = |name: &str| params.iter().position(|(k, _)| k == name).unwrap() as f32;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .to_vec()
            .unwrap()
    };
    let bytes = checkpoint(&enc, "", None, &["head.last_layer.weight_v"]);
    let report = enc
        .load_safetensors_bytes(&bytes, "teacher.safetensors", &enc.checkpoint_options())
        .unwrap();
    assert_eq!(report.skipped, vec!["head.last_layer.weight_v".to_string()]);
    assert!(report.missing.is_empty() && report.unknown.is_empty());
    assert_eq!(report.loaded.len(), params.len());

    // Linear block1.0.attn.kv: PyTorch [out = 16, in = 8]; ours [in, out]: ours[c, r] = torch[r, c].
    let kv = get("block1.0.attn.kv.weight");
    let k = index("block1.0.attn.kv.weight");
    let (r, c) = (11, 3);
    assert!((kv[c * 16 + r] - (k + (r * 8 + c) as f32 * 1e-4)).abs() < 1e-6);
    // Conv3d patch_embed2.proj: PyTorch [Co = 16, Ci = 8, 3, 3, 3]; ours [3, 3, 3, 8, 16].
    let w = get("patch_embed2.proj.weight");
    let k = index("patch_embed2.proj.weight");
    let (o, i, t) = (5, 2, 13); // tap 13 = (1, 1, 1)
    assert!((w[(t * 8 + i) * 16 + o] - (k + ((o * 8 + i) * 27 + t) as f32 * 1e-4)).abs() < 1e-6);
    // Conv2d patch_embed1.proj_2D.0: PyTorch [8, 1, 7, 7]; ours [1, 7, 7, 1, 8].
    let w = get("patch_embed1.proj_2D.0.weight");
    let k = index("patch_embed1.proj_2D.0.weight");
    let (o, t) = (6, 30);
    assert!((w[t * 8 + o] - (k + (o * 49 + t) as f32 * 1e-4)).abs() < 1e-6);
    // Conv2d block1.0.attn.sr_2D: PyTorch [8, 8, 2, 2]; ours [1, 2, 2, 8, 8].
    let w = get("block1.0.attn.sr_2D.weight");
    let k = index("block1.0.attn.sr_2D.weight");
    let (o, i, t) = (7, 3, 2);
    assert!((w[(t * 8 + i) * 8 + o] - (k + ((o * 8 + i) * 4 + t) as f32 * 1e-4)).abs() < 1e-6);
    // Depthwise block2.0.mlp.dwconv.dwconv: PyTorch [32, 1, 3, 3, 3]; ours [3, 3, 3, 1, 32].
    let w = get("block2.0.mlp.dwconv.dwconv.weight");
    let k = index("block2.0.mlp.dwconv.dwconv.weight");
    let (o, t) = (29, 26);
    assert!((w[t * 32 + o] - (k + (o * 27 + t) as f32 * 1e-4)).abs() < 1e-6);
    // A LayerNorm weight is copied as is.
    let g = get("norm3.weight");
    let k = index("norm3.weight");
    assert!((g[7] - (k + 7e-4)).abs() < 1e-6);
}

#[test]
fn a_strict_load_names_every_missing_and_unexpected_key_and_changes_nothing() {
    let gpu = common::gpu();
    let enc = PvtEncoder::new(&gpu, small()).unwrap();
    let before = enc.named_parameters(None)[0].1.to_vec().unwrap();
    let options = enc.checkpoint_options();
    // A missing key.
    let bytes = checkpoint(&enc, "block2.0.attn.q.bias", None, &[]);
    let err = enc
        .load_safetensors_bytes(&bytes, "a.safetensors", &options)
        .unwrap_err();
    match &err {
        Error::StateKeys {
            missing,
            unexpected,
            ..
        } => {
            assert_eq!(missing, &vec!["block2.0.attn.q.bias".to_string()]);
            assert!(unexpected.is_empty());
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("block2.0.attn.q.bias"), "{err}");
    // An unexpected key under the taken prefix (e.g. the old `_2d` naming).
    let bytes = checkpoint(&enc, "", None, &["backbone.patch_embed1_2d.proj.9.bias"]);
    let err = enc
        .load_safetensors_bytes(&bytes, "b.safetensors", &options)
        .unwrap_err();
    assert!(
        matches!(&err, Error::StateKeys { unexpected, .. }
            if unexpected == &vec!["backbone.patch_embed1_2d.proj.9.bias".to_string()]),
        "{err}"
    );
    // ... which an explicit partial load reports as unknown instead.
    let report = enc
        .load_safetensors_bytes(&bytes, "b.safetensors", &options.clone().allow_unknown())
        .unwrap();
    assert_eq!(
        report.unknown,
        vec!["backbone.patch_embed1_2d.proj.9.bias".to_string()]
    );
    enc.named_parameters(None)[0].1.write(&before).unwrap();
    // A wrong shape.
    let bytes = checkpoint(&enc, "", Some("block3.0.mlp.fc1.weight"), &[]);
    let err = enc
        .load_safetensors_bytes(&bytes, "bad.safetensors", &options)
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("block3.0.mlp.fc1.weight"), "{err}");
    assert_eq!(enc.named_parameters(None)[0].1.to_vec().unwrap(), before);
    let err = enc
        .load_safetensors_bytes(b"not a safetensors file", "junk.safetensors", &options)
        .unwrap_err();
    assert!(matches!(err, Error::BadFile { .. }), "{err}");
}

#[test]
fn a_volume_only_encoder_takes_the_volume_path_of_a_full_checkpoint() {
    let gpu = common::gpu();
    let full = PvtEncoder::new(&gpu, small()).unwrap();
    let bytes = checkpoint(&full, "", None, &["head.mlp.0.weight"]);
    let vol = PvtEncoder::new(
        &gpu,
        PvtConfig {
            with_image_path: false,
            ..small()
        },
    )
    .unwrap();
    // Strict on the `backbone.` keys alone fails on the image path's tensors ...
    let err = vol
        .load_safetensors_bytes(
            &bytes,
            "t.safetensors",
            &LoadOptions::strict().take_prefix("backbone."),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("backbone.patch_embed1.proj_2D.0.weight"),
        "{err}"
    );
    // ... the checkpoint options skip them, as expected, not unknown.
    let report = vol
        .load_safetensors_bytes(&bytes, "t.safetensors", &vol.checkpoint_options())
        .unwrap();
    assert_eq!(report.loaded.len(), vol.named_parameters(None).len());
    assert!(report
        .skipped
        .contains(&"backbone.block1.0.attn.sr_2D.weight".to_string()));
    assert!(report.skipped.contains(&"head.mlp.0.weight".to_string()));
    assert!(report.unknown.is_empty());
}

#[test]
fn the_converter_scripts_safetensors_writer_produces_a_readable_file() {
    let dir = std::env::temp_dir().join(format!("cads_convert_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("selftest.safetensors");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/convert_cads_checkpoint.py"
    );
    let status = std::process::Command::new("python3")
        .args([script, "--selftest", out.to_str().unwrap()])
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let norm = file.tensor("backbone.norm1.weight").unwrap();
    assert_eq!(norm.shape(), &[8]);
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(norm.data());
    assert_eq!(values, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
    // A partial load: norm1 lands, every other encoder name is allowed missing, the head skipped.
    let gpu = common::gpu();
    let enc = PvtEncoder::new(&gpu, small()).unwrap();
    let options = enc.checkpoint_options().allow_missing("");
    let report = enc
        .load_safetensors(out.to_str().unwrap(), &options)
        .unwrap();
    assert_eq!(report.loaded, vec!["norm1.weight".to_string()]);
    assert_eq!(report.skipped, vec!["head.last_layer.weight_g".to_string()]);
    assert_eq!(report.missing.len(), enc.named_parameters(None).len() - 1);
    let g = enc
        .named_parameters(None)
        .into_iter()
        .find(|(k, _)| k == "norm1.weight")
        .unwrap()
        .1;
    assert_eq!(g.to_vec().unwrap(), values);
    std::fs::remove_dir_all(&dir).ok();
}
