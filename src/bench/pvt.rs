//! PVTv2-b1 encoder (the CADS configuration, volume path only) forward + backward at batch 2:
//! one training step of the encoder, timed, with the buffer pool's peak bytes during one step.
//!
//! - `vol16x48x48_n2`: the CADS view, timed like every case (warm-up, median of repetitions).
//! - `vol16x48x48_n2` again, `"precision":"amp"`: the same step with the forward under
//!   `gpu.autocast(Precision::Mixed)` (the peers' AMP line pairs with it): every
//!   Linear multiplies f16 copies of its input and weight with f32 accumulation and the tape
//!   keeps those copies; convs, GELU and attention compute in f32 and keep f16 copies of what
//!   their backward reads; the blocks' MLPs from 256 tokens on are one op with f16 hidden
//!   activations and gradients (ops::dw_mlp_mixed); norms and the parameters stay f32. On a
//!   device without SHADER_F16 it runs the f32 step.
//! - `vol64x160x160_n2`, f32 and amp (the real-GPU targets' shape, beside the PyTorch peers' lines
//!   of both precisions): a PVT-UNet patch; ONE step, no warm-up and no repetitions (on lavapipe
//!   one sample takes minutes), pipeline compilation included. When one tensor of the batch-2 step
//!   would exceed the device's storage-binding limit (on lavapipe the stage-1 MLP activation,
//!   2·51200·512·4 B = 210 MB > 128 MiB), the step runs as accumulated micro-batches of 1 (the
//!   parameter gradients are summed) and the JSON line carries `"micro_batches":2`; if even one
//!   sample does not fit, the case returns the typed `TooLarge` error.
//!
//! The upstream gradient is a fixed random tensor on the stage-4 output (`backward_with`): every
//! layer is on its path, so the backward does all of its work; drop path is on (training).
//! FLOPs count convs, linears and attention (2 per multiply-add), backward = 2 × forward.
//!
//! Hand estimate of the activation memory of `vol16x48x48_n2` (f32; the tape keeps exactly what
//! each backward reads, src/autograd/mod.rs, so every such value is alive when backward starts).
//! Per sample, with a = L·C and r the MLP ratio, one block keeps ≈ (5 + 2r)·a floats: LN1's
//! input; LN1's output (read by the q, kv and SR gradients, one buffer); q and the attention
//! output (attention's backward; proj keeps the same output); LN2's input and output = 5a; fc1's
//! output (the depthwise conv's input) and the conv's output (GELU's input, from which fc2's
//! backward makes GELU's output again, ops::gelu_linear) = 2ra. Residual adds, bias adds and
//! scalings keep nothing; the SR path is ≤ L/sr³ tokens and negligible. In the stem each
//! InstanceNorm + LeakyReLU keeps only its output, which the next conv reads anyway:
//!
//! | part                 | tokens × channels | per block | blocks | floats |
//! |----------------------|-------------------|-----------|--------|--------|
//! | stem (3 × conv, IN, LReLU) | 8·24·24 × 64 | 3 tensors of 294,912 | – | 0.88 M |
//! | stage 1 (r 8)        | 1152 × 64 = 73,728   | 21a | 2 | 3.10 M |
//! | stage 2 (r 8)        | 144 × 128 = 18,432   | 21a | 2 | 0.77 M |
//! | stage 3 (r 4)        | 18 × 320 = 5,760     | 13a | 2 | 0.15 M |
//! | stage 4 (r 4)        | 4 × 512 = 2,048      | 13a | 2 | 0.05 M |
//! | embeds + norms       |                      |     |   | 0.3 M  |
//!
//! ≈ 5.3 M floats = 21 MB per sample, 42 MB at batch 2. On top: the parameters, 23.9 M floats =
//! 96 MB, resident; and the parameter gradients, which fill up (to 96 MB) as the backward frees
//! activations. Measured on lavapipe: 230.6 MB, ≈ 135 MB above the parameters: the stage 2–4
//! parameter gradients (≈ 90 MB) are already allocated while the stage-1 and stem activations
//! are still held, and the backward's own temporaries come on top. (Before the tape kept only
//! what backward reads, an add kept both operands and a Linear its pre-bias output: 278.0 MB;
//! before fc2 made GELU's output again in backward: 249.0 MB; before the stem's norms kept
//! their outputs instead of their inputs: 243.2 MB; before the MLP tail wrote ∂h over ∂a:
//! 235.4 MB.)
use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::error::{Error, Result};
use crate::gpu::Precision;
use crate::models::pvt::{Modality, PvtConfig, PvtEncoder};
use crate::nn::Module;
use crate::ops;
use crate::tensor::Tensor;
use crate::util::Rng;

const N: usize = 2;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "pvt_encoder_fwd_bwd",
            case: "vol16x48x48_n2",
            run: |b| timed(b, [16, 48, 48], Precision::F32),
        },
        Case {
            op: "pvt_encoder_fwd_bwd",
            case: "vol16x48x48_n2",
            run: |b| timed(b, [16, 48, 48], Precision::Mixed),
        },
        Case {
            op: "pvt_encoder_fwd_bwd",
            case: "vol64x160x160_n2",
            run: |b| once(b, [64, 160, 160], Precision::F32),
        },
        Case {
            op: "pvt_encoder_fwd_bwd",
            case: "vol64x160x160_n2",
            run: |b| once(b, [64, 160, 160], Precision::Mixed),
        },
    ]
}

fn config() -> PvtConfig {
    PvtConfig {
        with_image_path: false,
        ..PvtConfig::default()
    }
}

/// Stage grids of a `[D, H, W]` input: stem (2, 4, 4), then ⌈·/2⌉ per stage (k3 s2 p1).
fn stage_grids(dhw: [usize; 3]) -> [[usize; 3]; 4] {
    let mut g = [dhw[0] / 2, dhw[1] / 4, dhw[2] / 4];
    let mut out = [[0; 3]; 4];
    for (s, o) in out.iter_mut().enumerate() {
        if s > 0 {
            g = g.map(|v| v.div_ceil(2));
        }
        *o = g;
    }
    out
}

/// Forward FLOPs of one sample (convs, linears, attention; norms and pointwise ops left out).
pub(crate) fn forward_flops(cfg: &PvtConfig, dhw: [usize; 3]) -> f64 {
    let vol = |g: [usize; 3]| (g[0] * g[1] * g[2]) as f64;
    let (s, e) = (cfg.stem_channels as f64, cfg.embed_dims.map(|c| c as f64));
    let g0 = [dhw[0] / 2, dhw[1] / 2, dhw[2] / 2];
    let grids = stage_grids(dhw);
    let mut f = 2.0 * vol(g0) * 343.0 * cfg.in_channels as f64 * s // 7³ conv
        + 2.0 * 2.0 * vol(g0) * 27.0 * s * s // two 3³ convs
        + 2.0 * vol(grids[0]) * 27.0 * s * e[0]; // stride (1, 2, 2) conv
    for st in 0..4 {
        let (l, c, r, sr) = (
            vol(grids[st]),
            e[st],
            cfg.mlp_ratios[st] as f64,
            cfg.sr_ratios[st],
        );
        if st > 0 {
            f += 2.0 * l * 27.0 * e[st - 1] * c;
        }
        let m = if sr > 1 {
            vol(grids[st].map(|v| v / sr))
        } else {
            l
        };
        let sr3 = (sr * sr * sr) as f64;
        let sr_conv = if sr > 1 { 2.0 * m * sr3 * c * c } else { 0.0 };
        let block = 2.0 * l * c * c // q
            + sr_conv
            + 2.0 * m * c * 2.0 * c // kv
            + 4.0 * l * m * c // attention
            + 2.0 * l * c * c // proj
            + 2.0 * 2.0 * l * c * r * c // fc1, fc2
            + 2.0 * l * 27.0 * r * c; // depthwise conv
        f += cfg.depths[st] as f64 * block;
    }
    f
}

/// Bytes of the largest single tensor of one sample's step: the stride-2 stem activation or a
/// stage's MLP hidden activation (the ones that can pass the storage-binding limit).
fn largest_tensor_bytes(cfg: &PvtConfig, dhw: [usize; 3]) -> u64 {
    let stem = (dhw[0] / 2) * (dhw[1] / 2) * (dhw[2] / 2) * cfg.stem_channels;
    let grids = stage_grids(dhw);
    let hidden = (0..4)
        .map(|s| grids[s].iter().product::<usize>() * cfg.embed_dims[s] * cfg.mlp_ratios[s])
        .max()
        .unwrap_or(0);
    4 * stem.max(hidden) as u64
}

/// Inputs of one micro-batch: the volume and the stage-4 upstream gradient.
fn make_inputs(
    gpu: &crate::Gpu,
    rng: &mut Rng,
    cfg: &PvtConfig,
    n: usize,
    dhw: [usize; 3],
) -> Result<(Tensor, Tensor)> {
    let g4 = stage_grids(dhw)[3];
    Ok((
        random(gpu, rng, &[n, dhw[0], dhw[1], dhw[2], cfg.in_channels])?,
        random(gpu, rng, &[n, g4[0], g4[1], g4[2], cfg.embed_dims[3]])?,
    ))
}

/// One training step of the encoder over micro-batches (forward at `precision`), gradients of
/// every parameter summed.
fn step(
    enc: &PvtEncoder,
    params: &[(String, Tensor)],
    micro: &[(Tensor, Tensor)],
    rng: &mut Rng,
    precision: Precision,
) -> Result<()> {
    let mut acc: Vec<Option<Tensor>> = vec![None; params.len()];
    for (x, g) in micro {
        let out = x
            .gpu()
            .autocast(precision, || enc.forward(x, Modality::Volume, true, rng))?;
        let grads = out.stages[3].backward_with(g)?;
        for ((_, p), a) in params.iter().zip(acc.iter_mut()) {
            if let Some(gp) = grads.get(p) {
                *a = Some(match a.take() {
                    None => gp.clone(),
                    Some(prev) => add_no_grad(&prev, gp)?,
                });
            }
        }
    }
    // Every parameter of the volume path must have received a gradient.
    if let Some(((name, _), _)) = params.iter().zip(&acc).find(|(_, a)| a.is_none()) {
        return Err(Error::invalid(
            "bench pvt_encoder_fwd_bwd",
            "a gradient for every parameter",
            format!("none for {name}"),
        ));
    }
    Ok(())
}

fn add_no_grad(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.gpu().no_grad(|| ops::add(a, b))
}

/// Parameters by name.
type Named = Vec<(String, Tensor)>;

fn build(b: &Bench) -> Result<(PvtEncoder, Named)> {
    let enc = PvtEncoder::new(b.gpu(), config())?;
    let mut params = Vec::new();
    enc.parameters("", &mut params);
    Ok((enc, params))
}

/// Timed like every case (batch 2 in one micro-batch), then one more step for the peak.
fn timed(b: &Bench, dhw: [usize; 3], precision: Precision) -> Result<Sample> {
    let (enc, params) = build(b)?;
    let cfg = enc.config.clone();
    let mut rng = Rng::new(7);
    let make = |gpu: &crate::Gpu, r: &mut Rng| Ok(vec![make_inputs(gpu, r, &cfg, N, dhw)?]);
    let ms = b.time_with_grad(make, |m| step(&enc, &params, m, &mut rng, precision))?;
    let peak = b.peak_bytes(make, |m| step(&enc, &params, m, &mut rng, precision))?;
    drop((enc, params));
    b.gpu().trim_pool();
    Ok(Sample {
        precision: Some(precision.name()),
        ..Sample::whole_step(
            ms,
            Work::Flops(3.0 * N as f64 * forward_flops(&cfg, dhw)),
            peak,
        )
    })
}

/// One step at `precision`, split into micro-batches of 1 when batch 2 would pass the binding
/// limit (decided on the f32 step's largest tensor: under autocast fc1's f32 product is as wide).
fn once(b: &Bench, dhw: [usize; 3], precision: Precision) -> Result<Sample> {
    let (enc, params) = build(b)?;
    let cfg = enc.config.clone();
    let limit = b.gpu().max_binding_bytes();
    let micro_batches = if N as u64 * largest_tensor_bytes(&cfg, dhw) > limit {
        N
    } else {
        1
    };
    let per = N / micro_batches;
    let mut rng = Rng::new(7);
    let (ms, peak) = b.once_with_grad(
        |gpu, r| {
            (0..micro_batches)
                .map(|_| make_inputs(gpu, r, &cfg, per, dhw))
                .collect::<Result<Vec<_>>>()
        },
        |m| step(&enc, &params, m, &mut rng, precision),
    )?;
    drop((enc, params));
    b.gpu().trim_pool();
    let mut s = Sample::whole_step(
        ms,
        Work::Flops(3.0 * N as f64 * forward_flops(&cfg, dhw)),
        peak,
    );
    s.micro_batches = (micro_batches > 1).then_some(micro_batches);
    s.precision = Some(precision.name());
    Ok(s)
}
