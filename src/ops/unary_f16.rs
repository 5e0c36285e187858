//! Unary ops on f16 storage, for mixed precision: `op(x)` of an f16 tensor as f16, and the
//! backward `g · op'(x)` reading an f16 `x` (the activation an op kept in f16 for backward, see
//! src/tensor/saved.rs) with an f32 `g` and result. The math is the f32 ops' own
//! (shaders/unary_math.wgsl): x is widened exactly, and only the forward's result is rounded.
//!
//! Why: the kept f16 copy is read as it is, so a backward under autocast makes no f32 widening
//! of it (a full activation of f32 temporaries per activation function), and the MLP tail
//! (src/ops/gelu_linear_mixed.rs) can make GELU's f16 output from the f16 input alone.
//!
//! Kernels: shaders/unary_f16.wgsl (needs `SHADER_F16`). Without it, the same values from the
//! f32 kernels between exact widenings (and one rounding, shaders/cast.wgsl). Reference:
//! [`crate::reference::elementwise`] on the widened values.

use super::config::UnaryOp;
use super::elementwise::{unary_backward_raw, unary_raw, UnaryParams};
use crate::error::{Error, Result};
use crate::gpu::{scalar_or_vec4, KernelSpec};
use crate::tensor::{cast_unrecorded, DType, Tensor};

const SOURCE: &str = concat!(
    include_str!("../../shaders/unary_f16.wgsl"),
    include_str!("../../shaders/unary_math.wgsl")
);

const fn spec(entry: &'static str, inputs: u32) -> KernelSpec {
    KernelSpec {
        shader: "unary_f16",
        source: SOURCE,
        entry,
        inputs,
        outputs: 1,
        params: UnaryParams::LAYOUT,
        constants: &[],
    }
}

const FORWARD: KernelSpec = spec("unary_x16", 1);
const FORWARD4: KernelSpec = spec("unary_x16_4", 1);
const BACKWARD: KernelSpec = spec("unary_backward_x16", 2);
const BACKWARD4: KernelSpec = spec("unary_backward_x16_4", 2);

const FORWARD_IN_PLACE: KernelSpec = KernelSpec {
    inputs: 0,
    ..spec("unary_x16_in_place", 1)
};
const FORWARD_IN_PLACE4: KernelSpec = KernelSpec {
    inputs: 0,
    ..spec("unary_x16_in_place4", 1)
};
const BACKWARD_IN_PLACE: KernelSpec = spec("unary_backward_x16_in_place", 1);
const BACKWARD_IN_PLACE4: KernelSpec = spec("unary_backward_x16_in_place4", 1);

pub(crate) const KERNELS: &[KernelSpec] = &[
    FORWARD,
    FORWARD4,
    FORWARD_IN_PLACE,
    FORWARD_IN_PLACE4,
    BACKWARD,
    BACKWARD4,
    BACKWARD_IN_PLACE,
    BACKWARD_IN_PLACE4,
];

/// `op(x)` of an f16 tensor, rounded to f16; unrecorded.
pub(crate) fn unary_half_raw(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let name = "unary (f16)";
    x.expect_dtype(name, DType::F16)?;
    let gpu = x.gpu();
    if !gpu.features().f16 {
        let y = unary_raw(op, &cast_unrecorded(name, x, DType::F32)?)?;
        return cast_unrecorded(name, &y, DType::F16);
    }
    let n = x.numel();
    let out = Tensor::uninit_dtype(gpu, name, x.shape(), DType::F16)?;
    if n == 0 {
        return Ok(out);
    }
    let (spec, grid) = scalar_or_vec4(&FORWARD, &FORWARD4, n, n.is_multiple_of(4));
    gpu.dispatch_f16_aware(
        spec,
        &UnaryParams::of(op, n),
        &[x.buffer()],
        &[out.buffer()],
        grid,
    )?;
    Ok(out)
}

/// [`unary_half_raw`] written over `x`, which the caller owns and gives up. Without
/// `SHADER_F16`, the same values into a new tensor.
pub(crate) fn unary_half_in_place(op: UnaryOp, x: Tensor) -> Result<Tensor> {
    let name = "unary (f16, in place)";
    x.expect_dtype(name, DType::F16)?;
    let gpu = x.gpu();
    if !gpu.features().f16 {
        return unary_half_raw(op, &x);
    }
    let n = x.numel();
    if n == 0 {
        return Ok(x);
    }
    let (spec, grid) = scalar_or_vec4(
        &FORWARD_IN_PLACE,
        &FORWARD_IN_PLACE4,
        n,
        n.is_multiple_of(4),
    );
    gpu.dispatch_f16_aware(spec, &UnaryParams::of(op, n), &[], &[x.buffer()], grid)?;
    Ok(x)
}

/// `g · op'(x)` for an f16 `x` and an f32 `g` of its shape, as f32; unrecorded.
pub(crate) fn unary_backward_half_raw(op: UnaryOp, x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let name = "unary backward (f16 input)";
    x.expect_dtype(name, DType::F16)?;
    g.expect_dtype(name, DType::F32)?;
    x.check_same_gpu(name, g)?;
    if g.shape() != x.shape() {
        return Err(Error::shape(name, x.shape(), g.shape()));
    }
    let gpu = x.gpu();
    if !gpu.features().f16 {
        return unary_backward_raw(op, &cast_unrecorded(name, x, DType::F32)?, g);
    }
    let n = x.numel();
    let out = Tensor::uninit(gpu, name, x.shape())?;
    if n == 0 {
        return Ok(out);
    }
    let (spec, grid) = scalar_or_vec4(&BACKWARD, &BACKWARD4, n, n.is_multiple_of(4));
    gpu.dispatch_f16_aware(
        spec,
        &UnaryParams::of(op, n),
        &[x.buffer(), g.buffer()],
        &[out.buffer()],
        grid,
    )?;
    Ok(out)
}

/// [`unary_backward_half_raw`] written over `g`, which the caller owns and gives up (the MLP
/// tail's ∂a becomes ∂h without a second hidden-width f32 tensor). Without `SHADER_F16`, the
/// f32 kernels into a new tensor.
pub(crate) fn unary_backward_half_in_place(op: UnaryOp, x: &Tensor, g: Tensor) -> Result<Tensor> {
    let name = "unary backward (f16 input, in place)";
    x.expect_dtype(name, DType::F16)?;
    g.expect_dtype(name, DType::F32)?;
    x.check_same_gpu(name, &g)?;
    if g.shape() != x.shape() {
        return Err(Error::shape(name, x.shape(), g.shape()));
    }
    let gpu = x.gpu();
    if !gpu.features().f16 {
        return unary_backward_raw(op, &cast_unrecorded(name, x, DType::F32)?, &g);
    }
    let n = x.numel();
    if n == 0 {
        return Ok(g);
    }
    let (spec, grid) = scalar_or_vec4(
        &BACKWARD_IN_PLACE,
        &BACKWARD_IN_PLACE4,
        n,
        n.is_multiple_of(4),
    );
    gpu.dispatch_f16_aware(
        spec,
        &UnaryParams::of(op, n),
        &[x.buffer()],
        &[g.buffer()],
        grid,
    )?;
    Ok(g)
}
