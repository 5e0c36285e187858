//! Resampling of channels-last volumes (and images, as D = 1) to an arbitrary size: nearest or
//! trilinear, with or without align-corners, matching PyTorch's `F.interpolate` (size= form).
//! Kernels: shaders/resample3d.wgsl. Reference: src/reference/resample.rs.
//!
//! Interpolation is separable, so the host precomputes per-axis tables (a few KB) and the kernels
//! only gather: this keeps the coordinate conventions in one readable Rust function and makes the
//! backward an exact transpose of the forward.

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

pub use super::config::ResampleMode;

/// For output `o` of an axis `input → output`: (i0, i1, λ) with value (1−λ)·x[i0] + λ·x[i1].
pub fn axis_weights(
    mode: ResampleMode,
    input: usize,
    output: usize,
    o: usize,
) -> (usize, usize, f64) {
    match mode {
        ResampleMode::Nearest => {
            let scale = input as f64 / output as f64;
            let i = ((o as f64 * scale).floor() as usize).min(input - 1);
            (i, i, 0.0)
        }
        ResampleMode::Linear { align_corners } => {
            let src = if align_corners {
                if output > 1 {
                    o as f64 * (input - 1) as f64 / (output - 1) as f64
                } else {
                    0.0
                }
            } else {
                // Half-pixel centres; PyTorch clamps negative source coordinates to 0.
                ((o as f64 + 0.5) * input as f64 / output as f64 - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            let lambda = if i1 == i0 { 0.0 } else { src - i0 as f64 };
            (i0, i1, lambda)
        }
    }
}

crate::gpu::shader_params! {
    /// Mirrors `ResampleParams` in shaders/resample3d.wgsl.
    #[derive(Default)]
    struct ResampleParams {
        n: u32,
        c: u32,
        total: u32,
        _pad0: u32,
        dhw: [u32; 3] => [d, h, w],
        _pad1: u32,
        out: [u32; 3] => [dout, hout, wout],
        _pad2: u32,
        fwd: [u32; 3] => [fwd_d, fwd_h, fwd_w],
        _pad3: u32,
        start: [u32; 3] => [start_d, start_h, start_w],
        _pad4: u32,
        pairs: [u32; 3] => [pairs_d, pairs_h, pairs_w],
        _pad5: u32,
    }
}

const SOURCE: &str = include_str!("../../shaders/resample3d.wgsl");
const FORWARD: KernelSpec = KernelSpec {
    shader: "resample3d",
    source: SOURCE,
    entry: "resample_forward",
    inputs: 2,
    outputs: 1,
    params: ResampleParams::LAYOUT,
    constants: &[],
};
const BACKWARD: KernelSpec = KernelSpec {
    entry: "resample_backward",
    ..FORWARD
};

pub(crate) const KERNELS: &[KernelSpec] = &[FORWARD, BACKWARD];

/// Build the forward and backward tables of the three axes into one buffer.
fn build_tables(
    weights: &dyn Fn(usize, usize) -> (usize, usize, f64),
    dhw: [usize; 3],
    out: [usize; 3],
    params: &mut ResampleParams,
) -> Vec<f32> {
    let mut t: Vec<f32> = Vec::new();
    for (a, &extent) in out.iter().enumerate() {
        params.fwd[a] = t.len() as u32;
        for o in 0..extent {
            let (i0, i1, l) = weights(a, o);
            t.extend_from_slice(&[i0 as f32, i1 as f32, l as f32]);
        }
    }
    for a in 0..3 {
        // weight[i][o] = Σ of what output o takes from input i.
        let mut per_input: Vec<Vec<(usize, f64)>> = vec![Vec::new(); dhw[a]];
        for o in 0..out[a] {
            let (i0, i1, l) = weights(a, o);
            for (i, wgt) in [(i0, 1.0 - l), (i1, l)] {
                if wgt == 0.0 {
                    continue;
                }
                match per_input[i].last_mut() {
                    Some((last_o, w)) if *last_o == o => *w += wgt,
                    _ => per_input[i].push((o, wgt)),
                }
            }
        }
        params.start[a] = t.len() as u32;
        let mut acc = 0usize;
        t.push(0.0);
        for list in &per_input {
            acc += list.len();
            t.push(acc as f32);
        }
        params.pairs[a] = t.len() as u32;
        for list in &per_input {
            for &(o, w) in list {
                t.extend_from_slice(&[o as f32, w as f32]);
            }
        }
    }
    t
}

/// Resample `[N, D, H, W, C]` to `[N, size[0], size[1], size[2], C]`, or `[N, H, W, C]` to
/// `[N, size[1], size[2], C]` (size[0] must then be 1).
pub fn resample(x: &Tensor, size: [usize; 3], mode: ResampleMode) -> Result<Tensor> {
    let dhw = spatial_dims("resample", x)?;
    resample_tables(x, size, &|a, o| axis_weights(mode, dhw[a], size[a], o))
}

/// Resample with a fixed step per axis (D, H, W) in input voxels, voxel 0 fixed: output o reads
/// source coordinate `o · step` clamped to the input; `linear` interpolates, otherwise the nearest
/// voxel (rounding). This is resampling to a new voxel spacing, `step = new / old spacing`, as
/// `data::resample_to_spacing` does on the CPU.
pub fn resample_scaled(
    x: &Tensor,
    size: [usize; 3],
    step: [f64; 3],
    linear: bool,
) -> Result<Tensor> {
    resample_scaled_from(x, size, step, [0.0; 3], linear)
}

/// As [`resample_scaled`] with output 0 reading source coordinate `origin` (per axis, in input
/// voxels): output o reads `origin + o · step`. Lets a caller resample a slab of a volume too
/// large for one binding.
pub fn resample_scaled_from(
    x: &Tensor,
    size: [usize; 3],
    step: [f64; 3],
    origin: [f64; 3],
    linear: bool,
) -> Result<Tensor> {
    let op = "resample_scaled";
    let dhw = spatial_dims(op, x)?;
    if step.iter().chain(&origin).any(|s| !s.is_finite()) || step.iter().any(|s| *s <= 0.0) {
        return Err(Error::invalid(
            op,
            "finite positive steps and finite origins",
            format!("step {step:?}, origin {origin:?}"),
        ));
    }
    resample_tables(x, size, &|a, o| {
        let n = dhw[a];
        let src = (origin[a] + o as f64 * step[a]).clamp(0.0, (n - 1) as f64);
        if linear {
            let i0 = src.floor() as usize;
            let i1 = (i0 + 1).min(n - 1);
            (i0, i1, if i1 == i0 { 0.0 } else { src - i0 as f64 })
        } else {
            let i = (src.round() as usize).min(n - 1);
            (i, i, 0.0)
        }
    })
}

/// (D, H, W) of `[N, D, H, W, C]`, or (1, H, W) of `[N, H, W, C]`.
fn spatial_dims(op: &'static str, x: &Tensor) -> Result<[usize; 3]> {
    match *x.shape() {
        [_, d, h, w, _] => Ok([d, h, w]),
        [_, h, w, _] => Ok([1, h, w]),
        _ => Err(Error::shape(
            op,
            "[N, D, H, W, C] or [N, H, W, C]",
            x.shape(),
        )),
    }
}

/// Shared launch: per-axis weights (axis, output index) → (i0, i1, λ).
fn resample_tables(
    x: &Tensor,
    size: [usize; 3],
    weights: &dyn Fn(usize, usize) -> (usize, usize, f64),
) -> Result<Tensor> {
    let op = "resample";
    let dhw = spatial_dims(op, x)?;
    let image = x.rank() == 4;
    let (n, c) = (x.shape()[0], x.shape()[x.rank() - 1]);
    if image && size[0] != 1 {
        return Err(Error::invalid(op, "size[0] = 1 for a 2D image", size[0]));
    }
    if size.contains(&0) || dhw.contains(&0) {
        return Err(Error::invalid(
            op,
            "non-zero input and output extents",
            format!("input {dhw:?}, size {size:?}"),
        ));
    }
    let out_shape = if image {
        vec![n, size[1], size[2], c]
    } else {
        vec![n, size[0], size[1], size[2], c]
    };
    let mut params = ResampleParams {
        n: n as u32,
        c: c as u32,
        dhw: dhw.map(|v| v as u32),
        out: size.map(|v| v as u32),
        ..Default::default()
    };
    let table_data = build_tables(weights, dhw, size, &mut params);
    let tables = Tensor::from_slice(x.gpu(), &table_data, &[table_data.len()])?;
    let y = Tensor::uninit(x.gpu(), op, &out_shape)?;
    params.total = y.numel() as u32;
    if y.numel() > 0 {
        x.gpu().dispatch(
            &FORWARD,
            &params,
            &[x.buffer(), tables.buffer()],
            &[y.buffer()],
            Grid::cover(y.numel() as u64, 256),
        )?;
    }
    let in_shape = x.shape().to_vec();
    Ok(record(y, op, &[x], move |g| {
        let gx = Tensor::uninit(g.gpu(), "resample_backward", &in_shape)?;
        let mut bp = params;
        bp.total = gx.numel() as u32;
        if gx.numel() > 0 {
            g.gpu().dispatch(
                &BACKWARD,
                &bp,
                &[g.buffer(), tables.buffer()],
                &[gx.buffer()],
                Grid::cover(gx.numel() as u64, 256),
            )?;
        }
        Ok(vec![Some(gx)])
    }))
}
