//! What the matmul tuner times (src/gpu/tuning.rs calls [`TuneBench::measure`] per candidate):
//! the representative products of the adapter's kind, and, for the workgroup-memory kernels,
//! a check of each one's result against a register tile on the same inputs before it may win.
//!
//! Shapes: on CPU adapters (only the vec4 register tiles are candidates there) one product of
//! M × K × N = 1024 × 512 × 512, the rows × width of a PVT token projection: large enough that a
//! tile's steady state dominates (about 10–50 ms on lavapipe), small enough that tuning stays a
//! second or two. On GPU adapters that product runs in tens of microseconds, under the timer's
//! noise, and one shape would favour one tile, so three products are timed together: a
//! 2048 × 1024 × 1024 square-ish product, a token projection 32768 × 64 → 512 (a PVT MLP
//! expansion: tall, narrow K) and its weight gradient Xᵀ·G (K = 32768 tokens, a 64 × 512 output,
//! transposed A: the split-K path). About 8.6 GFLOP: a fraction of a millisecond on a large GPU,
//! tens of milliseconds on a small integrated one.

use std::time::Instant;

use super::matmul::{matmul_launch, MatmulKernel};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::util::Rng;

/// One timed product: M, K, N and whether A is stored transposed ([K, M]).
#[derive(Clone, Copy, Debug)]
struct TuneProduct {
    m: usize,
    k: usize,
    n: usize,
    transpose_a: bool,
}

const CPU_SHAPES: &[TuneProduct] = &[TuneProduct {
    m: 1024,
    k: 512,
    n: 512,
    transpose_a: false,
}];

const GPU_SHAPES: &[TuneProduct] = &[
    TuneProduct {
        m: 2048,
        k: 1024,
        n: 1024,
        transpose_a: false,
    },
    TuneProduct {
        m: 32768,
        k: 64,
        n: 512,
        transpose_a: false,
    },
    TuneProduct {
        m: 64,
        k: 32768,
        n: 512,
        transpose_a: true,
    },
];

/// The kernel whose result a workgroup-memory kernel must reproduce before it is timed.
const REFERENCE: MatmulKernel = MatmulKernel::vec4(4, 4);

/// Inputs (made at the first measurement: a cached choice needs none), reference results and
/// the kernels already checked.
pub(crate) struct TuneBench<'g> {
    gpu: &'g Gpu,
    shapes: &'static [TuneProduct],
    inputs: Vec<(Tensor, Tensor)>,
    references: Vec<Option<Vec<f32>>>,
    checked: Vec<MatmulKernel>,
}

impl<'g> TuneBench<'g> {
    pub(crate) fn new(gpu: &'g Gpu) -> TuneBench<'g> {
        let shapes = if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
            CPU_SHAPES
        } else {
            GPU_SHAPES
        };
        TuneBench {
            gpu,
            shapes,
            inputs: Vec::new(),
            references: vec![None; shapes.len()],
            checked: Vec::new(),
        }
    }

    fn make_inputs(&mut self) -> Result<()> {
        if !self.inputs.is_empty() {
            return Ok(());
        }
        let mut rng = Rng::new(0x7e4e);
        for s in self.shapes {
            let a_shape = if s.transpose_a {
                [s.k, s.m]
            } else {
                [s.m, s.k]
            };
            let a = Tensor::from_slice(self.gpu, &rng.vec_uniform(s.m * s.k, -1.0, 1.0), &a_shape)?;
            let b = Tensor::from_slice(
                self.gpu,
                &rng.vec_uniform(s.k * s.n, -1.0, 1.0),
                &[s.k, s.n],
            )?;
            self.inputs.push((a, b));
        }
        Ok(())
    }

    /// Milliseconds of one run of every shape on `kernel` (wall clock around submit and wait).
    /// A workgroup-memory kernel is first run once per shape and compared with the register
    /// tile: a disagreement (a driver that breaks the kernel's assumptions, such as full
    /// subgroups) is an error, which leaves the kernel out of tuning.
    pub(crate) fn measure(&mut self, kernel: MatmulKernel) -> Result<f64> {
        self.make_inputs()?;
        if matches!(kernel, MatmulKernel::Shared(_)) && !self.checked.contains(&kernel) {
            self.check(kernel)?;
            self.checked.push(kernel);
        }
        self.gpu.synchronize()?;
        let t0 = Instant::now();
        for (s, (a, b)) in self.shapes.iter().zip(&self.inputs) {
            drop(matmul_launch(a, b, s.transpose_a, false, kernel)?);
        }
        self.gpu.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }

    fn check(&mut self, kernel: MatmulKernel) -> Result<()> {
        for (i, s) in self.shapes.iter().enumerate() {
            let (a, b) = &self.inputs[i];
            if self.references[i].is_none() {
                self.references[i] =
                    Some(matmul_launch(a, b, s.transpose_a, false, REFERENCE)?.to_vec()?);
            }
            let want = self.references[i].as_deref().expect("made just above");
            let got = matmul_launch(a, b, s.transpose_a, false, kernel)?.to_vec()?;
            disagreement(&got, want).map_or(Ok(()), |worst| {
                Err(Error::invalid(
                    "matmul",
                    format!(
                        "kernel {} to reproduce {} on {}x{}x{} (M x K x N, transpose_a {})",
                        kernel.name(),
                        REFERENCE.name(),
                        s.m,
                        s.k,
                        s.n,
                        s.transpose_a
                    ),
                    worst,
                ))
            })?;
        }
        Ok(())
    }
}

/// `None` when `got` matches `want` to rounding (every error within 10⁻³ of the largest |want|,
/// plus 10⁻³: a wrong index is an error of the order of the values themselves), else the worst
/// element.
pub(crate) fn disagreement(got: &[f32], want: &[f32]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} outputs instead of {}", got.len(), want.len()));
    }
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tolerance = 1e-3 * scale + 1e-3;
    let (worst, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        // NaN compares as the worst.
        .fold((0, 0.0f32), |(bi, be), (i, e)| {
            if e > be || e.is_nan() && !be.is_nan() {
                (i, e)
            } else {
                (bi, be)
            }
        });
    (err > tolerance || err.is_nan()).then(|| {
        format!(
            "element {worst}: {} instead of {} (tolerance {tolerance})",
            got[worst], want[worst]
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul_tiled::SharedTile;

    const SMALL: &[TuneProduct] = &[
        TuneProduct {
            m: 40,
            k: 300,
            n: 36,
            transpose_a: false,
        },
        TuneProduct {
            m: 20,
            k: 700,
            n: 12,
            transpose_a: true,
        },
    ];

    /// A workgroup-memory kernel is timed only after it reproduced the register tile on every
    /// shape; one that does not (here: a reference made wrong on purpose) is an error naming
    /// both kernels and the shape, which the tuner turns into "left out of tuning".
    #[test]
    fn workgroup_kernels_must_reproduce_the_register_tile_before_they_are_timed() {
        let gpu = crate::gpu::unit_test_gpu();
        let mut bench = TuneBench::new(&gpu);
        bench.shapes = SMALL;
        bench.references = vec![None; SMALL.len()];
        let wg = MatmulKernel::Shared(SharedTile::Wg64x64);
        assert!(bench.measure(wg).unwrap() > 0.0);
        assert!(bench.measure(MatmulKernel::vec4(8, 4)).unwrap() > 0.0);
        assert_eq!(bench.checked, [wg]);
        bench.references[1] = Some(vec![0.0; 20 * 12]);
        let other = MatmulKernel::Shared(SharedTile::Wg128x64);
        let e = bench.measure(other).unwrap_err().to_string();
        assert!(
            e.contains("wg128x64") && e.contains("vec4_4x4") && e.contains("20x700x12"),
            "{e}"
        );
        assert_eq!(bench.checked, [wg]);
    }

    #[test]
    fn disagreement_allows_rounding_and_reports_wrong_values() {
        let want = [100.0, -3.0, 0.0];
        assert_eq!(disagreement(&[100.05, -3.01, 0.02], &want), None);
        let e = disagreement(&[100.0, 3.0, 0.0], &want).unwrap();
        assert!(e.starts_with("element 1: 3 instead of -3"), "{e}");
        assert!(disagreement(&[100.0, f32::NAN, 0.0], &want).is_some());
        assert!(disagreement(&[100.0], &want).is_some());
    }
}
