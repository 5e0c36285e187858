//! 3D (and 2D) convolution over channels-last activations, forward and backward.
//! Kernels: shaders/conv3d.wgsl, shaders/conv3d_backward_input.wgsl,
//! shaders/conv3d_backward_weight.wgsl. Reference: src/reference/conv3d.rs.
//!
//! Layouts: x `[N, D, H, W, Cin]`, weight `[kD, kH, kW, Cin/groups, Cout]` (Cout innermost so a
//! tap's weights form a dense `[Cin_g, Cout]` GEMM operand read as vec4 over output channels),
//! bias `[Cout]`, y `[N, Do, Ho, Wo, Cout]`. PyTorch weights convert in
//! `nn::pytorch_layout` (the one home of layout conversions).
//!
//! Kernel choice: `ConvPlan` (conv3d_plan.rs) resolves, from the shapes and the [`ConvPath`] alone and before
//! any work, which kernel runs the forward, the input gradient and the weight gradient (as
//! `ops/matmul.rs` does); the launches then only follow the plan, with no "fall back" after
//! partial work. [`conv3d`] takes the path chosen per adapter (conv3d_tune.rs:
//! `CADS_KERNEL_CONV3D`, else measured on GPUs between the register tiles and the
//! workgroup-memory implicit GEMM of conv3d_igemm.rs, on CPU adapters between the register
//! tiles and the lanes-over-output-channel kernels of conv3d_rows.rs).
//!
//! Backward:
//! - input: gather form. With stride 1 it is a conv of g with the flipped, transposed kernel and
//!   padding `dil·(k−1) − p`, run by the same fast forward kernels; with stride > 1 (product
//!   ≤ 8, dilation 1) one such stride-1 conv per output parity class (conv3d_subpixel.rs);
//!   otherwise a direct gather.
//! - weight: GEMM over the M = N·Do·Ho·Wo output voxels, split over invocations into partial
//!   buffers and summed by a second pass (no float atomics; deterministic).
//! - bias: a sum of g over every axis but the last.

use super::conv3d_fast;
pub use super::conv3d_fast::{ForwardTile, WeightTile};
use super::conv3d_patchify;
pub use super::conv3d_plan::ConvPath;
pub(crate) use super::conv3d_plan::{ConvPlan, ForwardKernel, InputKernel, WeightKernel};
use super::conv3d_pointwise;
pub use super::conv3d_rows::RowsLanes;
use super::conv3d_subpixel;
use super::reduce::sum_to_shape;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::{Saved, Tensor};

pub use super::config::{Conv2dConfig, Conv3dConfig};
pub use super::conv3d_geometry::conv3d_output_shape;
pub(crate) use super::conv3d_geometry::{ConvParams, Geometry};

const FWD_SRC: &str = include_str!("../../shaders/conv3d.wgsl");
const BWD_IN_SRC: &str = include_str!("../../shaders/conv3d_backward_input.wgsl");
const BWD_W_SRC: &str = include_str!("../../shaders/conv3d_backward_weight.wgsl");

/// A conv kernel: ConvParams at binding 0, `inputs` read buffers, one output.
pub(crate) const fn spec(
    shader: &'static str,
    source: &'static str,
    entry: &'static str,
    inputs: u32,
) -> KernelSpec {
    KernelSpec {
        shader,
        source,
        entry,
        inputs,
        outputs: 1,
        params: ConvParams::LAYOUT,
        constants: &[],
    }
}

pub(crate) const FORWARD_NAIVE: KernelSpec = spec("conv3d", FWD_SRC, "conv3d_naive", 3);
const BACKWARD_INPUT_NAIVE: KernelSpec = spec(
    "conv3d_backward_input",
    BWD_IN_SRC,
    "conv3d_backward_input_naive",
    2,
);
const FLIP_WEIGHT: KernelSpec = spec("conv3d_backward_input", BWD_IN_SRC, "conv3d_flip_weight", 1);
const FLIP_WEIGHT4: KernelSpec = spec(
    "conv3d_backward_input",
    BWD_IN_SRC,
    "conv3d_flip_weight4",
    1,
);
const BACKWARD_WEIGHT_NAIVE: KernelSpec = spec(
    "conv3d_backward_weight",
    BWD_W_SRC,
    "conv3d_backward_weight_naive",
    2,
);
pub(crate) const BACKWARD_WEIGHT_SUM: KernelSpec = spec(
    "conv3d_backward_weight",
    BWD_W_SRC,
    "conv3d_backward_weight_sum",
    1,
);

pub(crate) const KERNELS: &[KernelSpec] = &[
    FORWARD_NAIVE,
    BACKWARD_INPUT_NAIVE,
    FLIP_WEIGHT,
    FLIP_WEIGHT4,
    BACKWARD_WEIGHT_NAIVE,
    BACKWARD_WEIGHT_SUM,
];

/// Forward launch (unrecorded), on the planned kernel.
pub(crate) fn forward_raw(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    plan: &ConvPlan,
) -> Result<Tensor> {
    let gpu = x.gpu();
    let geo = &plan.geo;
    if plan.forward == ForwardKernel::Pointwise {
        return conv3d_pointwise::forward(x, w, bias, geo);
    }
    let y = Tensor::uninit(gpu, "conv3d", &geo.out)?;
    if let ForwardKernel::Fast(kernel) = plan.forward {
        conv3d_fast::forward(x, w, bias, &y, geo, kernel)?;
        return Ok(y);
    }
    let dummy;
    let b = match bias {
        Some(b) => b.buffer(),
        None => {
            dummy = Tensor::zeros(gpu, &[1])?;
            dummy.buffer()
        }
    };
    let total = y.numel();
    let params = geo.params(total, bias.is_some());
    gpu.dispatch(
        &FORWARD_NAIVE,
        &params,
        &[x.buffer(), w.buffer(), b],
        &[y.buffer()],
        Grid::cover(total as u64, 64),
    )?;
    Ok(y)
}

/// The flipped, transposed weight of the input gradient: wf[K−1−k] = w[k]ᵀ, laid out
/// [kD, kH, kW, Cout/groups, Cin] (Cin and Cout swap roles). On 4 × 4 blocks when both channel
/// counts per group are multiples of 4 (`conv3d_flip_weight4`: 4 stores per lane for 16 values,
/// the 3³ 320 → 512 weight of PVT's last patch embedding took 50 ms in scalar stores on
/// lavapipe), else one value per lane.
pub(crate) fn flipped_weight(w: &Tensor, geo: &Geometry) -> Result<Tensor> {
    let k = geo.cfg.kernel;
    let wf = Tensor::uninit(
        w.gpu(),
        "conv3d_backward_input",
        &[k[0], k[1], k[2], geo.cout_g, geo.x[4]],
    )?;
    let params = geo.params(w.numel(), false);
    // Rows (tap, input channel of a group) of w on a folded (y, z), output channels on x; in
    // the block form both count groups of 4.
    let blocks = geo.cin_g.is_multiple_of(4) && geo.cout_g.is_multiple_of(4);
    let (spec, per) = if blocks {
        (&FLIP_WEIGHT4, 4)
    } else {
        (&FLIP_WEIGHT, 1)
    };
    let rows = k.iter().product::<usize>() * geo.cin_g / per;
    let z = rows.div_ceil(65_535);
    w.gpu().dispatch(
        spec,
        &params,
        &[w.buffer()],
        &[wf.buffer()],
        Grid::Xyz(
            (geo.out[4] / per).div_ceil(64) as u32,
            rows.div_ceil(z) as u32,
            z as u32,
        ),
    )?;
    Ok(wf)
}

/// dL/dx from dL/dy = g (unrecorded), on the planned kernel.
pub(crate) fn backward_input_raw(g: &Tensor, w: &Tensor, plan: &ConvPlan) -> Result<Tensor> {
    let gpu = g.gpu();
    let geo = &plan.geo;
    match &plan.input {
        InputKernel::Subpixel(sub) => {
            // Classes with no taps keep the zero gradient.
            let gx = Tensor::zeros(gpu, &geo.x)?;
            conv3d_subpixel::backward_input(g, &flipped_weight(w, geo)?, &gx, geo, sub)?;
            Ok(gx)
        }
        InputKernel::FlippedConv { geo: geo_t, kernel } => {
            // gx = conv(g, flip(w)ᵀ) with padding dil·(k−1) − p.
            let wf = flipped_weight(w, geo)?;
            let gx = Tensor::uninit(gpu, "conv3d_backward_input", &geo.x)?;
            conv3d_fast::forward(g, &wf, None, &gx, geo_t, *kernel)?;
            Ok(gx)
        }
        InputKernel::Patchify => conv3d_patchify::backward_input(g, w, geo),
        InputKernel::Pointwise => conv3d_pointwise::backward_input(g, w, geo),
        InputKernel::Gather => {
            let gx = Tensor::uninit(gpu, "conv3d_backward_input", &geo.x)?;
            let total = gx.numel();
            let params = geo.params(total, false);
            gpu.dispatch(
                &BACKWARD_INPUT_NAIVE,
                &params,
                &[g.buffer(), w.buffer()],
                &[gx.buffer()],
                Grid::cover(total as u64, 64),
            )?;
            Ok(gx)
        }
    }
}

/// dL/dw from dL/dy = g and the input x (unrecorded), on the planned kernel.
pub(crate) fn backward_weight_raw(g: &Tensor, x: &Tensor, plan: &ConvPlan) -> Result<Tensor> {
    let gpu = g.gpu();
    let geo = &plan.geo;
    if plan.weight == WeightKernel::Pointwise {
        return conv3d_pointwise::backward_weight(g, x, geo);
    }
    let ws = geo.w_shape();
    let gw = Tensor::uninit(gpu, "conv3d_backward_weight", &ws)?;
    if let WeightKernel::Fast(kernel) = plan.weight {
        conv3d_fast::backward_weight(g, x, &gw, geo, kernel)?;
        return Ok(gw);
    }
    let wn = gw.numel();
    let m = geo.m_total();
    // Enough (split, element) invocations to fill the machine, chunks of at least 64 voxels.
    let splits = (65_536 / wn.max(1)).clamp(1, m.div_ceil(64).max(1));
    let chunk = m.div_ceil(splits);
    let splits = m.div_ceil(chunk);
    let partial = Tensor::uninit(gpu, "conv3d_backward_weight", &[splits, wn])?;
    let mut params = geo.params(splits * wn, false);
    params.splits = splits as u32;
    params.chunk = chunk as u32;
    gpu.dispatch(
        &BACKWARD_WEIGHT_NAIVE,
        &params,
        &[x.buffer(), g.buffer()],
        &[partial.buffer()],
        Grid::cover((splits * wn) as u64, 64),
    )?;
    params.total = wn as u32;
    gpu.dispatch(
        &BACKWARD_WEIGHT_SUM,
        &params,
        &[partial.buffer()],
        &[gw.buffer()],
        Grid::cover(wn as u64, 64),
    )?;
    Ok(gw)
}

/// 3D convolution `y = conv3d(x, w) + bias`, recorded on the tape, on the kernel family chosen
/// for this adapter ([`ConvPath::chosen`]).
/// x `[N, D, H, W, Cin]`, w `[kD, kH, kW, Cin/groups, Cout]`, bias `[Cout]` → `[N, Do, Ho, Wo, Cout]`.
pub fn conv3d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv3dConfig) -> Result<Tensor> {
    conv3d_with(x, w, bias, cfg, ConvPath::chosen(x.gpu())?)
}

/// [`conv3d`] with an explicit kernel choice (the naive path is the oracle of the fast one). The
/// choice is resolved once into a plan for the forward and both gradients (an implicit-GEMM tile
/// the device cannot run first becomes one it can, [`ConvPath::runs_as`]).
pub fn conv3d_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv3dConfig,
    path: ConvPath,
) -> Result<Tensor> {
    let op = "conv3d";
    let geo = Geometry::new(op, x.shape(), w.shape(), cfg)?;
    x.check_same_gpu(op, w)?;
    if let Some(b) = bias {
        x.check_same_gpu(op, b)?;
        if b.shape() != [geo.out[4]] {
            return Err(Error::shape(op, [geo.out[4]], b.shape()));
        }
    }
    let plan = ConvPlan::new(geo, path.runs_as(x.gpu()))?;
    let y = forward_raw(x, w, bias, &plan)?;
    // dx reads the weight and dw the input: keep each only when the other's gradient is wanted
    // (a frozen layer keeps no activation; a network's first conv keeps no weight for dx). The
    // input is kept in f16 under autocast (src/tensor/saved.rs), the weight always in f32.
    let wd = x.requires_grad().then(|| w.detach());
    let xd = w
        .requires_grad()
        .then(|| Saved::keep_autocast(op, x))
        .transpose()?;
    // Under autocast the weight gradient reads an f32 widening of the kept f16 input (x-sized,
    // freed once ∂w is made): make ∂w first when that widening outweighs ∂w itself, so that it
    // is gone before ∂x (x-sized) exists. Otherwise ∂x first, so that a large ∂w (a patch
    // embedding's) is not alive during ∂x's temporaries.
    let weight_first = xd.as_ref().is_some_and(|x| x.half().is_some()) && x.numel() >= w.numel();
    let backward = move |g: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let weight_grad = || -> Result<Option<Tensor>> {
            match &xd {
                Some(xd) => Ok(Some(backward_weight_raw(g, &xd.value(op)?, &plan)?)),
                None => Ok(None),
            }
        };
        let input_grad = || -> Result<Option<Tensor>> {
            match &wd {
                Some(wd) => Ok(Some(backward_input_raw(g, wd, &plan)?)),
                None => Ok(None),
            }
        };
        let (gx, gw) = if weight_first {
            let gw = weight_grad()?;
            (input_grad()?, gw)
        } else {
            (input_grad()?, weight_grad()?)
        };
        Ok(vec![gx, gw])
    };
    Ok(match bias {
        None => record(y, op, &[x, w], backward),
        Some(b) => {
            let need_b = b.requires_grad();
            let cout = geo.out[4];
            record(y, op, &[x, w, b], move |g| {
                let mut grads = backward(g)?;
                grads.push(if need_b {
                    Some(sum_to_shape(g, &[cout])?)
                } else {
                    None
                });
                Ok(grads)
            })
        }
    })
}

/// 2D convolution through the 3D kernels with D = 1.
/// x `[N, H, W, Cin]`, w `[kH, kW, Cin/groups, Cout]`, bias `[Cout]` → `[N, Ho, Wo, Cout]`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv2dConfig) -> Result<Tensor> {
    let op = "conv2d";
    if x.rank() != 4 {
        return Err(Error::shape(
            op,
            "input of rank 4 [N, H, W, Cin]",
            x.shape(),
        ));
    }
    if w.rank() != 4 {
        return Err(Error::shape(
            op,
            "weight of rank 4 [kH, kW, Cin/groups, Cout]",
            w.shape(),
        ));
    }
    let (xs, wsh) = (x.shape(), w.shape());
    // [N, H, W, C] → [N, 1, H, W, C]; [kH, kW, Cin_g, Cout] → [1, kH, kW, Cin_g, Cout].
    let x5 = x.reshape(&[xs[0], 1, xs[1], xs[2], xs[3]])?;
    let w5 = w.reshape(&[1, wsh[0], wsh[1], wsh[2], wsh[3]])?;
    let y = conv3d(&x5, &w5, bias, &cfg.to_3d())?;
    let ys = y.shape().to_vec();
    // [N, 1, Ho, Wo, Cout] → [N, Ho, Wo, Cout].
    y.reshape(&[ys[0], ys[2], ys[3], ys[4]])
}

/// dL/dx of [`conv3d`] for an upstream gradient `g`, unrecorded (benchmarks, custom backward),
/// on the kernel family [`conv3d`] takes.
pub fn conv3d_backward_input(
    g: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    cfg: &Conv3dConfig,
) -> Result<Tensor> {
    let geo = Geometry::new("conv3d_backward_input", x_shape, w.shape(), cfg)?;
    if g.shape() != geo.out {
        return Err(Error::shape("conv3d_backward_input", geo.out, g.shape()));
    }
    backward_input_raw(g, w, &ConvPlan::new(geo, ConvPath::chosen(g.gpu())?)?)
}

/// dL/dw of [`conv3d`] for an upstream gradient `g`, unrecorded, on the kernel family [`conv3d`]
/// takes.
pub fn conv3d_backward_weight(
    g: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    cfg: &Conv3dConfig,
) -> Result<Tensor> {
    let geo = Geometry::new("conv3d_backward_weight", x.shape(), w_shape, cfg)?;
    if g.shape() != geo.out {
        return Err(Error::shape("conv3d_backward_weight", geo.out, g.shape()));
    }
    backward_weight_raw(g, x, &ConvPlan::new(geo, ConvPath::chosen(g.gpu())?)?)
}

#[cfg(test)]
mod tests {
    use super::{flipped_weight, Conv3dConfig, Geometry};
    use crate::tensor::Tensor;
    use crate::util::Rng;

    /// wf[kD−1−kd, kH−1−kh, kW−1−kw, col, grp·cin_g + cil] = w[kd, kh, kw, cil, grp·cout_g + col]
    /// by index arithmetic, against both flip kernels (4 × 4 blocks where both channel counts
    /// per group are multiples of 4, one value per lane elsewhere), with groups, per-axis kernel
    /// sizes and more than 64 vec4 channel groups (a second workgroup along x).
    #[test]
    fn both_flip_kernels_transpose_and_flip_the_weight() {
        let gpu = crate::gpu::unit_test_gpu();
        let mut rng = Rng::new(0xf11b);
        for (cin, cout, groups, kernel, entry) in [
            (8, 12, 1, [3, 2, 3], "conv3d_flip_weight4"),
            (16, 24, 2, [2, 3, 1], "conv3d_flip_weight4"),
            (12, 264, 1, [1, 2, 2], "conv3d_flip_weight4"),
            (6, 8, 2, [3, 3, 3], "conv3d_flip_weight"),
            (8, 6, 1, [2, 2, 2], "conv3d_flip_weight"),
            (8, 8, 8, [3, 3, 3], "conv3d_flip_weight"),
        ] {
            let cfg = Conv3dConfig::new(kernel).groups(groups);
            let (cin_g, cout_g) = (cin / groups, cout / groups);
            let w_shape = [kernel[0], kernel[1], kernel[2], cin_g, cout];
            let geo = Geometry::new("test", &[1, 4, 4, 4, cin], &w_shape, &cfg).unwrap();
            let w = rng.vec_uniform(w_shape.iter().product(), -1.0, 1.0);
            let tw = Tensor::from_slice(&gpu, &w, &w_shape).unwrap();
            gpu.set_profiling(true);
            let got = flipped_weight(&tw, &geo).unwrap().to_vec().unwrap();
            gpu.set_profiling(false);
            let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
            assert_eq!(ran, [format!("conv3d_backward_input::{entry}")]);
            let [kd, kh, kw] = kernel;
            let mut want = vec![f32::NAN; w.len()];
            for d in 0..kd {
                for h in 0..kh {
                    for x in 0..kw {
                        let tap = (d * kh + h) * kw + x;
                        let flipped = ((kd - 1 - d) * kh + (kh - 1 - h)) * kw + (kw - 1 - x);
                        for cil in 0..cin_g {
                            for co in 0..cout {
                                let (grp, col) = (co / cout_g, co % cout_g);
                                want[(flipped * cout_g + col) * cin + grp * cin_g + cil] =
                                    w[(tap * cin_g + cil) * cout + co];
                            }
                        }
                    }
                }
            }
            assert_eq!(
                got, want,
                "{cin} → {cout}, groups {groups}, kernel {kernel:?}"
            );
        }
    }
}
