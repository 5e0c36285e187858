//! The PVTv2 MLP (SegFormer's Mix-FFN) under mixed precision as one recorded op, its hidden
//! activations and their gradients in f16:
//!
//!   forward:  x16 = f16(x);  h1 = f16(x16 · f16(W1) + b1);  h2 = f16(DWConv(h1) + bd);
//!             a = f16(GELU(h2));  y = a · f16(W2) + b2                (f32 sums, f32 y)
//!   backward: h2 and a made again from h1;  g16 = f16(∂L/∂y);  ∂W2 = aᵀ g16;  ∂b2 = Σ_rows g;
//!             ∂h2 = f16((g16 · f16(W2)ᵀ) ⊙ GELU'(h2));  ∂Wd = Σ h1 ⋆ ∂h2;  ∂bd = Σ_rows ∂h2;
//!             ∂h1 = f16(DWConvᵀ(∂h2));  ∂x = ∂h1 · f16(W1)ᵀ;  ∂W1 = x16ᵀ ∂h1;  ∂b1 = Σ_rows ∂h1
//!
//! with DWConv the depthwise 3³ convolution (stride 1, padding 1) over the token grid. The hidden
//! width is the block's widest (mlp ratio 8 in stages 1 and 2). As separate ops under autocast the
//! tape keeps two f16 hidden-width tensors (the conv's input and GELU's input) and each backward
//! node makes f32 hidden-width gradients, two of them alive at once in the conv's backward. Here
//! the op keeps x16 and h1 (h2 is one depthwise conv away: made again in backward, as PyTorch's
//! selective activation checkpointing would), and the hidden-width gradients are f16 inside the
//! op (as PyTorch's AMP makes them for its f16 activations): at most two f16 hidden-width
//! tensors beside the kept h1 at any time. The weights are the f32 master weights, the parameter
//! gradients f32. What differs from the f32 path in value: the depthwise conv reads h1 rounded
//! to f16 (PyTorch's AMP does the same), and the two hidden gradients are rounded to f16 (their
//! magnitude is the loss scaler's business, `optim::LossScaler`).
//!
//! Kernels: the f16 matmuls (src/ops/matmul_f16.rs), shaders/conv3d_depthwise_rows.wgsl's `_x16`
//! entries, shaders/linear_unary_backward_x16.wgsl, shaders/unary_f16.wgsl and the f16 column
//! sums of shaders/reduce.wgsl. Needs `SHADER_F16` (the mixed-precision condition). Reference:
//! src/reference/dw_mlp.rs.

use super::conv3d::{flipped_weight, Conv3dConfig, Geometry};
use super::conv3d_depthwise_rows::{backward_weight_half, fits, forward_half, HalfShape};
use super::linear_unary_backward_x16::linear_unary_backward_half_in_place;
use super::matmul::{linear_dims, linear_grads, LinearDims};
use super::matmul_f16::{matmul_f16_launch, matmul_f16_launch_biased, MatmulF16Kernel};
use super::reduce::sum_rows_half;
use super::unary_f16::unary_half_in_place;
use super::UnaryOp;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::tensor::{cast_unrecorded, half_rounding, DType, Tensor};

/// One linear layer's parameters: weight `[in, out]` and optional bias `[out]`, f32.
pub type LinearParams<'a> = (&'a Tensor, Option<&'a Tensor>);

/// The depthwise conv's parameters: weight `[3, 3, 3, 1, hidden]` and optional bias `[hidden]`.
pub type DepthwiseParams<'a> = (&'a Tensor, Option<&'a Tensor>);

/// Whether [`dw_mlp_mixed`] takes a hidden width `hidden` and `out` output channels: the hidden
/// width in fours (the f16 kernels' vec4 groups) and an even output width (the fused backward
/// reads the upstream gradient in f16 pairs).
pub fn dw_mlp_mixed_fits(hidden: usize, out: usize) -> bool {
    hidden > 0 && hidden.is_multiple_of(4) && out > 0 && out.is_multiple_of(2)
}

/// fc2(GELU(DWConv(fc1(x)))) of tokens `x` `[N, L, C]` f32 over the grid `[D, H, W]`
/// (L = D·H·W) in mixed precision (see the module docs); output `[N, L, Cout]` f32. Errors
/// name the op: shapes that do not chain, a hidden width not in fours or an odd output width
/// ([`dw_mlp_mixed_fits`]), non-f32 parameters, another device, or a device without
/// `SHADER_F16`.
pub fn dw_mlp_mixed(
    x: &Tensor,
    grid: [usize; 3],
    fc1: LinearParams<'_>,
    dwconv: DepthwiseParams<'_>,
    fc2: LinearParams<'_>,
) -> Result<Tensor> {
    let op = "dw_mlp_mixed";
    let plan = Plan::new(op, x, grid, fc1, dwconv, fc2)?;
    let gpu = x.gpu();
    let kernel = MatmulF16Kernel::chosen(gpu)?;
    let (rows, hidden, cout) = (plan.rows, plan.hidden, plan.cout);

    let x16 = half_rounding(op, x)?.reshape(&[rows, plan.cin])?;
    let h1 = {
        let w16 = cast_unrecorded(op, fc1.0, DType::F16)?;
        let h = matmul_f16_launch_biased(&x16, &w16, false, false, kernel, fc1.1)?;
        cast_unrecorded(op, &h, DType::F16)?
    };
    let a = unary_half_in_place(
        UnaryOp::Gelu,
        depthwise(op, &h1, dwconv.0, dwconv.1, &plan.geo, plan.shape)?,
    )?;
    let y = {
        let w16 = cast_unrecorded(op, fc2.0, DType::F16)?;
        matmul_f16_launch_biased(&a, &w16, false, false, kernel, fc2.1)?
    };
    drop(a);
    let y = y.reshape(&plan.out_shape)?;

    let weights = [fc1.0.detach(), dwconv.0.detach(), fc2.0.detach()];
    let biases = [fc1.1, dwconv.1, fc2.1].map(|b| b.map(|b| b.requires_grad()));
    let mut inputs = vec![x, fc1.0];
    inputs.extend(fc1.1);
    inputs.push(dwconv.0);
    inputs.extend(dwconv.1);
    inputs.push(fc2.0);
    inputs.extend(fc2.1);
    let (x_shape, geo, dw_bias) = (x.shape().to_vec(), plan.geo, dwconv.1.map(|b| b.detach()));
    let shape = plan.shape;
    Ok(record(y, op, &inputs, move |g| {
        let back = "dw_mlp_mixed backward";
        let [w1, wd, w2] = weights;
        let g_rows = g.reshape(&[rows, cout])?;
        let g16 = cast_unrecorded(back, &g_rows, DType::F16)?;
        // One f16 hidden-width tensor beside the kept h1 at a time: GELU's output is made over a
        // fresh h2 for ∂W2 (∂b2 is Σ g, linear_grads), then h2 once more and ∂h2 over it.
        let h2 = || depthwise(back, &h1, &wd, dw_bias.as_ref(), &geo, shape);
        let gw2 = {
            let a = unary_half_in_place(UnaryOp::Gelu, h2()?)?;
            matmul_f16_launch(&a, &g16, true, false, kernel)?
        };
        let gh2 = linear_unary_backward_half_in_place(UnaryOp::Gelu, &g16, &w2, h2()?)?;
        drop(g16);
        // The depthwise conv: ∂Wd (the last read of h1, freed before ∂h1 is made) and ∂bd, then
        // ∂h1 = the conv of ∂h2 with the flipped kernel (stride 1, padding 1 = k − 1 − p: the
        // same geometry).
        let gwd = Tensor::uninit(h1.gpu(), back, wd.shape())?;
        backward_weight_half(&gh2, &h1, &gwd, &geo, shape)?;
        drop(h1);
        let gbd = bias_grad(biases[1], &gh2, rows, hidden)?;
        let gh1 = depthwise(back, &gh2, &flipped_weight(&wd, &geo)?, None, &geo, shape)?;
        drop(gh2);
        // fc1.
        let w16 = cast_unrecorded(back, &w1, DType::F16)?;
        let gx = matmul_f16_launch(&gh1, &w16, false, true, kernel)?.reshape(&x_shape)?;
        drop(w16);
        let gw1 = matmul_f16_launch(&x16, &gh1, true, false, kernel)?;
        let gb1 = bias_grad(biases[0], &gh1, rows, hidden)?;
        drop(gh1);
        let mut grads = vec![Some(gx), Some(gw1)];
        if biases[0].is_some() {
            grads.push(gb1);
        }
        grads.push(Some(gwd));
        if biases[1].is_some() {
            grads.push(gbd);
        }
        grads.extend(
            linear_grads(None, Some(gw2), biases[2], &g_rows)?
                .into_iter()
                .skip(1),
        );
        Ok(grads)
    }))
}

/// The depthwise conv of an f16 `[rows, hidden]` activation over `geo`, as f16.
fn depthwise(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    geo: &Geometry,
    shape: HalfShape,
) -> Result<Tensor> {
    let y = Tensor::uninit_dtype(x.gpu(), op, x.shape(), DType::F16)?;
    forward_half(x, w, bias, &y, geo, shape)?;
    Ok(y)
}

/// Σ_rows of an f16 `[rows, hidden]` gradient when the bias exists and wants it.
fn bias_grad(
    wanted: Option<bool>,
    g: &Tensor,
    rows: usize,
    hidden: usize,
) -> Result<Option<Tensor>> {
    match wanted {
        Some(true) => Ok(Some(sum_rows_half(g, rows, hidden)?)),
        _ => Ok(None),
    }
}

/// The checked extents of one call.
struct Plan {
    rows: usize,
    cin: usize,
    hidden: usize,
    cout: usize,
    out_shape: Vec<usize>,
    geo: Geometry,
    /// The f16 depthwise kernels' workgroup shape on this adapter.
    shape: HalfShape,
}

impl Plan {
    fn new(
        op: &'static str,
        x: &Tensor,
        grid: [usize; 3],
        fc1: LinearParams<'_>,
        dwconv: DepthwiseParams<'_>,
        fc2: LinearParams<'_>,
    ) -> Result<Plan> {
        x.expect_dtype(op, DType::F32)?;
        let &[n, l, _] = x.shape() else {
            return Err(Error::shape(op, "tokens [N, L, C]", x.shape()));
        };
        // Checked: a grid from input must not wrap around to L.
        let cells = grid.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if cells != Some(l) {
            return Err(Error::invalid(
                op,
                format!("a grid [D, H, W] of L = {l} tokens"),
                format!("{grid:?}"),
            ));
        }
        let LinearDims {
            rows,
            cin,
            cout: hidden,
            ..
        } = linear_dims(op, "x", x, fc1.0, fc1.1)?;
        if fc2.0.rank() != 2 || fc2.0.shape()[0] != hidden {
            return Err(Error::shape(
                op,
                format!("fc2 weight [{hidden}, Cout]"),
                fc2.0.shape(),
            ));
        }
        let cout = fc2.0.shape()[1];
        check_param(op, x, fc2.0, fc2.1, cout)?;
        if !dw_mlp_mixed_fits(hidden, cout) {
            return Err(Error::invalid(
                op,
                "a hidden width in fours and an even output width",
                format!("hidden {hidden}, out {cout}"),
            ));
        }
        let (wd, bd) = dwconv;
        check_param(op, x, wd, bd, hidden)?;
        let cfg = Conv3dConfig::cube(3, 1, 1).groups(hidden);
        let geo = Geometry::new(
            op,
            &[n, grid[0], grid[1], grid[2], hidden],
            wd.shape(),
            &cfg,
        )?;
        if !fits(&geo) {
            return Err(Error::invalid(
                op,
                "a depthwise 3³ conv",
                format!("{cfg:?}"),
            ));
        }
        if !x.gpu().features().f16 {
            return Err(Error::invalid(op, "a device with SHADER_F16", "none"));
        }
        Ok(Plan {
            shape: HalfShape::for_adapter(x.gpu())?,
            rows,
            cin,
            hidden,
            cout,
            out_shape: vec![n, l, cout],
            geo,
        })
    }
}

/// A layer's weight and optional bias: f32, on x's device, the bias `[len]`.
fn check_param(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    len: usize,
) -> Result<()> {
    for t in std::iter::once(w).chain(bias) {
        x.check_same_gpu(op, t)?;
        t.expect_dtype(op, DType::F32)?;
    }
    match bias {
        Some(b) if b.shape() != [len] => Err(Error::shape(op, [len], b.shape())),
        _ => Ok(()),
    }
}
