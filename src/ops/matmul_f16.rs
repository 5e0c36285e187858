//! Mixed-precision matmul: f16 operands, f32 accumulation, f32 result; and `linear_mixed`, the
//! linear layer under autocast. Kernels: shaders/matmul_f16.wgsl (needs `SHADER_F16`).
//! Reference: src/reference/matmul_f16.rs.
//!
//! `C = op_a(A) · op_b(B)` with A, B f16 tensors (transpose flags and shapes as in
//! src/ops/matmul.rs; batch dims equal, or one operand unbatched and shared). Every product of two
//! f16 values is exact in f32, so the only rounding is the f32 accumulation: C equals the f32
//! matmul of the widened operands up to summation order. The error against the product of the
//! original f32 values comes from rounding each operand to f16 (relative 2⁻¹¹ each), i.e.
//! |ΔC_ij| ≤ (2⁻¹⁰ + 2⁻²²)·Σ_k |a_ik|·|b_kj| plus the f32 accumulation error.
//!
//! Backward (G = dL/dC arrives f32 and is rounded to f16 once, as under PyTorch's autocast,
//! where a loss scale keeps it inside f16's range): the products of src/ops/matmul.rs,
//!   dA = G·op_b(B)ᵀ (as stored), dB = op_a(A)ᵀ·G, again f16 × f16 with f32 accumulation,
//! summed over broadcast batch dims in f32 and rounded to f16, the type of A and B (the cast that
//! made them widens the gradients back to f32 for the f32 leaves, src/tensor/cast.rs).
//! The tape keeps the f16 operands only: half the bytes of the f32 matmul's.
//!
//! Kernels ([`MatmulF16Kernel`]): `f16_naive` (one output per invocation, the oracle) and
//! `f16_tile_4x4` (4 × 4 register tiles on vec4<f16> loads; one kernel per transpose pattern:
//! nn for the forward, nt for the input gradient, tn for the weight gradient, split-K when the
//! output has few tiles; the naive kernel for shapes the tiles do not take), `f16_vec4_<tile>`
//! (the f32 path's vec4 tiles on f16 operands, src/ops/matmul_f16_vec4.rs; the default on CPU
//! adapters, with the tile measured fastest there) and `f16_coop` (cooperative matrices,
//! src/ops/matmul_f16_coop.rs; the default where the device has them).
//!
//! Without `SHADER_F16` the same values come from the f32 path: the operands are widened (exact)
//! and multiplied by the f32 matmul kernels (src/ops/matmul.rs), so a caller never needs to ask.

use super::matmul::{
    add_bias, linear_dims, linear_grads, matmul_launch, split_target_workgroups, LinearDims,
    MatmulKernel,
};
use super::matmul_f16_coop::launch_coop;
use super::matmul_f16_vec4::{self, F16VecTile};
use super::reduce::{split_count_toward, sum_leading_into, sum_to_shape};
use super::shape::broadcast_shapes;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Grid, KernelSpec};
use crate::tensor::{cast_unrecorded, half_rounding, numel, DType, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `MatmulF16Params` in shaders/matmul_f16.wgsl (and the cooperative kernels).
    #[derive(Debug)]
    pub(super) struct MatmulF16Params {
        m: u32,
        n: u32,
        k: u32,
        batch: u32,
        a_sb: u32,
        b_sb: u32,
        a_sm: u32,
        a_sk: u32,
        b_sk: u32,
        b_sn: u32,
        tiles_m: u32,
        tiles_n: u32,
        /// k-steps per split-K split (tiled kernels; 4 values of k for nn/nt, one for tn; values
        /// of k for the cooperative kernels).
        pub(super) k_chunk: u32,
        _pad: [u32; 3],
    }
}

const fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "matmul_f16",
        source: include_str!("../../shaders/matmul_f16.wgsl"),
        entry,
        inputs: 2,
        outputs: 1,
        params: MatmulF16Params::LAYOUT,
        constants: &[],
    }
}

const NAIVE: KernelSpec = spec("matmul_f16_naive");
const NN: KernelSpec = spec("matmul_f16_nn_4x4");
const NT: KernelSpec = spec("matmul_f16_nt_4x4");
const TN: KernelSpec = spec("matmul_f16_tn_4x4");

/// Every f16 matmul kernel (the shader validation list).
pub(crate) const KERNELS: &[KernelSpec] = &[NAIVE, NN, NT, TN];

/// Invocations per workgroup (matches the shader).
const WORKGROUP: usize = 64;
/// Split-K aims at [`split_target_workgroups`] (as the f32 tiles), with at least this many
/// k-steps per split, so a split's loop outweighs its partial sum.
const MIN_STEPS_PER_SPLIT: usize = 64;

/// Which kernel computes an f16 matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulF16Kernel {
    /// One output per invocation, any strides: the oracle.
    Naive,
    /// 4 × 4 register tiles on vec4<f16> loads, per transpose pattern (nn, nt, tn); the
    /// transposed-both pattern and shapes whose vectorised axes are not multiples of 4 take the
    /// naive kernel.
    Tile4x4,
    /// The f32 path's vec4 register tiles on f16 operands (the rows of A shared by the
    /// workgroup; src/ops/matmul_f16_vec4.rs), `tile` among [`F16VecTile::ALL`], per transpose
    /// pattern (plain, `_tb`, `_ta`); other patterns and shapes take `Tile4x4`'s rules. The
    /// default on CPU adapters, with the tile measured fastest there.
    Vec4(F16VecTile),
    /// Cooperative-matrix fragments (tensor cores), any shape and pattern
    /// (src/ops/matmul_f16_coop.rs); on a device without them, the adapter's register tiles
    /// (`Vec4` on CPU adapters, `Tile4x4` on GPUs).
    Cooperative,
}

impl MatmulF16Kernel {
    /// Every variant (tests and benchmarks walk this list).
    pub const ALL: &'static [MatmulF16Kernel] = &[
        MatmulF16Kernel::Naive,
        MatmulF16Kernel::Tile4x4,
        MatmulF16Kernel::Vec4(F16VecTile::T8x4),
        MatmulF16Kernel::Vec4(F16VecTile::T32x4W8),
        MatmulF16Kernel::Vec4(F16VecTile::T32x4W16),
        MatmulF16Kernel::Vec4(F16VecTile::T16x2),
        MatmulF16Kernel::Cooperative,
    ];

    /// Name in benchmark lines: `f16_naive`, `f16_tile_4x4`, the vec4 tile's
    /// ([`F16VecTile::name`], `f16_vec4_8x4`), `f16_coop`.
    pub fn name(self) -> &'static str {
        match self {
            MatmulF16Kernel::Naive => "f16_naive",
            MatmulF16Kernel::Tile4x4 => "f16_tile_4x4",
            MatmulF16Kernel::Vec4(tile) => tile.name(),
            MatmulF16Kernel::Cooperative => "f16_coop",
        }
    }

    /// The kernel for this device: cooperative matrices where the device has them
    /// (`DeviceFeatures::cooperative_matrix`, requested by default on GPU adapters only), the
    /// vec4 tiles on CPU adapters (1.3–2.4× the 4 × 4 tiles at 1024³ on lavapipe,
    /// docs/kernel-tuning.md) with the tile [`F16VecTile::chosen`] for the adapter (an error for
    /// an unknown `CADS_KERNEL_MATMUL_F16`, or when no tile could be timed), the 4 × 4 tiles on
    /// other GPUs.
    pub fn chosen(gpu: &Gpu) -> Result<MatmulF16Kernel> {
        match gpu.features().cooperative_matrix {
            Some(_) => Ok(MatmulF16Kernel::Cooperative),
            None => MatmulF16Kernel::register_tiles(gpu),
        }
    }

    /// The register tiles for this adapter: the tuned vec4 tile on CPU adapters, 4 × 4
    /// elsewhere.
    fn register_tiles(gpu: &Gpu) -> Result<MatmulF16Kernel> {
        if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
            Ok(MatmulF16Kernel::Vec4(F16VecTile::chosen(gpu)?))
        } else {
            Ok(MatmulF16Kernel::Tile4x4)
        }
    }

    /// The kernel that really runs on `gpu`: `Cooperative` without the feature runs the
    /// adapter's register tiles (those [`MatmulF16Kernel::chosen`] would pick without it).
    pub fn effective(self, gpu: &Gpu) -> Result<MatmulF16Kernel> {
        match (self, gpu.features().cooperative_matrix) {
            (MatmulF16Kernel::Cooperative, None) => MatmulF16Kernel::register_tiles(gpu),
            (kernel, _) => Ok(kernel),
        }
    }
}

/// Shapes and element strides of one f16 matmul after validation.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) out_shape: Vec<usize>,
    pub(super) batch: usize,
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) a_sb: usize,
    pub(super) b_sb: usize,
}

pub(super) fn plan(a: &[usize], b: &[usize], ta: bool, tb: bool) -> Result<Plan> {
    let op = "matmul_f16";
    if a.len() < 2 || b.len() < 2 {
        return Err(Error::invalid(
            op,
            "operands of rank >= 2",
            format!("a {a:?} and b {b:?}"),
        ));
    }
    let (ra, ca) = (a[a.len() - 2], a[a.len() - 1]);
    let (rb, cb) = (b[b.len() - 2], b[b.len() - 1]);
    let (m, k) = if ta { (ca, ra) } else { (ra, ca) };
    let (k2, n) = if tb { (cb, rb) } else { (rb, cb) };
    if k != k2 {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!(
                "a {a:?} (transpose_a {ta}) and b {b:?} (transpose_b {tb}) with equal inner extents"
            ),
            got: format!("K = {k} for a and {k2} for b"),
        });
    }
    let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let mut out_shape = broadcast_shapes(op, ba, bb)?;
    let batch = numel(&out_shape);
    // One flat batch axis: each operand either spans it (same element count) or is shared.
    let stride = |own: &[usize], matrix: usize| -> Result<usize> {
        match numel(own) {
            1 => Ok(0),
            c if c == batch => Ok(matrix),
            _ => Err(Error::invalid(
                op,
                "batch dims that are equal, or absent (all 1) in one operand",
                format!("a {a:?}, b {b:?}"),
            )),
        }
    };
    let (a_sb, b_sb) = (stride(ba, m * k)?, stride(bb, k * n)?);
    out_shape.extend([m, n]);
    Ok(Plan {
        out_shape,
        batch,
        m,
        n,
        k,
        a_sb,
        b_sb,
    })
}

fn to_u32(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid("matmul_f16", "extents and strides below 2^32", v))
}

/// `op_a(a) · op_b(b)` of two f16 tensors as an f32 tensor, unrecorded.
pub(crate) fn matmul_f16_launch(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    kernel: MatmulF16Kernel,
) -> Result<Tensor> {
    matmul_f16_launch_biased(a, b, ta, tb, kernel, None)
}

/// [`matmul_f16_launch`] plus an f32 bias row `[N]` added to every row of the f32 result: inside
/// the product on the vec4 tiles' plain form, in a broadcast pass after it elsewhere.
pub(crate) fn matmul_f16_launch_biased(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    kernel: MatmulF16Kernel,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let Some(bias) = bias else {
        return matmul_f16_product(a, b, ta, tb, kernel);
    };
    let op = "matmul_f16 (bias)";
    a.check_same_gpu(op, bias)?;
    bias.expect_dtype(op, DType::F32)?;
    let p = plan(a.shape(), b.shape(), ta, tb)?;
    if bias.shape() != [p.n] {
        return Err(Error::shape(op, [p.n], bias.shape()));
    }
    let gpu = a.gpu();
    let vec4_tile = match kernel.effective(gpu)? {
        MatmulF16Kernel::Vec4(tile) if gpu.features().f16 && p.k > 0 => Some(tile),
        _ => None,
    };
    if let Some(tile) = vec4_tile {
        if let Some(form) = matmul_f16_vec4::form(&p, ta, tb, tile).filter(|f| f.takes_bias()) {
            a.check_same_gpu(op, b)?;
            a.expect_dtype(op, DType::F16)?;
            b.expect_dtype(op, DType::F16)?;
            let out = Tensor::uninit(gpu, op, &p.out_shape)?;
            if out.numel() > 0 {
                matmul_f16_vec4::launch((a, ta), (b, tb), &out, &p, form, Some(bias))?;
            }
            return Ok(out);
        }
    }
    add_bias(matmul_f16_product(a, b, ta, tb, kernel)?, Some(bias))
}

/// The product itself, on the kernel `kernel` resolves to on this device.
fn matmul_f16_product(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    kernel: MatmulF16Kernel,
) -> Result<Tensor> {
    let op = "matmul_f16";
    a.check_same_gpu(op, b)?;
    a.expect_dtype(op, DType::F16)?;
    b.expect_dtype(op, DType::F16)?;
    let p = plan(a.shape(), b.shape(), ta, tb)?;
    let gpu = a.gpu();
    let kernel = kernel.effective(gpu)?;
    if !gpu.features().f16 {
        // No SHADER_F16: widen (exact) and run the f32 kernels; same products, same f32 sums.
        let a32 = cast_unrecorded(op, a, DType::F32)?;
        let b32 = cast_unrecorded(op, b, DType::F32)?;
        return matmul_launch(&a32, &b32, ta, tb, MatmulKernel::chosen(gpu)?);
    }
    if p.k == 0 {
        return Tensor::zeros(gpu, &p.out_shape);
    }
    let out = Tensor::uninit(gpu, op, &p.out_shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    // The tiled kernel for this transpose pattern, when the vectorised axes allow it.
    let tiled = match (kernel, ta, tb) {
        (MatmulF16Kernel::Naive, _, _) => None,
        (_, false, false) if p.k % 4 == 0 && p.n % 4 == 0 => Some((&NN, p.k / 4)),
        (_, false, true) if p.k % 4 == 0 => Some((&NT, p.k / 4)),
        (_, true, false) if p.m % 4 == 0 && p.n % 4 == 0 => Some((&TN, p.k)),
        _ => None,
    };
    let (a_sm, a_sk) = if ta { (1, p.m) } else { (p.k, 1) };
    let (b_sk, b_sn) = if tb { (1, p.k) } else { (p.n, 1) };
    let mut params = MatmulF16Params {
        m: to_u32(p.m)?,
        n: to_u32(p.n)?,
        k: to_u32(p.k)?,
        batch: to_u32(p.batch)?,
        a_sb: to_u32(p.a_sb)?,
        b_sb: to_u32(p.b_sb)?,
        a_sm: to_u32(a_sm)?,
        a_sk: to_u32(a_sk)?,
        b_sk: to_u32(b_sk)?,
        b_sn: to_u32(b_sn)?,
        tiles_m: to_u32(p.m.div_ceil(4))?,
        tiles_n: to_u32(p.n.div_ceil(4))?,
        k_chunk: to_u32(p.k)?,
        _pad: [0; 3],
    };
    if let (MatmulF16Kernel::Cooperative, Some(fragment)) =
        (kernel, gpu.features().cooperative_matrix)
    {
        launch_coop(a, b, &out, &p, params, fragment)?;
        return Ok(out);
    }
    if let MatmulF16Kernel::Vec4(tile) = kernel {
        if let Some(form) = matmul_f16_vec4::form(&p, ta, tb, tile) {
            matmul_f16_vec4::launch((a, ta), (b, tb), &out, &p, form, None)?;
            return Ok(out);
        }
    }
    let Some((spec, k_steps)) = tiled else {
        gpu.dispatch_f16_aware(
            &NAIVE,
            &params,
            &[a.buffer(), b.buffer()],
            &[out.buffer()],
            Grid::cover(out.numel() as u64, WORKGROUP as u32),
        )?;
        return Ok(out);
    };
    let tiles = p.batch * p.m.div_ceil(4) * p.n.div_ceil(4);
    let workgroups = tiles.div_ceil(WORKGROUP);
    let splits = split_count_toward(
        split_target_workgroups(gpu),
        workgroups,
        k_steps / MIN_STEPS_PER_SPLIT,
        out.numel(),
    );
    let k_chunk = k_steps.div_ceil(splits).max(1);
    let splits = k_steps.div_ceil(k_chunk).max(1);
    params.k_chunk = to_u32(k_chunk)?;
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    let [x, y, _] = Grid::Linear(workgroups as u64)
        .resolve(max)
        .ok_or(Error::LaunchTooLarge {
            op,
            workgroups: workgroups as u64,
            limit: max as u64,
        })?;
    // Split-K: partial products [splits, batch·M·N], then their f32 sum.
    let partial = if splits > 1 {
        Some(Tensor::uninit(gpu, op, &[splits, out.numel()])?)
    } else {
        None
    };
    gpu.dispatch_f16_aware(
        spec,
        &params,
        &[a.buffer(), b.buffer()],
        &[partial.as_ref().unwrap_or(&out).buffer()],
        Grid::Xyz(x, y, to_u32(splits)?),
    )?;
    if let Some(partial) = partial {
        sum_leading_into(&partial, &out)?;
    }
    Ok(out)
}

/// `op_a(a) · op_b(b)` of two f16 tensors, f32 result, on the device's kernel
/// ([`MatmulF16Kernel::chosen`]); recorded.
pub fn matmul_f16(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
    let kernel = MatmulF16Kernel::chosen(a.gpu())?;
    matmul_f16_with(a, b, transpose_a, transpose_b, kernel)
}

/// [`matmul_f16`] on an explicit kernel (forward and backward both use it).
pub fn matmul_f16_with(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    kernel: MatmulF16Kernel,
) -> Result<Tensor> {
    let out = matmul_f16_launch(a, b, ta, tb, kernel)?;
    let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
    // dA reads B and dB reads A: keep an operand only when the other's gradient is wanted.
    let ac = need_b.then(|| a.detach());
    let bc = need_a.then(|| b.detach());
    let (a_shape, b_shape) = (a.shape().to_vec(), b.shape().to_vec());
    Ok(record(out, "matmul_f16", &[a, b], move |g| {
        let g = cast_unrecorded("matmul_f16 backward", g, DType::F16)?;
        // Sum over broadcast batch dims in f32, then round once to the operand's type.
        let to_operand = |full: Tensor, shape: &[usize]| -> Result<Tensor> {
            let summed = sum_to_shape(&full, shape)?;
            cast_unrecorded("matmul_f16 backward", &summed, DType::F16)
        };
        let ga = match &bc {
            Some(bc) => {
                let full = if !ta {
                    matmul_f16_launch(&g, bc, false, !tb, kernel)?
                } else {
                    matmul_f16_launch(bc, &g, tb, true, kernel)?
                };
                Some(to_operand(full, &a_shape)?)
            }
            None => None,
        };
        let gb = match &ac {
            Some(ac) => Some(to_operand(
                weight_grad(ac, b_shape.len(), &g, ta, tb, kernel)?,
                &b_shape,
            )?),
            None => None,
        };
        Ok(vec![ga, gb])
    }))
}

/// d op_b(B) = op_a(A)ᵀ · G in f32, stored like B (of rank `b_rank`; before the sum over B's
/// broadcast batch).
fn weight_grad(
    a: &Tensor,
    b_rank: usize,
    g: &Tensor,
    ta: bool,
    tb: bool,
    kernel: MatmulF16Kernel,
) -> Result<Tensor> {
    // Shared weight and row-major A: the batch folds into the reduction (one tn launch).
    if !ta && b_rank == 2 && a.rank() > 2 {
        let k = a.shape()[a.rank() - 1];
        let n = g.shape()[g.rank() - 1];
        let rows = a.numel() / k.max(1);
        let a2 = a.reshape(&[rows, k])?;
        let g2 = g.reshape(&[rows, n])?;
        return if !tb {
            matmul_f16_launch(&a2, &g2, true, false, kernel)
        } else {
            matmul_f16_launch(&g2, &a2, true, false, kernel)
        };
    }
    if !tb {
        matmul_f16_launch(a, g, !ta, false, kernel)
    } else {
        matmul_f16_launch(g, a, true, ta, kernel)
    }
}

/// `x · w + bias` as [`crate::ops::linear`], with `x` and `w` rounded to f16 and multiplied
/// with f32 accumulation: the linear layer under autocast. `x` `[..., Cin]` (f32 or f16), `w`
/// `[Cin, Cout]` f32 (the master weight), `bias` `[Cout]` f32 added in f32; output f32
/// `[..., Cout]`.
///
/// One recorded op (not cast → matmul → add) because of what it keeps for backward: the f16
/// copy of `x` only. The f16 copy of `w` is dropped after the forward and made again from the
/// master weight in backward (the same bits: the cast is deterministic and the weight does not
/// change before the optimizer step; the f32 path reads it at backward time the same way), so
/// mixed precision never holds a second copy of the weights; and the output is not kept (the
/// bias add is unrecorded inside). Backward: G (f32) is rounded to f16 once; dX = G·Wᵀ and
/// dW = Xᵀ·G run on the f16 kernels and arrive in f32 (dW is the master weight's gradient; dX
/// is rounded to f16 only when `x` itself was f16); db = Σ_rows G in f32.
pub fn linear_mixed(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let op = "linear_mixed";
    let LinearDims {
        rows,
        cin,
        cout,
        out_shape,
    } = linear_dims(op, "x", x, w, bias)?;
    let kernel = MatmulF16Kernel::chosen(x.gpu())?;
    // x [..., Cin] → [rows, Cin] f16 (a view when x is already f16); y [rows, Cout] f32.
    // The f16 rounding is shared with the other consumers of x that keep one (see
    // `tensor::half_rounding`): a norm's output feeds several linears.
    let x16 = half_rounding(op, x)?.reshape(&[rows, cin])?;
    let y = matmul_f16_launch_biased(
        &x16,
        &cast_unrecorded(op, w, DType::F16)?,
        false,
        false,
        kernel,
        bias,
    )?;
    let y = y.reshape(&out_shape)?;

    let (x_shape, x_dtype) = (x.shape().to_vec(), x.dtype());
    let bias_wanted = bias.map(|b| b.requires_grad());
    let need = (x.requires_grad(), w.requires_grad());
    // dx reads the weight and dw the f16 input: keep each only when the other is wanted.
    let master = need.0.then(|| w.detach());
    let x16 = need.1.then_some(x16);
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    Ok(record(y, op, &inputs, move |g| {
        let back = "linear_mixed backward";
        let g_rows = g.reshape(&[rows, cout])?;
        let g16 = cast_unrecorded(back, &g_rows, DType::F16)?;
        let gx = if let Some(master) = &master {
            let w16 = cast_unrecorded(back, master, DType::F16)?;
            let gx = matmul_f16_launch(&g16, &w16, false, true, kernel)?.reshape(&x_shape)?;
            Some(match x_dtype {
                DType::F32 => gx,
                dtype => cast_unrecorded(back, &gx, dtype)?,
            })
        } else {
            None
        };
        let gw = match &x16 {
            Some(x16) => Some(matmul_f16_launch(x16, &g16, true, false, kernel)?),
            None => None,
        };
        linear_grads(gx, gw, bias_wanted, &g_rows)
    }))
}
