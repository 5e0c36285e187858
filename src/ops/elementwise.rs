//! Elementwise ops: broadcast binary arithmetic, unary maps (activations included), fill (which
//! forwards to the tensor layer's own kernel).
//! Kernels: shaders/elementwise.wgsl. Reference: src/reference/elementwise.rs.

use super::reduce::sum_to_shape;
use super::shape::{broadcast_shapes, broadcast_strides, collapse_broadcast, rank6, BroadcastAxis};
use super::unary_f16::unary_backward_half_raw;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{scalar_or_vec4, Gpu, Grid, KernelSpec};
use crate::tensor::{Saved, Tensor};

const SOURCE: &str = concat!(
    include_str!("../../shaders/elementwise.wgsl"),
    include_str!("../../shaders/unary_math.wgsl")
);

crate::gpu::shader_params! {
    /// Mirrors `BinaryParams` in shaders/elementwise.wgsl.
    struct BinaryParams {
        n: u32,
        op: u32,
        _pad0: [u32; 2],
        shape: [u32; 6],
        a_stride: [u32; 6],
        b_stride: [u32; 6],
        _pad1: [u32; 2],
    }
}

crate::gpu::shader_params! {
    /// Mirrors `UnaryParams` in shaders/unary_math.wgsl.
    pub(crate) struct UnaryParams {
        n: u32,
        op: u32,
        alpha: f32,
        _pad0: u32,
    }
}

const BINARY: KernelSpec = KernelSpec {
    shader: "elementwise",
    source: SOURCE,
    entry: "binary",
    inputs: 2,
    outputs: 1,
    params: BinaryParams::LAYOUT,
    constants: &[],
};
const BINARY_FLAT: KernelSpec = KernelSpec {
    entry: "binary_flat",
    ..BINARY
};
const BINARY_ROWS: KernelSpec = KernelSpec {
    entry: "binary_rows",
    ..BINARY
};
const BINARY_FLAT4: KernelSpec = KernelSpec {
    entry: "binary_flat4",
    ..BINARY
};
const BINARY_ROWS4: KernelSpec = KernelSpec {
    entry: "binary_rows4",
    ..BINARY
};
const UNARY: KernelSpec = KernelSpec {
    shader: "elementwise",
    source: SOURCE,
    entry: "unary",
    inputs: 1,
    outputs: 1,
    params: UnaryParams::LAYOUT,
    constants: &[],
};
const UNARY_BACKWARD: KernelSpec = KernelSpec {
    shader: "elementwise",
    source: SOURCE,
    entry: "unary_backward",
    inputs: 2,
    outputs: 1,
    params: UnaryParams::LAYOUT,
    constants: &[],
};

const UNARY4: KernelSpec = KernelSpec {
    entry: "unary4",
    ..UNARY
};
const UNARY_BACKWARD4: KernelSpec = KernelSpec {
    entry: "unary_backward4",
    ..UNARY_BACKWARD
};

const UNARY_BACKWARD_IN_PLACE: KernelSpec = KernelSpec {
    entry: "unary_backward_in_place",
    inputs: 1,
    ..UNARY_BACKWARD
};
const UNARY_BACKWARD_IN_PLACE4: KernelSpec = KernelSpec {
    entry: "unary_backward_in_place4",
    ..UNARY_BACKWARD_IN_PLACE
};

pub(crate) const KERNELS: &[KernelSpec] = &[
    BINARY,
    BINARY_FLAT,
    BINARY_ROWS,
    BINARY_FLAT4,
    BINARY_ROWS4,
    UNARY,
    UNARY_BACKWARD,
    UNARY4,
    UNARY_BACKWARD4,
    UNARY_BACKWARD_IN_PLACE,
    UNARY_BACKWARD_IN_PLACE4,
];

impl UnaryParams {
    /// The parameters of `op` over `n` elements (the f32 kernels' and the f16 ones').
    pub(crate) fn of(op: UnaryOp, n: usize) -> UnaryParams {
        let (code, alpha) = op.code();
        UnaryParams {
            n: n as u32,
            op: code,
            alpha,
            _pad0: 0,
        }
    }
}

pub use super::config::{BinaryOp, UnaryOp};

fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Max => "maximum",
        BinaryOp::Min => "minimum",
        BinaryOp::Ge => "ge",
        BinaryOp::Lt => "lt",
        BinaryOp::Le => "le",
        BinaryOp::Gt => "gt",
    }
}

/// Forward launch only (no recording): `op(a, b)` with broadcasting.
pub(crate) fn binary_raw(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let name = binary_name(op);
    a.check_same_gpu(name, b)?;
    let out_shape = broadcast_shapes(name, a.shape(), b.shape())?;
    let out = Tensor::uninit(a.gpu(), name, &out_shape)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    // The fewest axes that index the same elements: same-shape operands take the division-free
    // kernel, a bias or a per-sample factor the one-division kernel (shaders/elementwise.wgsl).
    let axes = collapse_broadcast(
        &out_shape,
        &broadcast_strides(a.shape(), &out_shape),
        &broadcast_strides(b.shape(), &out_shape),
    );
    let field = |f: fn(&BroadcastAxis) -> usize| axes.iter().map(f).collect::<Vec<_>>();
    let params = BinaryParams {
        n: n as u32,
        op: op as u32,
        _pad0: [0; 2],
        shape: rank6(name, &field(|x| x.extent), 1)?,
        a_stride: rank6(name, &field(|x| x.a_stride), 0)?,
        b_stride: rank6(name, &field(|x| x.b_stride), 0)?,
        _pad1: [0; 2],
    };
    let (spec, grid) = match axes.len() {
        0 | 1 => scalar_or_vec4(&BINARY_FLAT, &BINARY_FLAT4, n, runs_on_vec4(&axes)),
        2 => scalar_or_vec4(&BINARY_ROWS, &BINARY_ROWS4, n, runs_on_vec4(&axes)),
        _ => (&BINARY, Grid::cover(n as u64, 256)),
    };
    a.gpu().dispatch(
        spec,
        &params,
        &[a.buffer(), b.buffer()],
        &[out.buffer()],
        grid,
    )?;
    Ok(out)
}

/// Whether a broadcast collapsed to at most two axes can run four outputs per invocation: the
/// last axis a multiple of 4 long, and each operand along it either contiguous (stride 1, its
/// row stride a multiple of 4, so every vec4 starts on a vec4 boundary) or constant (stride 0).
fn runs_on_vec4(axes: &[BroadcastAxis]) -> bool {
    let Some(last) = axes.last() else {
        return false;
    };
    let row = axes.len().checked_sub(2).map(|i| &axes[i]);
    let aligned = |stride: usize, row_stride: usize| match stride {
        0 => true,
        1 => row_stride.is_multiple_of(4),
        _ => false,
    };
    axes.len() <= 2
        && last.extent.is_multiple_of(4)
        && aligned(last.a_stride, row.map_or(0, |r| r.a_stride))
        && aligned(last.b_stride, row.map_or(0, |r| r.b_stride))
}

/// `op(a, b)` with numpy broadcasting, recorded for autograd.
///
/// Gradients (then summed back over broadcast axes to each operand's shape):
/// add: (g, g); sub: (g, −g); mul: (g·b, g·a); div: (g/b, −g·a/b²);
/// max/min: g goes to the operand that was selected (ties to `a`).
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = binary_raw(op, a, b)?;
    let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
    // Keep only the operands the wanted gradients read (an add keeps none, a product the other
    // factor): an operand no backward reads goes back to the pool as soon as the caller drops it
    // (a residual stream or a Linear's pre-bias output would otherwise live until backward).
    let (read_a, read_b) = operands_read(op, need_a, need_b);
    let ac = read_a.then(|| a.detach());
    let bc = read_b.then(|| b.detach());
    let (a_shape, b_shape) = (a.shape().to_vec(), b.shape().to_vec());
    Ok(record(out, binary_name(op), &[a, b], move |g| {
        let kept = |t: &Option<Tensor>| {
            t.clone().ok_or_else(|| Error::Autograd {
                op: binary_name(op),
                message: "backward read an operand the forward did not keep".into(),
            })
        };
        let (ga, gb) = match op {
            BinaryOp::Add => (g.clone(), g.clone()),
            BinaryOp::Sub => (g.clone(), unary(UnaryOp::Neg, g)?),
            BinaryOp::Mul => (
                if need_a {
                    binary_raw(BinaryOp::Mul, g, &kept(&bc)?)?
                } else {
                    g.clone()
                },
                if need_b {
                    binary_raw(BinaryOp::Mul, g, &kept(&ac)?)?
                } else {
                    g.clone()
                },
            ),
            BinaryOp::Div => {
                let bv = kept(&bc)?;
                let ga = binary_raw(BinaryOp::Div, g, &bv)?;
                let gb = if need_b {
                    // −g·a/b² = −(g/b)·(a/b)
                    let a_over_b = binary_raw(BinaryOp::Div, &kept(&ac)?, &bv)?;
                    unary(UnaryOp::Neg, &binary_raw(BinaryOp::Mul, &ga, &a_over_b)?)?
                } else {
                    g.clone()
                };
                (ga, gb)
            }
            BinaryOp::Max | BinaryOp::Min => {
                // The gradient goes to the operand that was selected; ties go to `a`.
                let (pick_a, pick_b) = if op == BinaryOp::Max {
                    (BinaryOp::Ge, BinaryOp::Lt)
                } else {
                    (BinaryOp::Le, BinaryOp::Gt)
                };
                let (av, bv) = (kept(&ac)?, kept(&bc)?);
                let mask_a = binary_raw(pick_a, &av, &bv)?;
                let mask_b = binary_raw(pick_b, &av, &bv)?;
                (
                    binary_raw(BinaryOp::Mul, g, &mask_a)?,
                    binary_raw(BinaryOp::Mul, g, &mask_b)?,
                )
            }
            BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt => {
                // Step functions: zero gradient almost everywhere.
                let zero = Tensor::zeros(g.gpu(), g.shape())?;
                (zero.clone(), zero)
            }
        };
        Ok(vec![
            if need_a {
                Some(sum_to_shape(&ga, &a_shape)?)
            } else {
                None
            },
            if need_b {
                Some(sum_to_shape(&gb, &b_shape)?)
            } else {
                None
            },
        ])
    }))
}

/// Which operands (a, b) the backward of `op` reads when the gradients of a and b are wanted as
/// given: d(a+b), d(a−b) and the step functions read neither; d(a·b)/da = b and d(a·b)/db = a;
/// d(a/b)/da = 1/b, d(a/b)/db = −a/b²; max/min compare both.
fn operands_read(op: BinaryOp, need_a: bool, need_b: bool) -> (bool, bool) {
    match op {
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Ge
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt => (false, false),
        BinaryOp::Mul => (need_b, need_a),
        BinaryOp::Div => (need_b, need_a || need_b),
        BinaryOp::Max | BinaryOp::Min => (true, true),
    }
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Add, a, b)
}
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Sub, a, b)
}
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Mul, a, b)
}
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Div, a, b)
}
pub fn maximum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Max, a, b)
}
pub fn minimum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Min, a, b)
}

/// Which unary kernel: the forward map or its input gradient.
#[derive(Clone, Copy)]
enum UnaryPass {
    Forward,
    Backward,
}

fn unary_launch(pass: UnaryPass, op: UnaryOp, inputs: &[&Tensor]) -> Result<Tensor> {
    let x = inputs[0];
    let out = Tensor::uninit(x.gpu(), op.name(), x.shape())?;
    let n = x.numel();
    if n == 0 {
        return Ok(out);
    }
    // Four elements per invocation when they come in whole vec4s.
    let (scalar, wide) = match pass {
        UnaryPass::Forward => (&UNARY, &UNARY4),
        UnaryPass::Backward => (&UNARY_BACKWARD, &UNARY_BACKWARD4),
    };
    let (spec, grid) = scalar_or_vec4(scalar, wide, n, n.is_multiple_of(4));
    let params = UnaryParams::of(op, n);
    let bufs: Vec<&wgpu::Buffer> = inputs.iter().map(|t| t.buffer()).collect();
    x.gpu()
        .dispatch(spec, &params, &bufs, &[out.buffer()], grid)?;
    Ok(out)
}

/// `op(x)` elementwise, recorded; backward is `g · op'(x)` (kernel `unary_backward`).
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let out = unary_launch(UnaryPass::Forward, op, &[x])?;
    let shape = x.shape().to_vec();
    // The affine maps' derivatives are constants: their backward keeps nothing of x.
    let kept = match op {
        UnaryOp::Neg => UnaryKept::Slope(-1.0),
        UnaryOp::AddScalar(_) => UnaryKept::Slope(1.0),
        UnaryOp::MulScalar(s) => UnaryKept::Slope(s),
        // Activation functions keep their input in f16 under autocast (src/tensor/saved.rs);
        // the math functions (exp, log, powers...) keep f32.
        UnaryOp::Relu | UnaryOp::LeakyRelu(_) | UnaryOp::Gelu => {
            UnaryKept::Input(Saved::keep_autocast(op.name(), x)?)
        }
        _ => UnaryKept::Input(Saved::keep(op.name(), x, false)?),
    };
    Ok(record(out, op.name(), &[x], move |g| {
        if g.shape() != shape {
            return Err(Error::shape(op.name(), &shape, g.shape()));
        }
        Ok(vec![Some(match &kept {
            UnaryKept::Slope(s) if *s == 1.0 => g.clone(),
            UnaryKept::Slope(s) => unary_launch(UnaryPass::Forward, UnaryOp::MulScalar(*s), &[g])?,
            // An f16 copy is read as it is (no f32 widening in memory, src/ops/unary_f16.rs).
            UnaryKept::Input(x) => match x.half() {
                Some(x16) => unary_backward_half_raw(op, x16, g)?,
                None => unary_launch(UnaryPass::Backward, op, &[&x.value(op.name())?, g])?,
            },
        })])
    }))
}

/// What a unary op's backward keeps: the constant derivative of an affine map, or the input.
enum UnaryKept {
    Slope(f32),
    Input(Saved),
}

/// `op(x)` of an f32 tensor, unrecorded.
pub(crate) fn unary_raw(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    unary_launch(UnaryPass::Forward, op, &[x])
}
/// `g · op'(x)` of f32 tensors of one shape, unrecorded.
pub(crate) fn unary_backward_raw(op: UnaryOp, x: &Tensor, g: &Tensor) -> Result<Tensor> {
    if g.shape() != x.shape() {
        return Err(Error::shape(op.name(), x.shape(), g.shape()));
    }
    unary_launch(UnaryPass::Backward, op, &[x, g])
}

pub fn relu(x: &Tensor) -> Result<Tensor> {
    unary(UnaryOp::Relu, x)
}
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    unary(UnaryOp::LeakyRelu(slope), x)
}
/// `g · leaky_relu'(x)` (1 where x > 0, else `slope`), unrecorded: leaky_relu's backward kernel.
pub(crate) fn leaky_relu_backward_raw(x: &Tensor, g: &Tensor, slope: f32) -> Result<Tensor> {
    if g.shape() != x.shape() {
        return Err(Error::shape("leaky_relu backward", x.shape(), g.shape()));
    }
    unary_launch(UnaryPass::Backward, UnaryOp::LeakyRelu(slope), &[x, g])
}
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    unary(UnaryOp::Gelu, x)
}
/// GELU(x), unrecorded: [`gelu`]'s forward kernel.
pub(crate) fn gelu_raw(x: &Tensor) -> Result<Tensor> {
    unary_launch(UnaryPass::Forward, UnaryOp::Gelu, &[x])
}
/// `g · GELU'(x)` written over `g`, which the caller owns and gives up; unrecorded. The
/// arithmetic of [`gelu`]'s backward kernel (the same bits), without a second tensor.
pub(crate) fn gelu_backward_in_place(x: &Tensor, g: Tensor) -> Result<Tensor> {
    let op = UnaryOp::Gelu;
    if g.shape() != x.shape() {
        return Err(Error::shape("gelu backward", x.shape(), g.shape()));
    }
    let n = x.numel();
    if n == 0 {
        return Ok(g);
    }
    let (spec, grid) = scalar_or_vec4(
        &UNARY_BACKWARD_IN_PLACE,
        &UNARY_BACKWARD_IN_PLACE4,
        n,
        n.is_multiple_of(4),
    );
    let params = UnaryParams::of(op, n);
    x.gpu()
        .dispatch(spec, &params, &[x.buffer()], &[g.buffer()], grid)?;
    Ok(g)
}
pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary(UnaryOp::Exp, x)
}
pub fn log(x: &Tensor) -> Result<Tensor> {
    unary(UnaryOp::Log, x)
}
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    unary(UnaryOp::MulScalar(s), x)
}
pub fn add_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary(UnaryOp::AddScalar(s), x)
}

/// A new tensor filled with `value` (a constant: not recorded). The kernel belongs to the tensor
/// layer (`Tensor::full`), which needs it below `ops`.
pub fn fill(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor> {
    Tensor::full(gpu, shape, value)
}
