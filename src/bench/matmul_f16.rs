//! f16 matmul cases (mixed precision: f16 operands, f32 accumulation and result): 1024³ on each
//! kernel and each vec4 tile (`1024_f16_vec4_<tile>`), and the three transpose patterns the
//! linear layer launches (nn forward, nt input gradient, tn weight gradient; `1024_vec4_*` on
//! the tile chosen for the adapter), and the stage-1 token projection of the PVT MLP, each beside
//! its f32 case in `matmul` (same shapes). The variant names the kernel that ran; the `_coop`
//! cases ask for cooperative matrices and run the register tiles on a device without them (CPU
//! adapters unless CADS_COOPERATIVE_MATRIX=on); on a device without SHADER_F16 the operands are
//! widened and the f32 kernel runs: `f32_fallback_<f32 variant>`.

use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::matmul::MatmulKernel;
use crate::ops::matmul_f16::{matmul_f16_launch, MatmulF16Kernel};
use crate::ops::matmul_f16_vec4::F16VecTile;
use crate::tensor::{DType, Tensor};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "matmul_f16",
            case: "1024",
            run: |b| square(b, false, false, MatmulF16Kernel::Tile4x4),
        },
        Case {
            op: "matmul_f16",
            case: "1024_nt",
            run: |b| square(b, false, true, MatmulF16Kernel::Tile4x4),
        },
        Case {
            op: "matmul_f16",
            case: "1024_tn",
            run: |b| square(b, true, false, MatmulF16Kernel::Tile4x4),
        },
        Case {
            op: "matmul_f16",
            case: "1024_vec4",
            run: |b| square(b, false, false, tuned_vec4(b)?),
        },
        Case {
            op: "matmul_f16",
            case: "1024_vec4_nt",
            run: |b| square(b, false, true, tuned_vec4(b)?),
        },
        Case {
            op: "matmul_f16",
            case: "1024_vec4_tn",
            run: |b| square(b, true, false, tuned_vec4(b)?),
        },
        Case {
            op: "matmul_f16",
            case: "1024_f16_vec4_8x4",
            run: |b| square(b, false, false, MatmulF16Kernel::Vec4(F16VecTile::T8x4)),
        },
        Case {
            op: "matmul_f16",
            case: "1024_f16_vec4_32x4_w8",
            run: |b| square(b, false, false, MatmulF16Kernel::Vec4(F16VecTile::T32x4W8)),
        },
        Case {
            op: "matmul_f16",
            case: "1024_f16_vec4_32x4_w16",
            run: |b| square(b, false, false, MatmulF16Kernel::Vec4(F16VecTile::T32x4W16)),
        },
        Case {
            op: "matmul_f16",
            case: "1024_f16_vec4_16x2",
            run: |b| square(b, false, false, MatmulF16Kernel::Vec4(F16VecTile::T16x2)),
        },
        Case {
            op: "matmul_f16",
            case: "1024_coop",
            run: |b| square(b, false, false, MatmulF16Kernel::Cooperative),
        },
        Case {
            op: "matmul_f16",
            case: "1024_coop_tn",
            run: |b| square(b, true, false, MatmulF16Kernel::Cooperative),
        },
        Case {
            op: "matmul_f16",
            case: "1024_f16_naive",
            run: |b| square(b, false, false, MatmulF16Kernel::Naive),
        },
        Case {
            op: "matmul_f16",
            case: "tokens_2x4096x64_by_64x256",
            run: |b| tokens(b, 4096, 256),
        },
        Case {
            op: "matmul_f16",
            case: "tokens_2x1152x64_by_64x64",
            run: |b| tokens(b, 1152, 64),
        },
    ]
}

/// An f16 tensor of uniform values in [-1, 1).
fn random16(gpu: &crate::Gpu, rng: &mut crate::util::Rng, shape: &[usize]) -> Result<Tensor> {
    super::inputs::random(gpu, rng, shape)?.to_dtype(DType::F16)
}

/// The vec4 tiles with the tile chosen for this adapter (measured on CPU adapters).
fn tuned_vec4(b: &Bench) -> Result<MatmulF16Kernel> {
    Ok(MatmulF16Kernel::Vec4(F16VecTile::chosen(b.gpu())?))
}

/// The kernel that ran for a product with `n` columns and these transposes.
fn variant(
    b: &Bench,
    kernel: MatmulF16Kernel,
    n: usize,
    transposes: (bool, bool),
) -> Result<String> {
    let features = b.gpu().features();
    Ok(if features.f16 {
        match (kernel.effective(b.gpu())?, features.cooperative_matrix) {
            // The fragment size names which generated kernel ran: f16_coop8 / f16_coop16.
            (MatmulF16Kernel::Cooperative, Some(t)) => format!("f16_coop{t}"),
            // The vec4 tiles' workgroups of 16 on narrow products: f16_vec4_8x4_w16; `+sga`
            // where the tile's subgroup-broadcast twin ran (src/ops/matmul_subgroup_a.rs).
            (MatmulF16Kernel::Vec4(tile), _) => {
                let sga = tile.runs_twin(b.gpu(), n, transposes)?;
                format!(
                    "{}{}",
                    tile.variant_for_columns(n),
                    if sga { "+sga" } else { "" }
                )
            }
            (kernel, _) => kernel.name().to_string(),
        }
    } else {
        format!("f32_fallback_{}", MatmulKernel::chosen(b.gpu())?.name())
    })
}

/// 1024 × 1024 × 1024 with the given transposes, 2·1024³ FLOPs.
fn square(b: &Bench, ta: bool, tb: bool, kernel: MatmulF16Kernel) -> Result<Sample> {
    let n = 1024;
    let ms = b.time(
        |gpu, rng| Ok((random16(gpu, rng, &[n, n])?, random16(gpu, rng, &[n, n])?)),
        |(x, y)| matmul_f16_launch(x, y, ta, tb, kernel).map(drop),
    )?;
    let mut s = Sample::new(ms, Work::Flops(2.0 * (n * n * n) as f64));
    s.variant = Some(variant(b, kernel, n, (ta, tb))?);
    s.precision = Some(crate::gpu::Precision::Mixed.name());
    Ok(s)
}

/// Tokens [2·L, 64] times a weight [64, N], as `matmul/tokens_2xLx64_by_64xN`.
fn tokens(b: &Bench, l: usize, n: usize) -> Result<Sample> {
    let kernel = MatmulF16Kernel::chosen(b.gpu())?;
    let ms = b.time(
        |gpu, rng| {
            Ok((
                random16(gpu, rng, &[2 * l, 64])?,
                random16(gpu, rng, &[64, n])?,
            ))
        },
        |(x, w)| matmul_f16_launch(x, w, false, false, kernel).map(drop),
    )?;
    let mut s = Sample::new(ms, Work::Flops(2.0 * (2 * l * 64 * n) as f64));
    s.variant = Some(variant(b, kernel, n, (false, false))?);
    s.precision = Some(crate::gpu::Precision::Mixed.name());
    Ok(s)
}
