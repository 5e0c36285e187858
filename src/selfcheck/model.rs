//! The composition check: a reduced-width PVTv2 encoder (every stage, spatial reduction on and
//! off, the stem) forward and backward on the kernels this adapter chose (the tuned matmul and
//! conv variants), against the f64 reference encoder of src/reference/pvt, on the volume and the
//! image path. The per-op checks test each variant alone; this tests them as a training step
//! strings them together (reshapes, slices, concatenations, the tape's accumulation).

use super::{Comparison, Run};
use crate::error::Result;
use crate::models::pvt::{Modality, PvtConfig, PvtEncoder};
use crate::reference::pvt::{self as refpvt, EncoderSpec, Params};
use crate::reference::Array;
use crate::tensor::Tensor;
use crate::util::{F32_ACCUM, F32_GRAD};

/// PVTv2's structure at small widths: 4 stages of one block, spatial reduction in the first two.
fn reduced() -> PvtConfig {
    PvtConfig {
        stem_channels: 8,
        embed_dims: [8, 16, 24, 32],
        heads: [1, 2, 3, 4],
        mlp_ratios: [2, 2, 2, 2],
        depths: [1, 1, 1, 1],
        sr_ratios: [2, 2, 1, 1],
        ..PvtConfig::default()
    }
}

pub(super) fn encoder(run: &mut Run) -> Result<()> {
    let cases: [(Modality, &str, &[usize]); 2] = [
        (Modality::Volume, "volume", &[2, 16, 32, 48, 1]),
        (Modality::Image, "image", &[2, 32, 48, 1]),
    ];
    for (modality, name, shape) in cases {
        if !run.wants("pvt_encoder", name) {
            continue;
        }
        let case = format!("reduced widths, x{shape:?}");
        run.check("pvt_encoder", name, "chosen", &case, |run, cmp| {
            encoder_case(run, cmp, modality, shape)
        });
    }
    Ok(())
}

fn encoder_case(
    run: &mut Run,
    cmp: &mut Comparison,
    modality: Modality,
    shape: &[usize],
) -> Result<()> {
    let cfg = reduced();
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
    let out = enc.forward(&tx, modality, false, &mut run.rng)?;
    let spec = EncoderSpec {
        heads: cfg.heads,
        depths: cfg.depths,
        sr_ratios: cfg.sr_ratios,
        image: modality == Modality::Image,
    };
    let (want, cache) = refpvt::encoder_forward(&params, &spec, &x)?;
    cmp.tensor("skip", &out.skip, &want.skip, F32_ACCUM);
    for (s, (got, w)) in out.stages.iter().zip(&want.stages).enumerate() {
        cmp.tensor(&format!("stage {}", s + 1), got, w, F32_ACCUM);
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
    cmp.grad("grad x", &grads, &tx, &gx, F32_GRAD);
    // A parameter has a gradient on both sides or on neither (the other modality's convs).
    for (name, t) in &named {
        match (grads.get(t), want_grads.get(name)) {
            (Some(got), Ok(w)) => cmp.tensor(&format!("grad {name}"), got, w, F32_GRAD),
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
