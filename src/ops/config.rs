//! Plain op configs: the geometry and mode settings of the ops, with their own validation and
//! output-extent rules, and nothing that touches a device. They live in one place because they
//! are ALL that `reference/` may import from `ops` (the oracle shares no code with the kernels it
//! checks); `tests/layers.rs` enforces that. Each op module re-exports its own config.

use crate::error::{Error, Result};

/// Kernel size, stride, padding (both sides) and dilation per axis (D, H, W), and groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dConfig {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub dilation: [usize; 3],
    pub groups: usize,
}

impl Conv3dConfig {
    /// Kernel `kernel`, stride 1, no padding, dilation 1, one group.
    pub fn new(kernel: [usize; 3]) -> Self {
        Conv3dConfig {
            kernel,
            stride: [1; 3],
            padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
    /// A cubic kernel `k` with stride `s` and padding `p` on every axis.
    pub fn cube(k: usize, s: usize, p: usize) -> Self {
        Conv3dConfig {
            kernel: [k; 3],
            stride: [s; 3],
            padding: [p; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
    pub fn stride(mut self, s: [usize; 3]) -> Self {
        self.stride = s;
        self
    }
    pub fn padding(mut self, p: [usize; 3]) -> Self {
        self.padding = p;
        self
    }
    pub fn dilation(mut self, d: [usize; 3]) -> Self {
        self.dilation = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// 2D convolution settings (H, W); runs through the 3D kernels with D = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dConfig {
    pub fn new(kernel: [usize; 2]) -> Self {
        Conv2dConfig {
            kernel,
            stride: [1; 2],
            padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
    pub fn square(k: usize, s: usize, p: usize) -> Self {
        Conv2dConfig {
            kernel: [k; 2],
            stride: [s; 2],
            padding: [p; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
    /// The equivalent 3D config with a depth-1 kernel.
    pub fn to_3d(&self) -> Conv3dConfig {
        Conv3dConfig {
            kernel: [1, self.kernel[0], self.kernel[1]],
            stride: [1, self.stride[0], self.stride[1]],
            padding: [0, self.padding[0], self.padding[1]],
            dilation: [1, self.dilation[0], self.dilation[1]],
            groups: self.groups,
        }
    }
}

/// Geometry of a transposed convolution, per axis (D, H, W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose3dConfig {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub output_padding: [usize; 3],
    pub dilation: [usize; 3],
}

impl ConvTranspose3dConfig {
    /// Kernel 2, stride 2: doubles every spatial extent.
    pub fn up2() -> Self {
        ConvTranspose3dConfig {
            kernel: [2; 3],
            stride: [2; 3],
            padding: [0; 3],
            output_padding: [0; 3],
            dilation: [1; 3],
        }
    }

    /// `(D − 1)·s − 2p + dil·(k − 1) + output_padding + 1` per axis, validated.
    pub fn output_dims(&self, op: &'static str, dhw: [usize; 3]) -> Result<[usize; 3]> {
        let mut out = [0; 3];
        for a in 0..3 {
            let (k, s, p, op_, d) = (
                self.kernel[a],
                self.stride[a],
                self.padding[a],
                self.output_padding[a],
                self.dilation[a],
            );
            if k == 0 || s == 0 || d == 0 {
                return Err(Error::invalid(
                    op,
                    "kernel, stride and dilation >= 1",
                    format!("{self:?}"),
                ));
            }
            if op_ >= s && op_ >= d {
                return Err(Error::invalid(
                    op,
                    "output_padding < stride or < dilation",
                    format!("{self:?}"),
                ));
            }
            if dhw[a] == 0 {
                return Err(Error::invalid(
                    op,
                    "a non-empty input",
                    format!("input {dhw:?} with {self:?}"),
                ));
            }
            check_conv_fits_u32(
                op,
                &[
                    &self.kernel,
                    &self.stride,
                    &self.padding,
                    &self.dilation,
                    &dhw,
                ],
            )?;
            // (D − 1)·s + dil·(k − 1) + output_padding + 1, every step checked (no wrapping).
            let full = (dhw[a] - 1)
                .checked_mul(s)
                .and_then(|v| v.checked_add(dilated_span(op, k, d).ok()?))
                .and_then(|v| v.checked_add(op_))
                .filter(|&v| v <= MAX_EXTENT)
                .ok_or_else(|| {
                    Error::invalid(
                        op,
                        format!("an output extent of at most {MAX_EXTENT}"),
                        format!("input {dhw:?} with {self:?} (overflows)"),
                    )
                })?;
            if full <= 2 * p {
                return Err(Error::invalid(
                    op,
                    "a non-empty output",
                    format!("input {dhw:?} with {self:?}"),
                ));
            }
            out[a] = full - 2 * p;
        }
        Ok(out)
    }

    pub(crate) fn is_up2(&self) -> bool {
        *self == Self::up2()
    }

    /// Kernel = stride with no padding, output padding or dilation: the kernel's footprints
    /// tile the output, one block per input voxel, without overlap.
    pub(crate) fn tiles_without_overlap(&self) -> bool {
        self.kernel == self.stride
            && self.padding == [0; 3]
            && self.output_padding == [0; 3]
            && self.dilation == [1; 3]
    }
}

/// The largest extent, kernel, stride, padding or dilation a conv or pool kernel takes: the
/// shaders index with 32-bit signed arithmetic (`o·s − p + k·dil`), so every operand stays
/// below 2^31 − 1. Sums of two such values then fit in usize on every target cads supports.
pub const MAX_EXTENT: usize = i32::MAX as usize;

/// Typed error unless every value of every array is at most [`MAX_EXTENT`].
pub fn check_conv_fits_u32(op: &'static str, arrays: &[&[usize]]) -> Result<()> {
    if let Some(v) = arrays
        .iter()
        .flat_map(|a| a.iter())
        .find(|&&v| v > MAX_EXTENT)
    {
        return Err(Error::invalid(
            op,
            format!("extents, kernel, stride, padding and dilation of at most {MAX_EXTENT}"),
            format!("{v} in {arrays:?}"),
        ));
    }
    Ok(())
}

/// `dil·(k − 1) + 1`, the extent a dilated kernel covers, checked (k ≥ 1).
pub fn dilated_span(op: &'static str, kernel: usize, dilation: usize) -> Result<usize> {
    dilation
        .checked_mul(kernel.saturating_sub(1))
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| {
            Error::invalid(
                op,
                "a dilated kernel extent that fits in usize",
                format!("kernel {kernel}, dilation {dilation}"),
            )
        })
}

/// `x + 2·padding`, checked.
pub fn padded_extent(op: &'static str, x: usize, padding: usize) -> Result<usize> {
    padding
        .checked_mul(2)
        .and_then(|p2| x.checked_add(p2))
        .ok_or_else(|| {
            Error::invalid(
                op,
                "a padded extent that fits in usize",
                format!("input {x} + 2 × padding {padding}"),
            )
        })
}

/// Window geometry, per axis (D, H, W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool3dConfig {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    /// Average pooling only: divide by the full window (PyTorch's default) instead of the number
    /// of in-bounds positions.
    pub count_include_pad: bool,
}

impl Pool3dConfig {
    /// Kernel `k`, stride `k`, no padding (the usual down-sampling pool).
    pub fn cube(k: usize) -> Self {
        Pool3dConfig {
            kernel: [k; 3],
            stride: [k; 3],
            padding: [0; 3],
            count_include_pad: true,
        }
    }

    /// Output extents for input extents `dhw`, with the validation the kernels rely on.
    pub fn output_dims(&self, op: &'static str, dhw: [usize; 3]) -> Result<[usize; 3]> {
        let mut out = [0; 3];
        for a in 0..3 {
            let (k, s, p) = (self.kernel[a], self.stride[a], self.padding[a]);
            if k == 0 || s == 0 {
                return Err(Error::invalid(
                    op,
                    "kernel and stride >= 1",
                    format!("kernel {:?}, stride {:?}", self.kernel, self.stride),
                ));
            }
            if p * 2 > k {
                return Err(Error::invalid(
                    op,
                    "padding <= kernel / 2",
                    format!("padding {:?}, kernel {:?}", self.padding, self.kernel),
                ));
            }
            check_conv_fits_u32(op, &[&self.kernel, &self.stride, &self.padding, &dhw])?;
            if dhw[a] + 2 * p < k {
                return Err(Error::invalid(
                    op,
                    format!("padded input >= kernel on axis {a}"),
                    format!(
                        "input {:?}, padding {:?}, kernel {:?}",
                        dhw, self.padding, self.kernel
                    ),
                ));
            }
            out[a] = (dhw[a] + 2 * p - k) / s + 1;
        }
        Ok(out)
    }
}

/// Interpolation mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResampleMode {
    /// PyTorch 'nearest': source index floor(o · in/out).
    Nearest,
    /// Linear along each axis (trilinear in 3D, bilinear in 2D).
    Linear { align_corners: bool },
}

/// Binary operators of the `binary` kernel (codes match the shader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Max = 4,
    Min = 5,
    /// 1.0 where a >= b else 0.0 (not differentiable; gradient zero)
    Ge = 6,
    Lt = 7,
    Le = 8,
    Gt = 9,
}

/// Unary maps of the `unary` kernel (codes match the shader). `alpha` parameterises some.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Square,
    Relu,
    /// Slope for x < 0.
    LeakyRelu(f32),
    /// x·Φ(x), the exact (erf) form.
    Gelu,
    AddScalar(f32),
    MulScalar(f32),
    Tanh,
    Sigmoid,
    Reciprocal,
    Abs,
    /// x^p for x > 0.
    Pow(f32),
}

impl UnaryOp {
    /// One of each op, parameterised ones with a representative parameter (the tests and
    /// `cads check` walk this list).
    pub const SAMPLES: [UnaryOp; 15] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Square,
        UnaryOp::Relu,
        UnaryOp::LeakyRelu(0.01),
        UnaryOp::Gelu,
        UnaryOp::AddScalar(0.3),
        UnaryOp::MulScalar(-1.7),
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Reciprocal,
        UnaryOp::Abs,
        UnaryOp::Pow(1.5),
    ];

    /// Whether the op is defined only for positive inputs (log, sqrt, reciprocal, pow).
    pub fn needs_positive_input(self) -> bool {
        matches!(
            self,
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Reciprocal | UnaryOp::Pow(_)
        )
    }

    /// (shader op code, alpha)
    pub fn code(self) -> (u32, f32) {
        match self {
            UnaryOp::Neg => (0, 0.0),
            UnaryOp::Exp => (1, 0.0),
            UnaryOp::Log => (2, 0.0),
            UnaryOp::Sqrt => (3, 0.0),
            UnaryOp::Square => (4, 0.0),
            UnaryOp::Relu => (5, 0.0),
            UnaryOp::LeakyRelu(a) => (6, a),
            UnaryOp::Gelu => (7, 0.0),
            UnaryOp::AddScalar(a) => (8, a),
            UnaryOp::MulScalar(a) => (9, a),
            UnaryOp::Tanh => (10, 0.0),
            UnaryOp::Sigmoid => (11, 0.0),
            UnaryOp::Reciprocal => (12, 0.0),
            UnaryOp::Abs => (13, 0.0),
            UnaryOp::Pow(p) => (14, p),
        }
    }
    /// The op's name in errors, kernel checks and benchmarks (`"gelu"`, `"leaky_relu"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Square => "square",
            UnaryOp::Relu => "relu",
            UnaryOp::LeakyRelu(_) => "leaky_relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::AddScalar(_) => "add_scalar",
            UnaryOp::MulScalar(_) => "mul_scalar",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Reciprocal => "reciprocal",
            UnaryOp::Abs => "abs",
            UnaryOp::Pow(_) => "pow",
        }
    }
}
