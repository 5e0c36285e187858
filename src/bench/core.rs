//! Core cases: the FMA peak microkernel (shaders/fma_peak.wgsl), elementwise ops, casts, the
//! launch cost and the sum reductions.

use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::gpu::{Grid, KernelSpec};
use crate::ops;
use crate::tensor::{DType, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `FmaParams` in shaders/fma_peak.wgsl.
    struct FmaParams {
        n: u32,
        iterations: u32,
        mul: f32,
        add: f32,
    }
}

const FMA_PEAK: KernelSpec = KernelSpec {
    shader: "fma_peak",
    source: include_str!("../../shaders/fma_peak.wgsl"),
    entry: "fma_peak",
    inputs: 0,
    outputs: 1,
    params: FmaParams::LAYOUT,
    constants: &[],
};

pub(crate) const KERNELS: &[KernelSpec] = &[FMA_PEAK];

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "fma_peak",
            case: "64k_x8x8",
            run: fma_peak,
        },
        Case {
            op: "add",
            case: "8M",
            run: add_8m,
        },
        Case {
            op: "add",
            case: "bias_8192x1024",
            run: add_bias,
        },
        Case {
            op: "fill",
            case: "8M",
            run: fill_8m,
        },
        Case {
            op: "gelu",
            case: "8M",
            run: gelu_8m,
        },
        Case {
            op: "cast",
            case: "8M_f32_to_f16",
            run: |b| cast_8m(b, DType::F32, DType::F16),
        },
        Case {
            op: "cast",
            case: "8M_f16_to_f32",
            run: |b| cast_8m(b, DType::F16, DType::F32),
        },
        Case {
            op: "l2_normalize",
            case: "head_256x60000",
            run: |b| l2_normalize_head(b, false),
        },
        Case {
            op: "l2_normalize",
            case: "head_256x60000_fwd_bwd",
            run: |b| l2_normalize_head(b, true),
        },
        Case {
            op: "normalized_linear",
            case: "head_6x256_by_256x60000_fwd_bwd",
            run: |b| normalized_linear_head(b, false),
        },
        Case {
            op: "normalized_linear",
            case: "head_6x256_by_256x60000_fwd_bwd_composed",
            run: |b| normalized_linear_head(b, true),
        },
        Case {
            op: "launch",
            case: "add64_chain_x1000",
            run: launch_chain,
        },
        Case {
            op: "sum",
            case: "rows_4096x4096",
            run: sum_rows,
        },
        Case {
            op: "sum",
            case: "cols_4096x4096",
            run: sum_cols,
        },
        Case {
            op: "sum",
            case: "all_4M",
            run: sum_all_4m,
        },
    ]
}

/// 64K invocations × `ITERATIONS` × 8 chains × 8 deep × vec4 FMAs.
fn fma_peak(b: &Bench) -> Result<Sample> {
    const N: u32 = 65_536;
    const ITERATIONS: u32 = 128;
    let ms = b.time(
        |gpu, _| Tensor::uninit(gpu, "fma_peak", &[N as usize]),
        |out| {
            let params = FmaParams {
                n: N,
                iterations: ITERATIONS,
                mul: 0.999_9,
                add: 1e-4,
            };
            out.gpu().dispatch(
                &FMA_PEAK,
                &params,
                &[],
                &[out.buffer()],
                Grid::cover(N as u64, 64),
            )
        },
    )?;
    let flops = N as f64 * ITERATIONS as f64 * 8.0 * 8.0 * 4.0 * 2.0;
    Ok(Sample::new(ms, Work::Flops(flops)))
}

fn random(gpu: &crate::Gpu, rng: &mut crate::util::Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_slice(gpu, &rng.vec_uniform(n, -1.0, 1.0), shape)
}

/// c = a + b over 8M f32: 3 × 32 MiB moved.
fn add_8m(b: &Bench) -> Result<Sample> {
    const N: usize = 8 << 20;
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[N])?, random(gpu, rng, &[N])?)),
        |(x, y)| ops::add(x, y).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(3.0 * 4.0 * N as f64)))
}

/// A bias over the rows of an 8192 × 1024 matrix (a Linear's epilogue): 2 × 32 MiB moved.
fn add_bias(b: &Bench) -> Result<Sample> {
    const R: usize = 8192;
    const C: usize = 1024;
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[R, C])?, random(gpu, rng, &[C])?)),
        |(x, bias)| ops::add(x, bias).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(4.0 * (2 * R * C + C) as f64)))
}

/// Tensor::full over 8M f32 (every zero gradient, every constant): 32 MiB written.
fn fill_8m(b: &Bench) -> Result<Sample> {
    const N: usize = 8 << 20;
    let ms = b.time(
        |gpu, _| Ok(gpu.clone()),
        |gpu| Tensor::full(gpu, &[N], 0.5).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(4.0 * N as f64)))
}

/// GELU (erf form) over 8M f32: 2 × 32 MiB moved.
fn gelu_8m(b: &Bench) -> Result<Sample> {
    const N: usize = 8 << 20;
    let ms = b.time(
        |gpu, rng| random(gpu, rng, &[N]),
        |x| ops::gelu(x).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(2.0 * 4.0 * N as f64)))
}

/// The DINO head's weight-normalised last layer: its [256, 60000] weight (bottleneck × K)
/// normalised over the 256 inputs of each output, forward (x read twice, y written: 3 × 61 MB)
/// or forward and backward (the backward reads x, g and writes gx: 6 × 61 MB in all).
fn l2_normalize_head(b: &Bench, backward: bool) -> Result<Sample> {
    const IN: usize = 256;
    const K: usize = 60_000;
    let make = |gpu: &crate::Gpu, rng: &mut crate::util::Rng| {
        let w = random(gpu, rng, &[IN, K])?;
        Ok((w.requires_grad_(backward), random(gpu, rng, &[IN, K])?))
    };
    let ms = if backward {
        b.time_with_grad(make, |(w, g)| {
            ops::l2_normalize(w, 0, 1e-12)?.backward_with(g).map(drop)
        })?
    } else {
        b.time(make, |(w, _)| ops::l2_normalize(w, 0, 1e-12).map(drop))?
    };
    let passes = if backward { 6.0 } else { 3.0 };
    Ok(Sample::new(ms, Work::Bytes(passes * 4.0 * (IN * K) as f64)))
}

/// The DINO head's last layer as one op, forward and backward: 6 rows of the 256-wide bottleneck
/// times its [256, 60000] weight normalised per output column (`ops::normalized_linear`), or,
/// `composed`, the same as `linear(x, l2_normalize(v))` (the normalised weight written and read).
/// FLOPs count the three products (forward, ∂x, ∂v).
fn normalized_linear_head(b: &Bench, composed: bool) -> Result<Sample> {
    const ROWS: usize = 6;
    const IN: usize = 256;
    const K: usize = 60_000;
    let make = |gpu: &crate::Gpu, rng: &mut crate::util::Rng| {
        Ok((
            random(gpu, rng, &[ROWS, IN])?.requires_grad_(true),
            random(gpu, rng, &[IN, K])?.requires_grad_(true),
            random(gpu, rng, &[ROWS, K])?,
        ))
    };
    let ms = b.time_with_grad(make, |(x, v, g)| {
        let y = if composed {
            ops::linear(x, &ops::l2_normalize(v, 0, 1e-12)?, None)?
        } else {
            ops::normalized_linear(x, v, 1e-12)?
        };
        y.backward_with(g).map(drop)
    })?;
    Ok(Sample::new(
        ms,
        Work::Flops(3.0 * 2.0 * (ROWS * IN * K) as f64),
    ))
}

/// 8M elements from one float type to the other (autocast's activation copies): 6 × 8 MiB moved.
fn cast_8m(b: &Bench, from: DType, to: DType) -> Result<Sample> {
    const N: usize = 8 << 20;
    let ms = b.time(
        |gpu, rng| random(gpu, rng, &[N])?.to_dtype(from),
        |x| x.to_dtype(to).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(6.0 * N as f64)))
}

/// What a launch costs: 1,000 dependent adds of 64 floats (each reads the previous result), so
/// the time is the recording, binding and dispatch of each launch and the device's turnaround
/// between them, not arithmetic. Printed as `us_per_launch`.
fn launch_chain(b: &Bench) -> Result<Sample> {
    const LAUNCHES: usize = 1000;
    let ms = b.time(
        |gpu, rng| Ok((random(gpu, rng, &[64])?, random(gpu, rng, &[64])?)),
        |(x, y)| {
            let mut acc = ops::add(x, y)?;
            for _ in 1..LAUNCHES {
                acc = ops::add(&acc, y)?;
            }
            Ok(())
        },
    )?;
    Ok(Sample::new(ms, Work::Launches(LAUNCHES as f64)))
}

/// Row sums of a 4096 × 4096 matrix (many outputs, reduction of 4096 each).
fn sum_rows(b: &Bench) -> Result<Sample> {
    const R: usize = 4096;
    let ms = b.time(
        |gpu, rng| random(gpu, rng, &[R, R]),
        |x| ops::sum(x, &[1], false).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(4.0 * (R * R + R) as f64)))
}

/// Column sums of a 4096 × 4096 matrix (a bias gradient: lanes over columns, rows in order).
fn sum_cols(b: &Bench) -> Result<Sample> {
    const R: usize = 4096;
    let ms = b.time(
        |gpu, rng| random(gpu, rng, &[R, R]),
        |x| ops::sum(x, &[0], false).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(4.0 * (R * R + R) as f64)))
}

/// Sum of 4M elements into one (one output: the reduction's least parallel case).
fn sum_all_4m(b: &Bench) -> Result<Sample> {
    const N: usize = 4 << 20;
    let ms = b.time(
        |gpu, rng| random(gpu, rng, &[N]),
        |x| ops::sum_all(x).map(drop),
    )?;
    Ok(Sample::new(ms, Work::Bytes(4.0 * N as f64)))
}
