//! Launching one matmul (no recording): the kernel's form for the transposes, the bias inside
//! the product or after it, K padded for the vec4 tiles, B packed in column panels, A's rows by
//! subgroup broadcasts, the grid and split-K. The recorded ops are in src/ops/matmul.rs.

use super::elementwise::binary_raw;
use super::elementwise::BinaryOp;
use super::matmul_kernel::{MatmulKernel, TILE_WORKGROUP};
use super::matmul_pack_b::{pack_b, PackB};
use super::matmul_plan::plan;
use super::matmul_subgroup_a;
use super::matmul_tiled;
use super::reduce::{split_count_toward, sum_leading_into};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Grid, KernelSpec};
use crate::tensor::{contiguous_strides, copy_region_any_rank, numel, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `MatmulParams` in shaders/matmul.wgsl.
    #[derive(Debug)]
    pub(crate) struct MatmulParams {
        pub(super) m: u32,
        pub(super) n: u32,
        pub(super) k: u32,
        pub(super) row_blocks: u32,
        pub(super) batch: u32,
        pub(super) batch_inner: u32,
        /// Vec4 kernels: K/4 per split-K split, and column blocks per split (ignored by the others).
        pub(super) k_chunk4: u32,
        pub(super) col_blocks: u32,
        pub(super) a_sm: u32,
        pub(super) a_sk: u32,
        pub(super) b_sk: u32,
        pub(super) b_sn: u32,
        pub(super) a_sb_outer: u32,
        pub(super) a_sb_inner: u32,
        pub(super) b_sb_outer: u32,
        pub(super) b_sb_inner: u32,
    }
}

/// Split-K aims at this many workgroups on CPU adapters: a handful per core keeps every thread
/// busy, more only adds partial sums (aiming at 1024 cost the tall tiles ~25% on lavapipe).
const CPU_SPLIT_TARGET_WORKGROUPS: usize = 64;
/// ... and on GPUs, which need thousands of invocations in flight.
const GPU_SPLIT_TARGET_WORKGROUPS: usize = 1024;

/// The workgroups a split-K register-tile launch (f32 and f16) aims at on `gpu`'s adapter.
pub(crate) fn split_target_workgroups(gpu: &Gpu) -> usize {
    if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
        CPU_SPLIT_TARGET_WORKGROUPS
    } else {
        GPU_SPLIT_TARGET_WORKGROUPS
    }
}

fn to_u32(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid("matmul", "extents and strides below 2^32", v))
}

/// Launch only (no recording).
pub(crate) fn matmul_launch(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    kernel: MatmulKernel,
) -> Result<Tensor> {
    matmul_launch_biased(a, b, ta, tb, kernel, None)
}

/// `op_a(a) · op_b(b) + 1·biasᵀ` (bias `[N]` added to every row), launch only. The vec4 tiles'
/// plain forms add the bias as their accumulators' start (`_bias` entries); every other kernel
/// adds it in a broadcast pass after the product.
pub(crate) fn matmul_launch_biased(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    kernel: MatmulKernel,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    a.check_same_gpu("matmul", b)?;
    let p = plan(a.shape(), b.shape(), ta, tb)?;
    if let Some(bias) = bias {
        a.check_same_gpu("matmul", bias)?;
        if bias.shape() != [p.n] {
            return Err(Error::shape("matmul (bias)", [p.n], bias.shape()));
        }
    }
    let on_device = kernel.runs_as(a.gpu());
    if on_device != kernel {
        return matmul_launch_biased(a, b, ta, tb, on_device, bias);
    }
    if let MatmulKernel::Vec4 { .. } = kernel {
        if pads_k(p.outer * p.inner, (p.m, p.k, p.n)) {
            // K past a multiple of 4 (a weight gradient over a token count such as the DINO
            // head's): zero rows appended to both operands' K axis leave the product unchanged
            // and let the vec4 tiles run it instead of the scalar 4 × 4 tile.
            let k4 = p.k.next_multiple_of(4);
            let a = pad_axis(&a.detach(), if ta { 2 } else { 1 }, k4)?;
            let b = pad_axis(&b.detach(), if tb { 1 } else { 2 }, k4)?;
            return matmul_launch_biased(&a, &b, ta, tb, kernel, bias);
        }
        if p.k % 4 != 0 || p.n % 4 != 0 || p.k == 0 {
            let tile = MatmulKernel::Tile { rows: 4, cols: 4 };
            return matmul_launch_biased(a, b, ta, tb, tile, bias);
        }
        let short = kernel.for_rows(p.m);
        if short != kernel {
            return matmul_launch_biased(a, b, ta, tb, short, bias);
        }
        let narrow = kernel.for_columns(p.n);
        if narrow != kernel {
            return matmul_launch_biased(a, b, ta, tb, narrow, bias);
        }
        // A transposed A (a weight gradient's activation) is read in place by the tile's
        // `_ta` form when M % 4 == 0, a transposed B (an input gradient's weight) by its `_tb`
        // form; a tile reads at most one operand transposed, so any other transposed operand
        // is first copied row-major (unrecorded: the inputs are detached) so every load is a
        // vec4. Of two transposed operands B is copied (the weight, usually the smaller).
        let native_ta = ta && p.m % 4 == 0 && kernel.spec_ta().is_some();
        if ta && !native_ta {
            let a = a.detach().transpose_last2()?;
            return matmul_launch_biased(&a, b, false, tb, kernel, bias);
        }
        if tb && (ta || kernel.spec_tb().is_none()) {
            let b = b.detach().transpose_last2()?;
            return matmul_launch_biased(a, &b, ta, false, kernel, bias);
        }
    }
    let gpu = a.gpu();
    let batch = p.outer * p.inner;
    if p.k == 0 {
        return add_bias(Tensor::zeros(gpu, &p.out_shape)?, bias);
    }
    if let MatmulKernel::Shared(tile) = kernel {
        let product = matmul_tiled::Product {
            out_shape: &p.out_shape,
            m: p.m,
            n: p.n,
            k: p.k,
            outer: p.outer,
            inner: p.inner,
            a_strides: [p.a_sm, p.a_sk, p.a_sb[0], p.a_sb[1]],
            b_strides: [p.b_sk, p.b_sn, p.b_sb[0], p.b_sb[1]],
        };
        return add_bias(matmul_tiled::launch(a, b, &product, tile)?, bias);
    }
    let out = Tensor::uninit(gpu, "matmul", &p.out_shape)?;
    if numel(&p.out_shape) == 0 {
        return Ok(out);
    }
    let (rows, col_blocks, row_groups) = match kernel {
        // (Shared tiles launched above, src/ops/matmul_tiled.rs.)
        MatmulKernel::Naive | MatmulKernel::Shared(_) => (1, 1, 0),
        MatmulKernel::Tile { rows, cols } => {
            let col_blocks = p.n.div_ceil((TILE_WORKGROUP * cols) as usize);
            (rows, col_blocks, p.m.div_ceil(rows as usize) * batch)
        }
        MatmulKernel::Vec4 {
            rows, cols, lanes, ..
        } => {
            // A vec4 invocation covers `cols` columns as cols/4 groups spaced a workgroup apart
            // (one vec2 group when `cols` is 2).
            let col_blocks = p.n.div_ceil((lanes * cols) as usize);
            (rows, col_blocks, p.m.div_ceil(rows as usize) * batch)
        }
    };
    let splits = match kernel {
        // Split-K when the output has few tiles (a weight gradient Aᵀ·G over 10⁵ tokens has
        // 16–32), each split at least 64 vec4 steps of K.
        MatmulKernel::Vec4 { .. } => split_count_toward(
            split_target_workgroups(gpu),
            row_groups * col_blocks,
            p.k / 4 / 64,
            out.numel(),
        ),
        _ => 1,
    };
    let k_chunk4 = (p.k / 4).div_ceil(splits).max(1);
    let splits = (p.k / 4).div_ceil(k_chunk4).max(1);
    let grid = match kernel {
        MatmulKernel::Naive => Grid::cover((batch * p.m * p.n) as u64, 64),
        _ => {
            let max = gpu.limits().max_compute_workgroups_per_dimension;
            let lin = row_groups as u64;
            let [x, y, _] = Grid::Linear(lin)
                .resolve(max)
                .ok_or(Error::LaunchTooLarge {
                    op: "matmul",
                    workgroups: lin,
                    limit: max as u64,
                })?;
            Grid::Xyz(x, y, to_u32(col_blocks * splits)?)
        }
    };
    let packed_form = packed_b_form(gpu, kernel, (ta, tb), bias.is_some(), (p.m, p.k, p.n))?;
    let packed_b = match packed_form {
        Some((_, panel4)) => pack_b(b, b.numel() / (p.k * p.n), p.k, p.n, panel4)?,
        None => None,
    };
    // B's batch strides in the buffer the product reads (a packed matrix is longer).
    let b_sb = match &packed_b {
        Some((_, per_matrix)) => p.b_sb.map(|s| s / (p.k * p.n) * per_matrix),
        None => p.b_sb,
    };
    let params = MatmulParams {
        m: to_u32(p.m)?,
        n: to_u32(p.n)?,
        k: to_u32(p.k)?,
        row_blocks: to_u32(p.m.div_ceil(rows as usize))?,
        batch: to_u32(batch)?,
        batch_inner: to_u32(p.inner)?,
        k_chunk4: to_u32(k_chunk4)?,
        col_blocks: to_u32(col_blocks)?,
        a_sm: to_u32(p.a_sm)?,
        a_sk: to_u32(p.a_sk)?,
        b_sk: to_u32(p.b_sk)?,
        b_sn: to_u32(p.b_sn)?,
        a_sb_outer: to_u32(p.a_sb[0])?,
        a_sb_inner: to_u32(p.a_sb[1])?,
        b_sb_outer: to_u32(b_sb[0])?,
        b_sb_inner: to_u32(b_sb[1])?,
    };
    // Split-K: partial products [splits, batch·M·N], then their sum.
    let partial = if splits > 1 {
        Some(Tensor::uninit(gpu, "matmul", &[splits, out.numel()])?)
    } else {
        None
    };
    // Only the vec4 tiles' `_ta` and `_tb` forms reach here with a transpose among the vec4
    // kernels (above).
    let spec = match (kernel, ta, tb) {
        (MatmulKernel::Vec4 { .. }, true, false) => kernel.spec_ta().ok_or_else(|| {
            Error::invalid(
                "matmul",
                "a vec4 tile with a transposed-A form",
                kernel.name(),
            )
        })?,
        (MatmulKernel::Vec4 { .. }, false, true) => kernel.spec_tb().ok_or_else(|| {
            Error::invalid(
                "matmul",
                "a vec4 tile with a transposed-B form",
                kernel.name(),
            )
        })?,
        _ => kernel.spec()?,
    };
    // The plain vec4 forms take the bias into the product (split 0's accumulators start at it).
    let fused = match (kernel, ta, tb, bias) {
        (MatmulKernel::Vec4 { .. }, false, false, Some(bias)) => {
            kernel.spec_bias().map(|spec| (spec, bias))
        }
        _ => None,
    };
    let target = [partial.as_ref().unwrap_or(&out).buffer()];
    // The tall tiles' entries run as their `_sga` twins where the device broadcasts A's rows
    // between lanes faster than it loads them (src/ops/matmul_subgroup_a.rs).
    if let (Some((form, _)), Some((packed, _))) = (packed_form, &packed_b) {
        let mut inputs = vec![a.buffer(), packed.buffer()];
        inputs.extend(bias.map(Tensor::buffer));
        let form = matmul_subgroup_a::runs(gpu, form)?;
        gpu.dispatch(form, &params, &inputs, &target, grid)?;
        if let Some(partial) = partial {
            sum_leading_into(&partial, &out)?;
        }
        return Ok(out);
    }
    match fused {
        Some((spec, bias)) => gpu.dispatch(
            matmul_subgroup_a::runs(gpu, spec)?,
            &params,
            &[a.buffer(), b.buffer(), bias.buffer()],
            &target,
            grid,
        )?,
        None => gpu.dispatch(
            matmul_subgroup_a::runs(gpu, spec)?,
            &params,
            &[a.buffer(), b.buffer()],
            &target,
            grid,
        )?,
    }
    if let Some(partial) = partial {
        sum_leading_into(&partial, &out)?;
    }
    match fused {
        Some(_) => Ok(out),
        None => add_bias(out, bias),
    }
}

/// Products of at least this many multiply-adds with K % 4 ≠ 0 pad K to run on the vec4 tiles
/// (two copies of the operands); smaller ones take the scalar tile, whose whole run costs less
/// than the copies' launches.
const PAD_K_MIN_PRODUCT: usize = 1 << 22;

/// Whether a vec4 tile runs a `batch` of M × K × N products on operands padded to K % 4 == 0
/// (K not a multiple of 4, N a multiple of 4, at least [`PAD_K_MIN_PRODUCT`] multiply-adds).
pub(crate) fn pads_k(batch: usize, (m, k, n): (usize, usize, usize)) -> bool {
    k % 4 != 0 && n % 4 == 0 && batch * m * n * k >= PAD_K_MIN_PRODUCT
}

/// `t` with its axis `from_end` (1: the last, 2: the one before) grown to `to` by zeros.
fn pad_axis(t: &Tensor, from_end: usize, to: usize) -> Result<Tensor> {
    let shape = t.shape();
    let axis = shape.len() - from_end;
    let mut padded = shape.to_vec();
    padded[axis] = to;
    let out = Tensor::zeros(t.gpu(), &padded)?;
    copy_region_any_rank(
        "matmul (K padding)",
        t,
        0,
        &contiguous_strides(shape),
        &out,
        0,
        &contiguous_strides(&padded),
        shape,
    )?;
    Ok(out)
}

/// The `pb_` form (plain or `_bias`) and its panel width in vec4 groups when a launch of `kernel`
/// on an M × K × N product packs B first: the tall tiles' forms read a row-major B packed in
/// column panels (src/ops/matmul_pack_b.rs) where this context's policy says so.
pub(crate) fn packed_b_form(
    gpu: &Gpu,
    kernel: MatmulKernel,
    (ta, tb): (bool, bool),
    bias: bool,
    (m, k, n): (usize, usize, usize),
) -> Result<Option<(&'static KernelSpec, usize)>> {
    if ta || tb {
        return Ok(None);
    }
    match kernel.spec_packed_b(bias) {
        Some(form) if PackB::on(gpu)?.packs(m, k, n) => Ok(Some(form)),
        _ => Ok(None),
    }
}

/// `y + 1·biasᵀ` as its own broadcast pass (unrecorded), or `y` without a bias.
pub(crate) fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(bias) => binary_raw(BinaryOp::Add, &y, bias),
        None => Ok(y),
    }
}
