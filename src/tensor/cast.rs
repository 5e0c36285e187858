//! Element-type conversion (`Tensor::to_dtype`) and the sum of two f16 tensors, on the bit-exact
//! kernels of shaders/cast.wgsl (round to nearest even, overflow to ±inf, subnormals kept; no
//! `SHADER_F16` needed). CPU twin: src/reference/cast.rs.
//!
//! The cast lives in the tensor layer, not in `ops`, for the reason `arith.rs` does: the autograd
//! store sums the gradients of an f16 tensor used twice (`add_half_unrecorded`), and tensor +
//! autograd never import `ops`. The recorded op sits beside its kernels, like `permute`.
//!
//! Backward: `y = cast(x)` is the identity on values up to rounding, so dL/dx = cast(dL/dy) back
//! to x's type (straight through the rounding, as PyTorch's `.half()` / `.float()`); the gradient
//! of an f16 tensor is f16, of an f32 tensor f32. Nothing is saved for backward but the types.

use super::{DType, Tensor};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};

crate::gpu::shader_params! {
    /// Mirrors `CastParams` in shaders/cast.wgsl.
    struct CastParams {
        n: u32,
        _pad: [u32; 3],
    }
}

const SOURCE: &str = concat!(
    include_str!("../../shaders/cast.wgsl"),
    include_str!("../../shaders/f16_bits.wgsl")
);

const fn spec(entry: &'static str, inputs: u32) -> KernelSpec {
    KernelSpec {
        shader: "cast",
        source: SOURCE,
        entry,
        inputs,
        outputs: 1,
        params: CastParams::LAYOUT,
        constants: &[],
    }
}

pub(crate) const TO_F16: KernelSpec = spec("cast_f32_to_f16", 1);
pub(crate) const TO_F32: KernelSpec = spec("cast_f16_to_f32", 1);
/// The casts four elements per invocation (n % 4 == 0).
pub(crate) const TO_F16_X4: KernelSpec = spec("cast_f32_to_f16_4", 1);
pub(crate) const TO_F32_X4: KernelSpec = spec("cast_f16_to_f32_4", 1);
/// The casts eight elements per invocation (n % 8 == 0).
pub(crate) const TO_F16_X8: KernelSpec = spec("cast_f32_to_f16_8", 1);
pub(crate) const TO_F32_X8: KernelSpec = spec("cast_f16_to_f32_8", 1);
pub(crate) const ADD_F16: KernelSpec = spec("add_f16", 2);

/// The wider forms of one element-wise kernel: eight and four elements per invocation.
struct Wide<'a> {
    x8: &'a KernelSpec,
    x4: &'a KernelSpec,
}

/// Launch `spec` over the ⌈n/2⌉ words of an n-element f16 side, or its widest form that
/// divides n: n/8 invocations when n % 8 == 0, n/4 when n % 4 == 0.
fn launch(spec: &KernelSpec, wide: Option<Wide>, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let n = out.numel();
    if n == 0 {
        return Ok(());
    }
    let (spec, invocations) = match wide {
        Some(wide) if n.is_multiple_of(8) => (wide.x8, n / 8),
        Some(wide) if n.is_multiple_of(4) => (wide.x4, n / 4),
        _ => (spec, n.div_ceil(2)),
    };
    let buffers: Vec<&wgpu::Buffer> = inputs.iter().map(|t| t.buffer()).collect();
    out.gpu().dispatch_f16_aware(
        spec,
        &CastParams {
            n: n as u32,
            _pad: [0; 3],
        },
        &buffers,
        &[out.buffer()],
        Grid::cover(invocations as u64, 256),
    )
}

/// `x` as `dtype`, unrecorded (a new tensor even when the type is already `dtype`, so the result
/// never aliases a buffer the caller may overwrite).
pub(crate) fn cast_unrecorded(op: &'static str, x: &Tensor, dtype: DType) -> Result<Tensor> {
    let out = Tensor::uninit_dtype(x.gpu(), op, x.shape(), dtype)?;
    match (x.dtype(), dtype) {
        (DType::F32, DType::F16) => {
            let wide = Wide {
                x8: &TO_F16_X8,
                x4: &TO_F16_X4,
            };
            launch(&TO_F16, Some(wide), &[x], &out)?
        }
        (DType::F16, DType::F32) => {
            let wide = Wide {
                x8: &TO_F32_X8,
                x4: &TO_F32_X4,
            };
            launch(&TO_F32, Some(wide), &[x], &out)?
        }
        _ => out.assign(x)?,
    }
    Ok(out)
}

/// `a + b` for two f16 tensors of one shape, computed in f32 and rounded once, unrecorded (the
/// gradient store's sum for f16 tensors).
pub(crate) fn add_half_unrecorded(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.check_same_gpu(op, b)?;
    if a.shape() != b.shape() {
        return Err(Error::shape(op, a.shape(), b.shape()));
    }
    a.expect_dtype(op, DType::F16)?;
    b.expect_dtype(op, DType::F16)?;
    let out = Tensor::uninit_dtype(a.gpu(), op, a.shape(), DType::F16)?;
    launch(&ADD_F16, None, &[a, b], &out)?;
    Ok(out)
}

impl Tensor {
    /// This tensor as `dtype` (recorded; the gradient is cast back, see the module docs). The
    /// same tensor when it already is `dtype`. f32 → f16 rounds to nearest even, and values of
    /// magnitude ≥ 65520 become ±inf (mixed precision casts only matmul operands and the
    /// activations convs, activation functions and attention keep for backward, never norms'
    /// inputs or losses; an overflow there surfaces as a non-finite gradient, which loss
    /// scaling skips).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let from = self.dtype();
        let out = cast_unrecorded("to_dtype", self, dtype)?;
        Ok(record(out, "to_dtype", &[self], move |g| {
            Ok(vec![Some(cast_unrecorded("to_dtype backward", g, from)?)])
        }))
    }
}
