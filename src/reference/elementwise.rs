//! Reference for src/ops/elementwise.rs.

use super::Array;
use crate::ops::config::{BinaryOp, UnaryOp};

/// Numpy broadcasting: read `a` at the output multi-index `idx` (right-aligned).
fn broadcast_get(a: &Array, idx: &[usize]) -> f64 {
    let off = idx.len() - a.shape.len();
    let mut flat = 0;
    for (d, &n) in a.shape.iter().enumerate() {
        let i = if n == 1 { 0 } else { idx[off + d] };
        flat = flat * n + i;
    }
    a.data[flat]
}

/// The numpy broadcast of two shapes: right-aligned, a missing or extent-1 axis stretches to the
/// other's extent. Panics on incompatible shapes (the reference is called on valid input only).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    // Extent of `s` on output axis i, counting missing leading axes as 1.
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => x,
            (1, y) => y,
            (x, y) => {
                panic!("reference broadcast: {a:?} and {b:?} differ on axis {i} ({x} vs {y})")
            }
        })
        .collect()
}

pub fn binary_scalar(op: BinaryOp, x: f64, y: f64) -> f64 {
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::Ge => b(x >= y),
        BinaryOp::Lt => b(x < y),
        BinaryOp::Le => b(x <= y),
        BinaryOp::Gt => b(x > y),
    }
}

/// out = op(a, b) with broadcasting.
pub fn binary(op: BinaryOp, a: &Array, b: &Array) -> Array {
    let shape = broadcast_shape(&a.shape, &b.shape);
    let mut out = Array::zeros(&shape);
    for i in 0..out.numel() {
        let idx = out.unravel(i);
        out.data[i] = binary_scalar(op, broadcast_get(a, &idx), broadcast_get(b, &idx));
    }
    out
}

/// (dL/da, dL/db) given dL/dout = g, summing over broadcast axes.
pub fn binary_backward(op: BinaryOp, a: &Array, b: &Array, g: &Array) -> (Array, Array) {
    let mut ga = Array::zeros(&a.shape);
    let mut gb = Array::zeros(&b.shape);
    let off_a = g.shape.len() - a.shape.len();
    let off_b = g.shape.len() - b.shape.len();
    let flat_of = |arr: &Array, off: usize, idx: &[usize]| -> usize {
        let mut flat = 0;
        for (d, &n) in arr.shape.iter().enumerate() {
            flat = flat * n + if n == 1 { 0 } else { idx[off + d] };
        }
        flat
    };
    for i in 0..g.numel() {
        let idx = g.unravel(i);
        let (ia, ib) = (flat_of(a, off_a, &idx), flat_of(b, off_b, &idx));
        let (x, y, gi) = (a.data[ia], b.data[ib], g.data[i]);
        let (da, db) = match op {
            BinaryOp::Add => (1.0, 1.0),
            BinaryOp::Sub => (1.0, -1.0),
            BinaryOp::Mul => (y, x),
            BinaryOp::Div => (1.0 / y, -x / (y * y)),
            BinaryOp::Max => {
                if x >= y {
                    (1.0, 0.0)
                } else {
                    (0.0, 1.0)
                }
            }
            BinaryOp::Min => {
                if x <= y {
                    (1.0, 0.0)
                } else {
                    (0.0, 1.0)
                }
            }
            _ => (0.0, 0.0),
        };
        ga.data[ia] += gi * da;
        gb.data[ib] += gi * db;
    }
    (ga, gb)
}

/// erf in f64 (libm), the exact function the shader approximates.
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

pub fn unary_scalar(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Square => x * x,
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::LeakyRelu(a) => {
            if x > 0.0 {
                x
            } else {
                a as f64 * x
            }
        }
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        UnaryOp::AddScalar(a) => x + a as f64,
        UnaryOp::MulScalar(a) => x * a as f64,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Pow(p) => x.powf(p as f64),
    }
}

/// d op(x) / dx.
pub fn unary_derivative(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -1.0,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => 1.0 / x,
        UnaryOp::Sqrt => 0.5 / x.sqrt(),
        UnaryOp::Square => 2.0 * x,
        UnaryOp::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        UnaryOp::LeakyRelu(a) => {
            if x > 0.0 {
                1.0
            } else {
                a as f64
            }
        }
        UnaryOp::Gelu => {
            let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            cdf + x * pdf
        }
        UnaryOp::AddScalar(_) => 1.0,
        UnaryOp::MulScalar(a) => a as f64,
        UnaryOp::Tanh => 1.0 - x.tanh().powi(2),
        UnaryOp::Sigmoid => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 - s)
        }
        UnaryOp::Reciprocal => -1.0 / (x * x),
        UnaryOp::Abs => x.signum(),
        UnaryOp::Pow(p) => p as f64 * x.powf(p as f64 - 1.0),
    }
}

pub fn unary(op: UnaryOp, x: &Array) -> Array {
    Array::new(
        x.data.iter().map(|&v| unary_scalar(op, v)).collect(),
        &x.shape,
    )
}

/// dL/dx = g · op'(x).
pub fn unary_backward(op: UnaryOp, x: &Array, g: &Array) -> Array {
    Array::new(
        x.data
            .iter()
            .zip(&g.data)
            .map(|(&v, &gi)| gi * unary_derivative(op, v))
            .collect(),
        &x.shape,
    )
}
