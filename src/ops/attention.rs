//! Multi-head scaled dot-product attention, forward and backward, with no materialised score
//! matrix: a direct path (keys ≤ 64, scores in registers) and an online-softmax path for any
//! number of keys (flash style). Kernels: shaders/attention.wgsl. Reference:
//! src/reference/attention.rs.
//!
//! q `[N, L, C]`, k and v `[N, M, C]`, C = heads · head_dim, head h on channels
//! h·hd..(h+1)·hd (the layout `Linear` outputs, so no permute is needed). The head dimension
//! must be 4, 8, 16, 32 or 64 (a pipeline constant, so the per-head loops unroll).

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::{Saved, Tensor};

/// Which forward kernel to use. `Auto` picks `Direct` for at most 64 keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionPath {
    Auto,
    Direct,
    Online,
}

/// Keys the direct kernel can hold (MAX_DIRECT_KEYS in the shader).
pub const MAX_DIRECT_KEYS: usize = 64;
/// Queries per partial sum of the key-side backward.
const KEY_CHUNK: usize = 256;

crate::gpu::shader_params! {
    struct AttnParams {
        n: u32,
        l: u32,
        m: u32,
        heads: u32,
        c4: u32,
        scale: f32,
        chunk: u32,
        chunks: u32,
        total: u32,
        _pad: [u32; 3],
    }
}

const SOURCE: &str = include_str!("../../shaders/attention.wgsl");
const ENTRIES: [(&str, u32, u32); 4] = [
    ("forward_direct", 3, 2),
    ("forward_online", 3, 2),
    ("backward_query", 6, 2),
    ("backward_key", 6, 2),
];
const HD4_VALUES: [&[(&str, f64)]; 5] = [
    &[("HD4", 1.0)],
    &[("HD4", 2.0)],
    &[("HD4", 4.0)],
    &[("HD4", 8.0)],
    &[("HD4", 16.0)],
];

const fn spec(entry: usize, hd: usize) -> KernelSpec {
    KernelSpec {
        shader: "attention",
        source: SOURCE,
        entry: ENTRIES[entry].0,
        inputs: ENTRIES[entry].1,
        outputs: ENTRIES[entry].2,
        params: AttnParams::LAYOUT,
        constants: HD4_VALUES[hd],
    }
}

/// specs[entry][head-dim class]
const SPECS: [[KernelSpec; 5]; 4] = {
    let mut out = [[spec(0, 0); 5]; 4];
    let mut e = 0;
    while e < 4 {
        let mut h = 0;
        while h < 5 {
            out[e][h] = spec(e, h);
            h += 1;
        }
        e += 1;
    }
    out
};

pub(crate) const KERNELS: &[KernelSpec] = SPECS.as_flattened();

fn head_dim_class(op: &'static str, hd: usize) -> Result<usize> {
    match hd {
        4 => Ok(0),
        8 => Ok(1),
        16 => Ok(2),
        32 => Ok(3),
        64 => Ok(4),
        _ => Err(Error::invalid(op, "head_dim in {4, 8, 16, 32, 64}", hd)),
    }
}

/// Attention with scale head_dim^-0.5.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let c = *q.shape().last().unwrap_or(&0);
    let hd = c.checked_div(heads).unwrap_or(0);
    attention_with(q, k, v, heads, (hd as f32).powf(-0.5), AttentionPath::Auto)
}

/// Attention with an explicit scale and kernel choice.
pub fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    path: AttentionPath,
) -> Result<Tensor> {
    let op = "attention";
    q.check_same_gpu(op, k)?;
    q.check_same_gpu(op, v)?;
    let [n, l, c] = *q.shape() else {
        return Err(Error::shape(op, "q [N, L, C]", q.shape()));
    };
    let [kn, m, kc] = *k.shape() else {
        return Err(Error::shape(op, "k [N, M, C]", k.shape()));
    };
    if kn != n || kc != c || v.shape() != k.shape() {
        return Err(Error::shape(
            op,
            format!("k and v [{n}, M, {c}]"),
            format!("k {:?}, v {:?}", k.shape(), v.shape()),
        ));
    }
    if heads == 0 || c % heads != 0 {
        return Err(Error::invalid(op, format!("heads dividing C = {c}"), heads));
    }
    if m == 0 || l == 0 {
        return Err(Error::invalid(
            op,
            "at least one query and one key",
            format!("L = {l}, M = {m}"),
        ));
    }
    let hd = c / heads;
    let class = head_dim_class(op, hd)?;
    let direct = match path {
        AttentionPath::Auto => m <= MAX_DIRECT_KEYS,
        AttentionPath::Direct => {
            if m > MAX_DIRECT_KEYS {
                return Err(Error::invalid(
                    op,
                    format!("at most {MAX_DIRECT_KEYS} keys for the direct path"),
                    m,
                ));
            }
            true
        }
        AttentionPath::Online => false,
    };
    let gpu = q.gpu();
    let out = Tensor::uninit(gpu, op, &[n, l, c])?;
    let lse = Tensor::uninit(gpu, op, &[n, heads, l])?;
    let params = AttnParams {
        n: n as u32,
        l: l as u32,
        m: m as u32,
        heads: heads as u32,
        c4: (c / 4) as u32,
        scale,
        chunk: KEY_CHUNK as u32,
        chunks: l.div_ceil(KEY_CHUNK) as u32,
        total: (n * heads * l) as u32,
        _pad: [0; 3],
    };
    let fwd = &SPECS[if direct { 0 } else { 1 }][class];
    gpu.dispatch(
        fwd,
        &params,
        &[q.buffer(), k.buffer(), v.buffer()],
        &[out.buffer(), lse.buffer()],
        Grid::cover((n * heads * l) as u64, 64),
    )?;
    // Kept in f16 under autocast (src/tensor/saved.rs): PyTorch's AMP attention keeps f16 too.
    let keep = |t: &Tensor| Saved::keep_autocast(op, t);
    // The output's rounding is the one the output projection (a Linear under autocast) keeps.
    let kept = [
        keep(q)?,
        keep(k)?,
        keep(v)?,
        Saved::keep_output_autocast(op, &out, &[q, k, v])?,
    ];
    Ok(record(out, op, &[q, k, v], move |g| {
        let gpu = g.gpu();
        let [qc, kc_, vc, oc] = kept.each_ref().map(|t| t.value(op));
        let (qc, kc_, vc, oc) = (qc?, kc_?, vc?, oc?);
        let dq = Tensor::uninit(gpu, "attention_backward", &[n, l, c])?;
        let delta = Tensor::uninit(gpu, "attention_backward", &[n, heads, l])?;
        gpu.dispatch(
            &SPECS[2][class],
            &params,
            &[
                qc.buffer(),
                kc_.buffer(),
                vc.buffer(),
                oc.buffer(),
                g.buffer(),
                lse.buffer(),
            ],
            &[dq.buffer(), delta.buffer()],
            Grid::cover((n * heads * l) as u64, 64),
        )?;
        let chunks = l.div_ceil(KEY_CHUNK);
        let dk_part = Tensor::uninit(gpu, "attention_backward", &[chunks, n, m, c])?;
        let dv_part = Tensor::uninit(gpu, "attention_backward", &[chunks, n, m, c])?;
        let key_params = AttnParams {
            total: (chunks * n * heads * m) as u32,
            ..params
        };
        gpu.dispatch(
            &SPECS[3][class],
            &key_params,
            &[
                qc.buffer(),
                kc_.buffer(),
                vc.buffer(),
                g.buffer(),
                lse.buffer(),
                delta.buffer(),
            ],
            &[dk_part.buffer(), dv_part.buffer()],
            Grid::cover((chunks * n * heads * m) as u64, 64),
        )?;
        let (dk, dv) = if chunks == 1 {
            (dk_part.reshape(&[n, m, c])?, dv_part.reshape(&[n, m, c])?)
        } else {
            (
                super::sum(&dk_part, &[0], false)?,
                super::sum(&dv_part, &[0], false)?,
            )
        };
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    }))
}
