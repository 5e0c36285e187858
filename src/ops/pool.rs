//! 3D (and, with D = 1, 2D) max and average pooling over channels-last volumes, plus global
//! average pooling. Kernels: shaders/pool3d.wgsl. Reference: src/reference/pool.rs.

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

pub use super::config::Pool3dConfig;

crate::gpu::shader_params! {
    /// Mirrors `PoolParams` in shaders/pool3d.wgsl.
    struct PoolParams {
        n: u32,
        d: u32,
        h: u32,
        w: u32,
        c: u32,
        dout: u32,
        hout: u32,
        wout: u32,
        k: [i32; 3] => [kd, kh, kw],
        s: [i32; 3] => [sd, sh, sw],
        p: [i32; 3] => [pd, ph, pw],
        count_include_pad: u32,
        total: u32,
        _pad0: u32,
    }
}

const SOURCE: &str = include_str!("../../shaders/pool3d.wgsl");
const fn spec(entry: &'static str, inputs: u32, outputs: u32) -> KernelSpec {
    KernelSpec {
        shader: "pool3d",
        source: SOURCE,
        entry,
        inputs,
        outputs,
        params: PoolParams::LAYOUT,
        constants: &[],
    }
}
const MAX_FORWARD: KernelSpec = spec("max_pool_forward", 1, 2);
const MAX_BACKWARD: KernelSpec = spec("max_pool_backward", 2, 1);
const AVG_FORWARD: KernelSpec = spec("avg_pool_forward", 1, 1);
const AVG_BACKWARD: KernelSpec = spec("avg_pool_backward", 1, 1);

pub(crate) const KERNELS: &[KernelSpec] = &[MAX_FORWARD, MAX_BACKWARD, AVG_FORWARD, AVG_BACKWARD];

/// Split `[N, D, H, W, C]` (or `[N, H, W, C]`, treated as D = 1) into (N, [D, H, W], C).
fn volume_dims(op: &'static str, shape: &[usize]) -> Result<(usize, [usize; 3], usize)> {
    match *shape {
        [n, d, h, w, c] => Ok((n, [d, h, w], c)),
        [n, h, w, c] => Ok((n, [1, h, w], c)),
        _ => Err(Error::shape(op, "[N, D, H, W, C] or [N, H, W, C]", shape)),
    }
}

fn params(
    n: usize,
    dhw: [usize; 3],
    c: usize,
    out: [usize; 3],
    cfg: &Pool3dConfig,
    total: usize,
) -> PoolParams {
    PoolParams {
        n: n as u32,
        d: dhw[0] as u32,
        h: dhw[1] as u32,
        w: dhw[2] as u32,
        c: c as u32,
        dout: out[0] as u32,
        hout: out[1] as u32,
        wout: out[2] as u32,
        k: cfg.kernel.map(|v| v as i32),
        s: cfg.stride.map(|v| v as i32),
        p: cfg.padding.map(|v| v as i32),
        count_include_pad: cfg.count_include_pad as u32,
        total: total as u32,
        _pad0: 0,
    }
}

/// For a 2D input the D axis must pool with kernel 1.
fn effective_config(shape: &[usize], cfg: &Pool3dConfig) -> Pool3dConfig {
    if shape.len() == 4 {
        Pool3dConfig {
            kernel: [1, cfg.kernel[1], cfg.kernel[2]],
            stride: [1, cfg.stride[1], cfg.stride[2]],
            padding: [0, cfg.padding[1], cfg.padding[2]],
            count_include_pad: cfg.count_include_pad,
        }
    } else {
        *cfg
    }
}

fn out_shape(shape: &[usize], n: usize, out: [usize; 3], c: usize) -> Vec<usize> {
    if shape.len() == 4 {
        vec![n, out[1], out[2], c]
    } else {
        vec![n, out[0], out[1], out[2], c]
    }
}

/// Max pooling. Gradient flows to the first maximum of each window.
pub fn max_pool3d(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    let op = "max_pool3d";
    let (n, dhw, c) = volume_dims(op, x.shape())?;
    let cfg = effective_config(x.shape(), cfg);
    let out = cfg.output_dims(op, dhw)?;
    let oshape = out_shape(x.shape(), n, out, c);
    let y = Tensor::uninit(x.gpu(), op, &oshape)?;
    let argmax = Tensor::uninit(x.gpu(), op, &oshape)?;
    let total = y.numel();
    if total > 0 {
        x.gpu().dispatch(
            &MAX_FORWARD,
            &params(n, dhw, c, out, &cfg, total),
            &[x.buffer()],
            &[y.buffer(), argmax.buffer()],
            Grid::cover(total as u64, 256),
        )?;
    }
    let in_shape = x.shape().to_vec();
    Ok(record(y, op, &[x], move |g| {
        let gx = Tensor::uninit(g.gpu(), "max_pool3d_backward", &in_shape)?;
        let total = gx.numel();
        if total > 0 {
            g.gpu().dispatch(
                &MAX_BACKWARD,
                &params(n, dhw, c, out, &cfg, total),
                &[g.buffer(), argmax.buffer()],
                &[gx.buffer()],
                Grid::cover(total as u64, 256),
            )?;
        }
        Ok(vec![Some(gx)])
    }))
}

/// Average pooling.
pub fn avg_pool3d(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    let op = "avg_pool3d";
    let (n, dhw, c) = volume_dims(op, x.shape())?;
    let cfg = effective_config(x.shape(), cfg);
    let out = cfg.output_dims(op, dhw)?;
    let oshape = out_shape(x.shape(), n, out, c);
    let y = Tensor::uninit(x.gpu(), op, &oshape)?;
    let total = y.numel();
    if total > 0 {
        x.gpu().dispatch(
            &AVG_FORWARD,
            &params(n, dhw, c, out, &cfg, total),
            &[x.buffer()],
            &[y.buffer()],
            Grid::cover(total as u64, 256),
        )?;
    }
    let in_shape = x.shape().to_vec();
    Ok(record(y, op, &[x], move |g| {
        let gx = Tensor::uninit(g.gpu(), "avg_pool3d_backward", &in_shape)?;
        let total = gx.numel();
        if total > 0 {
            g.gpu().dispatch(
                &AVG_BACKWARD,
                &params(n, dhw, c, out, &cfg, total),
                &[g.buffer()],
                &[gx.buffer()],
                Grid::cover(total as u64, 256),
            )?;
        }
        Ok(vec![Some(gx)])
    }))
}

/// Adaptive average pooling to 1: `[N, *spatial, C]` → `[N, C]` (mean over every spatial axis;
/// also tokens `[N, L, C]` → `[N, C]`).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 3 {
        return Err(Error::shape(
            "global_avg_pool",
            "[N, *spatial, C]",
            x.shape(),
        ));
    }
    let (n, c) = (x.shape()[0], x.shape()[x.rank() - 1]);
    let l = x.numel() / (n * c).max(1);
    super::reduce::mean(&x.reshape(&[n, l, c])?, &[1], false)
}
