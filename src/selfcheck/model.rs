//! The composition check: a reduced-width PVTv2 encoder (every stage, spatial reduction on and
//! off, the stem) forward and backward on the kernels this adapter chose (the tuned matmul and
//! conv variants), against the f64 reference encoder of src/reference/pvt, on the volume and the
//! image path, and on the volume path under autocast where the device has f16 (the f16 matmuls,
//! cooperative matrices included, inside the model). The per-op checks test each variant alone;
//! this one strings them together as a training step does (reshapes, slices, concatenations,
//! the tape's accumulation).

use super::{Comparison, Run};
use crate::error::Result;
use crate::gpu::Precision;
use crate::models::pvt::{Modality, PvtConfig, PvtEncoder};
use crate::reference::pvt::{self as refpvt, EncoderSpec, Params};
use crate::reference::Array;
use crate::tensor::Tensor;
use crate::util::{F32_ACCUM, F32_GRAD};

/// Under autocast every Linear of 256 rows or more rounds its operands to f16 (u = 2⁻¹¹) and its
/// backward the upstream gradient and results again: relative L2 errors of about 1e-3 through
/// the encoder (tests/autocast.rs), O(1) for a wrong kernel, transpose or cast.
const MIXED_RELATIVE_L2: f64 = 1e-2;

pub(super) fn encoder(run: &mut Run) -> Result<()> {
    let volume: &[usize] = &[2, 16, 32, 48, 1];
    let mut cases: Vec<(Modality, Precision, &str, &[usize])> = vec![
        (Modality::Volume, Precision::F32, "volume", volume),
        (Modality::Image, Precision::F32, "image", &[2, 32, 48, 1]),
    ];
    // Without SHADER_F16 autocast runs the f32 path, checked above.
    if run.gpu.features().f16 {
        cases.push((Modality::Volume, Precision::Mixed, "volume_amp", volume));
    }
    for (modality, precision, name, shape) in cases {
        if !run.wants("pvt_encoder", name) {
            continue;
        }
        let case = format!("reduced widths, x{shape:?}");
        run.check("pvt_encoder", name, "chosen", &case, |run, cmp| {
            encoder_case(run, cmp, modality, precision, shape)
        });
    }
    Ok(())
}

fn encoder_case(
    run: &mut Run,
    cmp: &mut Comparison,
    modality: Modality,
    precision: Precision,
    shape: &[usize],
) -> Result<()> {
    let cfg = PvtConfig::reduced();
    let enc = PvtEncoder::new(run.gpu, cfg.clone())?;
    let named = enc.named_parameters(None);
    // Every parameter away from its init (zero biases and β would hide a misplaced one); norm
    // weights γ around 1.
    let mut params = Params::new();
    for (name, t) in &named {
        let gamma = name.ends_with("weight")
            && name
                .rsplit('.')
                .nth(1)
                .is_some_and(|m| m.starts_with("norm"));
        let offset = if gamma { 1.0 } else { 0.0 };
        let (a, _) = run.uniform(t.shape(), offset - 0.5, offset + 0.5, false)?;
        t.write(&a.to_f32())?;
        params.insert(name.clone(), a);
    }
    let (x, tx) = run.random(shape, true)?;
    let gpu = run.gpu;
    let rng = &mut run.rng;
    let out = gpu.autocast(precision, || enc.forward(&tx, modality, false, rng))?;
    let spec = EncoderSpec {
        heads: cfg.heads,
        depths: cfg.depths,
        sr_ratios: cfg.sr_ratios,
        image: modality == Modality::Image,
    };
    let (want, cache) = refpvt::encoder_forward(&params, &spec, &x)?;
    let mixed = precision == Precision::Mixed;
    // f32: element by element; mixed: relative L2 per output, a gradient under 1e-4 of the
    // largest held to an absolute 1e-6 of the largest instead (the stem conv's bias, ahead of an
    // InstanceNorm, has exactly zero gradient; measured amp noise there: 7e-8 of the largest).
    let compare = |cmp: &mut Comparison, what: &str, got: &Tensor, want: &Array, tol, floor| {
        if mixed {
            cmp.relative_l2(what, got, want, MIXED_RELATIVE_L2, floor);
        } else {
            cmp.tensor(what, got, want, tol);
        }
    };
    compare(cmp, "skip", &out.skip, &want.skip, F32_ACCUM, 0.0);
    for (s, (got, w)) in out.stages.iter().zip(&want.stages).enumerate() {
        compare(cmp, &format!("stage {}", s + 1), got, w, F32_ACCUM, 0.0);
    }

    // One upstream gradient over all five outputs, [N, skip | stage 1 | … | stage 4].
    let n = shape[0];
    let outputs: Vec<&Tensor> = std::iter::once(&out.skip).chain(&out.stages).collect();
    let flat = outputs
        .iter()
        .map(|t| t.reshape(&[n, t.numel() / n]))
        .collect::<Result<Vec<_>>>()?;
    let joined = Tensor::concat(&flat.iter().collect::<Vec<_>>(), -1)?;
    let (g, tg) = run.random(joined.shape(), false)?;
    let grads = joined.backward_with(&tg)?;
    let total = g.shape[1];
    let mut parts = Vec::new();
    let mut off = 0;
    for t in &outputs {
        let len = t.numel() / n;
        let data = (0..n)
            .flat_map(|b| g.data[b * total + off..b * total + off + len].to_vec())
            .collect();
        parts.push(Array::new(data, t.shape()));
        off += len;
    }
    let (gx, want_grads) =
        refpvt::encoder_backward(&params, &spec, &cache, &parts[0], &parts[1..])?;
    match grads.get(&tx) {
        Some(got) => compare(cmp, "grad x", got, &gx, F32_GRAD, 0.0),
        None => cmp.fail("grad x: no gradient reached the input".into()),
    }
    let norm = |a: &Array| a.data.iter().map(|v| v * v).sum::<f64>().sqrt();
    let largest = named
        .iter()
        .filter_map(|(name, _)| want_grads.get(name).ok().map(norm))
        .fold(0.0f64, f64::max);
    // A parameter has a gradient on both sides or on neither (the other modality's convs).
    for (name, t) in &named {
        match (grads.get(t), want_grads.get(name)) {
            (Some(got), Ok(w)) => {
                let what = format!("grad {name}");
                compare(cmp, &what, got, w, F32_GRAD, 1e-4 * largest);
            }
            (None, Err(_)) => {}
            (got, w) => cmp.fail(format!(
                "grad {name}: on the device {}, in the reference {}",
                got.is_some(),
                w.is_ok()
            )),
        }
    }
    Ok(())
}
