//! What LayerNorm keeps for its backward.
//!
//! The backward reads x̂ = (x − μ)·rstd, so it needs x and the row statistics (μ, rstd). In f32
//! it keeps x itself: in a PVT block that is the residual stream, which nothing else keeps, so
//! each LayerNorm holds an f32 activation of the block's width. Under mixed precision (on a
//! device with `SHADER_F16`, recording for backward, from [`CENTRED_MIN_ROWS`] rows on) it keeps
//! the f16 rounding of the centred input x − μ instead, with the statistics (0, rstd): the
//! backward kernel then computes x̂ = ((x − μ) − 0)·rstd from it unchanged. Rounding after the
//! centring is what makes this sound: f16(x) would carry an error of 2⁻¹¹·|x|, which the mean
//! subtraction turns into an error of 2⁻¹¹·|x|/σ in x̂ (large where |μ| ≫ σ); f16(x − μ) errs by
//! 2⁻¹¹·|x − μ|, i.e. 2⁻¹¹ of x̂ itself, the precision of every other activation kept in f16.

use crate::error::Result;
use crate::ops::elementwise::{binary_raw, BinaryOp};
use crate::tensor::{cast_unrecorded, DType, Tensor};

/// Rows from which a LayerNorm under autocast keeps its centred input in f16 (as
/// `nn::MIXED_MIN_ROWS` for the linears: below it the extra passes cost more than they save).
pub(crate) const CENTRED_MIN_ROWS: usize = 256;

/// A LayerNorm's saved input: x and its statistics `[rows, 2]` = (μ, rstd), or f16(x − μ)
/// `[rows, cols]` and the same statistics (the backward reads (0, rstd) with it).
pub(crate) enum LayerNormKept {
    Input { x: Tensor, stats: Tensor },
    CentredHalf { xc16: Tensor, stats: Tensor },
}

impl LayerNormKept {
    /// What to keep of x (`[..., cols]`, `rows` rows) normalised with `stats`: the f16 centred
    /// input under autocast when recording, x itself otherwise.
    pub(crate) fn new(x: &Tensor, stats: Tensor, rows: usize, cols: usize) -> Result<Self> {
        let gpu = x.gpu();
        if !(gpu.mixed_precision() && gpu.grad_enabled() && rows >= CENTRED_MIN_ROWS) {
            return Ok(LayerNormKept::Input {
                x: x.detach(),
                stats,
            });
        }
        let op = "layer_norm (centred f16 input)";
        let mean = stats.slice(1, 0, 1)?;
        let centred = binary_raw(BinaryOp::Sub, &x.reshape(&[rows, cols])?, &mean)?;
        let xc16 = cast_unrecorded(op, &centred, DType::F16)?;
        Ok(LayerNormKept::CentredHalf { xc16, stats })
    }

    /// The backward's input and statistics (shape `shape`): x and (μ, rstd), or x − μ widened
    /// to f32 (exactly) and (0, rstd). (The zero column is a fill kernel, not an upload: an
    /// upload would submit the recorded launches first, once per norm.)
    pub(crate) fn input_and_stats(self, shape: &[usize]) -> Result<(Tensor, Tensor)> {
        match self {
            LayerNormKept::Input { x, stats } => Ok((x, stats)),
            LayerNormKept::CentredHalf { xc16, stats } => {
                let op = "layer_norm backward (centred f16 input)";
                let rows = stats.shape()[0];
                let zeros = Tensor::full(stats.gpu(), &[rows, 1], 0.0)?;
                let stats = Tensor::concat(&[&zeros, &stats.slice(1, 1, 1)?], 1)?;
                let xc = cast_unrecorded(op, &xc16, DType::F32)?.reshape(shape)?;
                Ok((xc, stats))
            }
        }
    }
}
