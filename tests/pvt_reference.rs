//! The PVTv2 block and a reduced-width encoder on the GPU against the CPU reference
//! (src/reference/pvt: a composition of the f64 reference ops), forward and backward, for
//! volumes and images; and the reference's hand-written backward against f64 central finite
//! differences (no adapter needed for those).
//!
//! Every parameter is perturbed away from its init (biases and LayerNorm β are 0 at init and
//! would hide a missing or misplaced bias), and q/kv weights are large enough that attention is
//! far from uniform. Drop path is off (evaluation mode). One seeded random upstream gradient
//! covers every output: for the encoder it is the gradient of the concatenation of the skip and
//! the four stages, so every stage's output receives its own gradient.

mod common;

use cads::models::pvt::{Block, Modality, PvtConfig, PvtEncoder};
use cads::nn::Module;
use cads::reference::pvt::{self as refpvt, BlockSpec, EncoderSpec, Grads, Params};
use cads::reference::{gradcheck, Array};
use cads::util::{Rng, F32_ACCUM, F32_GRAD, FD_F64};
use cads::{Gradients, Tensor};
use common::*;

/// Random parameter values: LayerNorm γ around 1, everything else U(−0.5, 0.5).
fn random_value(name: &str, rng: &mut Rng) -> f32 {
    let is_gamma = name.ends_with("weight")
        && name
            .rsplit('.')
            .nth(1)
            .is_some_and(|m| m.starts_with("norm"));
    let v = rng.range(-0.5, 0.5) as f32;
    if is_gamma {
        1.0 + v
    } else {
        v
    }
}

/// Overwrite every GPU parameter with random values and return the same values by name.
fn randomize(named: &[(String, Tensor)], rng: &mut Rng) -> Params {
    let mut params = Params::new();
    for (name, t) in named {
        let v: Vec<f32> = (0..t.numel()).map(|_| random_value(name, rng)).collect();
        t.write(&v).unwrap();
        params.insert(name.clone(), Array::from_f32(&v, t.shape()));
    }
    params
}

/// GPU gradients against the reference for every parameter; a parameter must have a gradient
/// on both sides or on neither (the other modality's convs).
fn compare_parameter_grads(what: &str, named: &[(String, Tensor)], got: &Gradients, want: &Grads) {
    let mut compared = 0;
    for (name, t) in named {
        match (got.get(t), want.get(name)) {
            (Some(g), Ok(w)) => {
                assert_close(
                    &format!("{what} d{name}"),
                    &g.to_vec().unwrap(),
                    &w.data,
                    F32_GRAD,
                );
                compared += 1;
            }
            (None, Err(_)) => {}
            (g, w) => panic!(
                "{what} {name}: GPU gradient {}, reference gradient {}",
                g.is_some(),
                w.is_ok()
            ),
        }
    }
    assert!(
        compared > named.len() / 2,
        "{what}: only {compared} gradients compared"
    );
}

// ----- one block -----

fn gpu_block_matches_reference(modality: Modality, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let (c, heads, ratio, sr) = (16, 2, 2, 2);
    let image = modality == Modality::Image;
    let block = Block::new(&gpu, c, heads, ratio, sr, 0.1, true, &mut rng).unwrap();
    let mut named = Vec::new();
    block.parameters("", &mut named);
    let params = randomize(&named, &mut rng);
    // Odd W: the SR conv (kernel = stride = 2) drops the last column, as PyTorch's does.
    let grid = if image { [1, 6, 5] } else { [4, 6, 5] };
    let (n, l) = (2, grid.iter().product::<usize>());
    let (x, tx) = random_param(&gpu, &mut rng, &[n, l, c], -1.0, 1.0);
    let y = block.forward(&tx, grid, modality, false, &mut rng).unwrap();
    let spec = BlockSpec { heads, sr, image };
    let (want, cache) = refpvt::block_forward(&params, "", &spec, &x, grid).unwrap();
    let what = format!("block {modality:?}");
    assert_close(
        &format!("{what} forward"),
        &y.to_vec().unwrap(),
        &want.data,
        F32_ACCUM,
    );

    let (g, tg) = random_pair(&gpu, &mut rng, y.shape(), -1.0, 1.0);
    let grads = y.backward_with(&tg).unwrap();
    let mut want_grads = Grads::default();
    let gx = refpvt::block_backward(&params, "", &spec, &cache, &g, &mut want_grads).unwrap();
    assert_close(
        &format!("{what} dx"),
        &grads.get(&tx).unwrap().to_vec().unwrap(),
        &gx.data,
        F32_GRAD,
    );
    compare_parameter_grads(&what, &named, &grads, &want_grads);
}

#[test]
fn block_matches_reference_volume() {
    gpu_block_matches_reference(Modality::Volume, 41);
}

#[test]
fn block_matches_reference_image() {
    gpu_block_matches_reference(Modality::Image, 42);
}

// ----- the encoder at reduced widths -----

fn small() -> PvtConfig {
    PvtConfig::reduced()
}

fn spec_of(cfg: &PvtConfig, image: bool) -> EncoderSpec {
    EncoderSpec {
        heads: cfg.heads,
        depths: cfg.depths,
        sr_ratios: cfg.sr_ratios,
        image,
    }
}

/// Rows `[off, off + len)` of every batch row of `g [N, total]`, shaped as `shape`.
fn batch_columns(g: &Array, off: usize, shape: &[usize]) -> Array {
    let (n, total) = (g.shape[0], g.shape[1]);
    let len = shape.iter().product::<usize>() / n;
    let data = (0..n)
        .flat_map(|b| g.data[b * total + off..b * total + off + len].to_vec())
        .collect();
    Array::new(data, shape)
}

fn gpu_encoder_matches_reference(modality: Modality, shape: &[usize], seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let cfg = small();
    let enc = PvtEncoder::new(&gpu, cfg.clone()).unwrap();
    let named = enc.named_parameters(None);
    let params = randomize(&named, &mut rng);
    let (x, tx) = random_param(&gpu, &mut rng, shape, -1.0, 1.0);
    let out = enc.forward(&tx, modality, false, &mut rng).unwrap();
    let spec = spec_of(&cfg, modality == Modality::Image);
    let (want, cache) = refpvt::encoder_forward(&params, &spec, &x).unwrap();
    let what = format!("encoder {modality:?} {shape:?}");
    assert_eq!(out.skip.shape(), want.skip.shape.as_slice());
    assert_close(
        &format!("{what} skip"),
        &out.skip.to_vec().unwrap(),
        &want.skip.data,
        F32_ACCUM,
    );
    for (s, (got, w)) in out.stages.iter().zip(&want.stages).enumerate() {
        assert_eq!(got.shape(), w.shape.as_slice(), "stage {}", s + 1);
        assert_close(
            &format!("{what} stage {}", s + 1),
            &got.to_vec().unwrap(),
            &w.data,
            F32_ACCUM,
        );
    }

    // One upstream gradient for all five outputs: [N, skip | stage 1 | ... | stage 4].
    let n = shape[0];
    let outputs: Vec<&Tensor> = std::iter::once(&out.skip).chain(&out.stages).collect();
    let flat: Vec<Tensor> = outputs
        .iter()
        .map(|t| t.reshape(&[n, t.numel() / n]).unwrap())
        .collect();
    let joined = Tensor::concat(&flat.iter().collect::<Vec<_>>(), -1).unwrap();
    let (g, tg) = random_pair(&gpu, &mut rng, joined.shape(), -1.0, 1.0);
    let grads = joined.backward_with(&tg).unwrap();
    let mut parts = Vec::new();
    let mut off = 0;
    for t in &outputs {
        parts.push(batch_columns(&g, off, t.shape()));
        off += t.numel() / n;
    }
    let (gx, want_grads) =
        refpvt::encoder_backward(&params, &spec, &cache, &parts[0], &parts[1..]).unwrap();
    assert_close(
        &format!("{what} dx"),
        &grads.get(&tx).unwrap().to_vec().unwrap(),
        &gx.data,
        F32_GRAD,
    );
    compare_parameter_grads(&what, &named, &grads, &want_grads);
}

#[test]
fn encoder_matches_reference_volume() {
    // Stage grids 8×8×12 → 4×4×6 → 2×2×3 → 1×1×2; SR leaves 4×4×6 and 2×2×3 keys.
    gpu_encoder_matches_reference(Modality::Volume, &[2, 16, 32, 48, 1], 43);
}

#[test]
fn encoder_matches_reference_image() {
    // Stage grids 8×12 → 4×6 → 2×3 → 1×2.
    gpu_encoder_matches_reference(Modality::Image, &[2, 32, 48, 1], 44);
}

// ----- the reference's backward against finite differences (no adapter) -----

fn block_shapes(c: usize, hidden: usize, sr: usize, image: bool) -> Vec<(String, Vec<usize>)> {
    let (sr_name, k) = if image {
        ("attn.sr_2D", [1, sr, sr])
    } else {
        ("attn.sr", [sr, sr, sr])
    };
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("norm1.weight".into(), vec![c]),
        ("norm1.bias".into(), vec![c]),
        ("attn.q.weight".into(), vec![c, c]),
        ("attn.q.bias".into(), vec![c]),
        ("attn.kv.weight".into(), vec![c, 2 * c]),
        ("attn.kv.bias".into(), vec![2 * c]),
        ("attn.proj.weight".into(), vec![c, c]),
        ("attn.proj.bias".into(), vec![c]),
        ("norm2.weight".into(), vec![c]),
        ("norm2.bias".into(), vec![c]),
        ("mlp.fc1.weight".into(), vec![c, hidden]),
        ("mlp.fc1.bias".into(), vec![hidden]),
        ("mlp.dwconv.dwconv.weight".into(), vec![3, 3, 3, 1, hidden]),
        ("mlp.dwconv.dwconv.bias".into(), vec![hidden]),
        ("mlp.fc2.weight".into(), vec![hidden, c]),
        ("mlp.fc2.bias".into(), vec![c]),
    ];
    if sr > 1 {
        v.push((format!("{sr_name}.weight"), vec![k[0], k[1], k[2], c, c]));
        v.push((format!("{sr_name}.bias"), vec![c]));
        v.push(("attn.norm.weight".into(), vec![c]));
        v.push(("attn.norm.bias".into(), vec![c]));
    }
    v
}

/// Parameter shapes of an encoder with these widths (the names the GPU encoder uses).
fn encoder_shapes(
    stem: usize,
    dims: [usize; 4],
    ratio: usize,
    spec: &EncoderSpec,
) -> Vec<(String, Vec<usize>)> {
    let sfx = if spec.image { "_2D" } else { "" };
    let k = |k: usize| if spec.image { [1, k, k] } else { [k, k, k] };
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut conv = |name: String, kk: [usize; 3], cin: usize, cout: usize, bias: bool| {
        v.push((
            format!("{name}weight"),
            vec![kk[0], kk[1], kk[2], cin, cout],
        ));
        if bias {
            v.push((format!("{name}bias"), vec![cout]));
        }
    };
    conv(format!("patch_embed1.proj{sfx}.0."), k(7), 1, stem, true);
    conv(
        format!("patch_embed1.proj{sfx}.3."),
        k(3),
        stem,
        stem,
        false,
    );
    conv(
        format!("patch_embed1.proj{sfx}.6."),
        k(3),
        stem,
        stem,
        false,
    );
    conv(
        format!("patch_embed1.proj_next{sfx}."),
        k(3),
        stem,
        dims[0],
        true,
    );
    for s in 1..4 {
        conv(
            format!("patch_embed{}.proj{sfx}.", s + 1),
            k(3),
            dims[s - 1],
            dims[s],
            true,
        );
    }
    for (s, &c) in dims.iter().enumerate() {
        for name in [
            format!("patch_embed{}.norm.", s + 1),
            format!("norm{}.", s + 1),
        ] {
            v.push((format!("{name}weight"), vec![c]));
            v.push((format!("{name}bias"), vec![c]));
        }
        for i in 0..spec.depths[s] {
            for (name, shape) in block_shapes(c, ratio * c, spec.sr_ratios[s], spec.image) {
                v.push((format!("block{}.{i}.{name}", s + 1), shape));
            }
        }
    }
    v
}

fn random_params(shapes: &[(String, Vec<usize>)], rng: &mut Rng) -> Params {
    let mut p = Params::new();
    for (name, shape) in shapes {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| random_value(name, rng) as f64).collect();
        p.insert(name.clone(), Array::new(v, shape));
    }
    p
}

/// Central differences of `loss` with respect to the entries `idx` of one flat vector.
fn fd_at(loss: impl Fn(&[f64]) -> f64, x: &[f64], idx: &[usize], h: f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    idx.iter()
        .map(|&i| {
            xp[i] = x[i] + h;
            let fp = loss(&xp);
            xp[i] = x[i] - h;
            let fm = loss(&xp);
            xp[i] = x[i];
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

fn reference_block_fd(image: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let (c, heads, sr) = (4, 2, 2);
    let grid = if image { [1, 3, 5] } else { [2, 3, 5] };
    let shapes = block_shapes(c, 2 * c, sr, image);
    let params = random_params(&shapes, &mut rng);
    let spec = BlockSpec { heads, sr, image };
    let shape = [2, grid.iter().product(), c];
    let x = Array::from_f32(&rng.vec_uniform(shape.iter().product(), -1.0, 1.0), &shape);
    let (y, cache) = refpvt::block_forward(&params, "", &spec, &x, grid).unwrap();
    let g = Array::from_f32(&rng.vec_uniform(y.numel(), -1.0, 1.0), &y.shape);
    let mut grads = Grads::default();
    let gx = refpvt::block_backward(&params, "", &spec, &cache, &g, &mut grads).unwrap();
    let loss = |p: &Params, x: &Array| {
        gradcheck::dot(
            &refpvt::block_forward(p, "", &spec, x, grid).unwrap().0.data,
            &g.data,
        )
    };
    let what = format!("reference block image={image}");
    let fx = |v: &[f64]| loss(&params, &Array::new(v.to_vec(), &shape));
    assert_close64(
        &format!("{what} dx"),
        &gx.data,
        &gradcheck::numeric_gradient(fx, &x.data, 1e-6),
        FD_F64,
    );
    for (name, shape) in &shapes {
        let fp = |v: &[f64]| {
            let mut p = params.clone();
            p.insert(name.clone(), Array::new(v.to_vec(), shape));
            loss(&p, &x)
        };
        let fd = gradcheck::numeric_gradient(fp, &params.get(name).unwrap().data, 1e-6);
        assert_close64(
            &format!("{what} d{name}"),
            &grads.get(name).unwrap().data,
            &fd,
            FD_F64,
        );
    }
}

#[test]
fn reference_block_backward_matches_finite_differences() {
    reference_block_fd(false, 51);
    reference_block_fd(true, 52);
}

/// A few entries of dx and of every parameter's gradient: first, a third, middle and last when
/// `all_picks`, else only the middle one (the volume path's forward costs ~25 ms).
fn reference_encoder_fd(image: bool, x_shape: &[usize], all_picks: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let spec = EncoderSpec {
        heads: [1, 2, 2, 2],
        depths: [1, 1, 1, 1],
        sr_ratios: [2, 2, 1, 1],
        image,
    };
    let shapes = encoder_shapes(4, [4, 8, 8, 8], 2, &spec);
    let params = random_params(&shapes, &mut rng);
    let x = Array::from_f32(
        &rng.vec_uniform(x_shape.iter().product(), -1.0, 1.0),
        x_shape,
    );
    let (out, cache) = refpvt::encoder_forward(&params, &spec, &x).unwrap();
    let rand_like = |a: &Array, rng: &mut Rng| {
        Array::from_f32(&rng.vec_uniform(a.numel(), -1.0, 1.0), &a.shape)
    };
    let g_skip = rand_like(&out.skip, &mut rng);
    let g_stages: Vec<Array> = out.stages.iter().map(|s| rand_like(s, &mut rng)).collect();
    let (gx, grads) = refpvt::encoder_backward(&params, &spec, &cache, &g_skip, &g_stages).unwrap();
    let loss = |p: &Params, x: &Array| {
        let o = refpvt::encoder_forward(p, &spec, x).unwrap().0;
        gradcheck::dot(&o.skip.data, &g_skip.data)
            + o.stages
                .iter()
                .zip(&g_stages)
                .map(|(s, g)| gradcheck::dot(&s.data, &g.data))
                .sum::<f64>()
    };
    let pick = |n: usize| {
        if all_picks {
            vec![0, n / 3, n / 2, n - 1]
        } else {
            vec![n / 2]
        }
    };
    let what = format!("reference encoder image={image}");
    let idx = pick(x.numel());
    let fd = fd_at(
        |v| loss(&params, &Array::new(v.to_vec(), x_shape)),
        &x.data,
        &idx,
        1e-6,
    );
    let got: Vec<f64> = idx.iter().map(|&i| gx.data[i]).collect();
    assert_close64(&format!("{what} dx at {idx:?}"), &got, &fd, FD_F64);
    for (name, shape) in &shapes {
        let value = &params.get(name).unwrap().data;
        let idx = pick(value.len());
        let fp = |v: &[f64]| {
            let mut p = params.clone();
            p.insert(name.clone(), Array::new(v.to_vec(), shape));
            loss(&p, &x)
        };
        let fd = fd_at(fp, value, &idx, 1e-6);
        let g = &grads.get(name).unwrap().data;
        let got: Vec<f64> = idx.iter().map(|&i| g[i]).collect();
        assert_close64(&format!("{what} d{name} at {idx:?}"), &got, &fd, FD_F64);
    }
}

#[test]
fn reference_encoder_backward_matches_finite_differences() {
    reference_encoder_fd(true, &[1, 32, 32, 1], true, 53);
    reference_encoder_fd(false, &[1, 16, 32, 32, 1], false, 54);
}
