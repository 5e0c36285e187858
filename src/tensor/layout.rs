//! Data movement: permute, slice, concat. All go through one strided region-copy kernel
//! (`shaders/copy.wgsl`), and their backward passes are the inverse movements.

use super::{contiguous_strides, normalize_axis, numel, Tensor};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};

crate::gpu::shader_params! {
    /// Mirrors `CopyParams` in shaders/copy.wgsl.
    pub(crate) struct CopyParams {
        n: u32,
        in_offset: u32,
        out_offset: u32,
        _pad0: u32,
        shape: [u32; 6],
        in_stride: [u32; 6],
        out_stride: [u32; 6],
        _pad1: [u32; 2],
    }
}

pub(crate) const COPY_REGION: KernelSpec = KernelSpec {
    shader: "copy",
    source: include_str!("../../shaders/copy.wgsl"),
    entry: "copy_region",
    inputs: 1,
    outputs: 1,
    params: CopyParams::LAYOUT,
    constants: &[],
};

/// The row form of the copy: lanes along the last axis, the other coordinates workgroup-uniform
/// (no per-lane division: on a CPU adapter each is a scalarised sequence, five per element in
/// the element form). Used when the last axis has at least [`ROW_COPY_MIN`] elements, so a
/// workgroup of 64 lanes is at least half busy.
pub(crate) const COPY_REGION_ROWS: KernelSpec = KernelSpec {
    entry: "copy_region_rows",
    ..COPY_REGION
};
const ROW_COPY_MIN: usize = 32;

/// The row form moving a vec4 per lane, for regions contiguous along the last axis on both
/// sides with every vec4 aligned (see [`copies_vec4s`]).
pub(crate) const COPY_REGION_ROWS4: KernelSpec = KernelSpec {
    entry: "copy_region_rows4",
    ..COPY_REGION
};

/// Whether every row of the region is a run of whole, aligned vec4s on both sides: unit last
/// strides, a last extent, offsets and other strides that are multiples of 4.
fn copies_vec4s(
    in_offset: usize,
    in_strides: &[usize],
    out_offset: usize,
    out_strides: &[usize],
    shape: &[usize],
) -> bool {
    let leading = |s: &[usize]| s.len().saturating_sub(1);
    shape.last().is_some_and(|&x| x.is_multiple_of(4))
        && in_strides.last() == Some(&1)
        && out_strides.last() == Some(&1)
        && in_offset.is_multiple_of(4)
        && out_offset.is_multiple_of(4)
        && in_strides[..leading(in_strides)]
            .iter()
            .chain(&out_strides[..leading(out_strides)])
            .all(|s| s.is_multiple_of(4))
}

/// Kernels index at most this many axes.
pub const MAX_RANK: usize = 6;

/// Right-align a per-axis list into 6 slots, filling leading slots with `fill`.
pub fn rank6(op: &'static str, v: &[usize], fill: usize) -> Result<[u32; MAX_RANK]> {
    if v.len() > MAX_RANK {
        return Err(Error::invalid(op, format!("rank <= {MAX_RANK}"), v.len()));
    }
    let mut out = [fill as u32; MAX_RANK];
    for (i, &x) in v.iter().enumerate() {
        if x > u32::MAX as usize {
            return Err(Error::invalid(op, "extents and strides below 2^32", x));
        }
        out[MAX_RANK - v.len() + i] = x as u32;
    }
    Ok(out)
}

/// Copy the region `shape` from `src` (offset, strides in elements) into `dst` (offset, strides).
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_region(
    op: &'static str,
    src: &Tensor,
    in_offset: usize,
    in_strides: &[usize],
    dst: &Tensor,
    out_offset: usize,
    out_strides: &[usize],
    shape: &[usize],
) -> Result<()> {
    let n = numel(shape);
    if n == 0 {
        return Ok(());
    }
    let params = CopyParams {
        n: n as u32,
        in_offset: in_offset as u32,
        out_offset: out_offset as u32,
        _pad0: 0,
        shape: rank6(op, shape, 1)?,
        in_stride: rank6(op, in_strides, 0)?,
        out_stride: rank6(op, out_strides, 0)?,
        _pad1: [0; 2],
    };
    let inner = shape.last().copied().unwrap_or(1);
    if inner < ROW_COPY_MIN {
        return src.gpu().dispatch(
            &COPY_REGION,
            &params,
            &[src.buffer()],
            &[dst.buffer()],
            Grid::cover(n as u64, 256),
        );
    }
    // One workgroup per (row, block of 64 lanes along the last axis): rows folded over (y, z).
    let rows = n / inner;
    let z = rows.div_ceil(65_535);
    let (spec, per_lane) = if copies_vec4s(in_offset, in_strides, out_offset, out_strides, shape) {
        (&COPY_REGION_ROWS4, 4)
    } else {
        (&COPY_REGION_ROWS, 1)
    };
    src.gpu().dispatch(
        spec,
        &params,
        &[src.buffer()],
        &[dst.buffer()],
        Grid::Xyz(
            inner.div_ceil(64 * per_lane) as u32,
            rows.div_ceil(z) as u32,
            z as u32,
        ),
    )
}

/// [`copy_region`] for a region of any rank: axes of extent 1 are dropped, neighbours that are
/// one run on both sides merged (axis i and i + 1 merge when stride_i = stride_(i+1) · extent_(i+1)
/// in the source and in the destination), and when more than [`MAX_RANK`] axes remain, the
/// leading one is walked on the host, one launch per index. A last axis too short for the row
/// kernels trades places with the longest axis.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_region_any_rank(
    op: &'static str,
    src: &Tensor,
    in_offset: usize,
    in_strides: &[usize],
    dst: &Tensor,
    out_offset: usize,
    out_strides: &[usize],
    shape: &[usize],
) -> Result<()> {
    if in_strides.len() != shape.len() || out_strides.len() != shape.len() {
        return Err(Error::invalid(
            op,
            format!(
                "one source and one destination stride per axis ({})",
                shape.len()
            ),
            format!("{} and {}", in_strides.len(), out_strides.len()),
        ));
    }
    if shape.contains(&0) {
        return Ok(());
    }
    // (extent, source stride, destination stride), unit axes dropped, runs merged.
    let mut axes: Vec<(usize, usize, usize)> = Vec::with_capacity(shape.len());
    for ((&e, &si), &so) in shape.iter().zip(in_strides).zip(out_strides) {
        if e == 1 {
            continue;
        }
        match axes.last_mut() {
            Some(last) if last.1 == si * e && last.2 == so * e => {
                *last = (last.0 * e, si, so);
            }
            _ => axes.push((e, si, so)),
        }
    }
    if axes.is_empty() {
        axes.push((1, 1, 1));
    }
    // The order of a region's axes does not change the copy; the row kernels (lanes along the
    // last axis, any stride) need a long last axis, so a short one trades places with the
    // longest.
    let longest = (0..axes.len()).max_by_key(|&i| axes[i].0).unwrap_or(0);
    if axes[axes.len() - 1].0 < ROW_COPY_MIN && axes[longest].0 >= ROW_COPY_MIN {
        let last = axes.len() - 1;
        axes.swap(longest, last);
    }
    if axes.len() > MAX_RANK {
        let (e, si, so) = axes[0];
        let rest = &axes[1..];
        let (sh, ins, outs): (Vec<usize>, Vec<usize>, Vec<usize>) = (
            rest.iter().map(|a| a.0).collect(),
            rest.iter().map(|a| a.1).collect(),
            rest.iter().map(|a| a.2).collect(),
        );
        for i in 0..e {
            copy_region_any_rank(
                op,
                src,
                in_offset + i * si,
                &ins,
                dst,
                out_offset + i * so,
                &outs,
                &sh,
            )?;
        }
        return Ok(());
    }
    let sh: Vec<usize> = axes.iter().map(|a| a.0).collect();
    let ins: Vec<usize> = axes.iter().map(|a| a.1).collect();
    let outs: Vec<usize> = axes.iter().map(|a| a.2).collect();
    copy_region(op, src, in_offset, &ins, dst, out_offset, &outs, &sh)
}

impl Tensor {
    /// Reorder axes: `out.shape[i] = self.shape[perm[i]]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(
                "permute",
                format!("a permutation of 0..{rank}"),
                format!("{perm:?}"),
            ));
        }
        let in_strides = contiguous_strides(self.shape());
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let gathered: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let out = Tensor::uninit(self.gpu(), "permute", &out_shape)?;
        copy_region(
            "permute",
            self,
            0,
            &gathered,
            &out,
            0,
            &contiguous_strides(&out_shape),
            &out_shape,
        )?;
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(record(out, "permute", &[self], move |g| {
            Ok(vec![Some(g.permute(&inverse)?)])
        }))
    }

    /// Swap the last two axes.
    pub fn transpose_last2(&self) -> Result<Tensor> {
        let r = self.rank();
        if r < 2 {
            return Err(Error::invalid("transpose_last2", "rank >= 2", r));
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(&perm)
    }

    /// The sub-tensor `start..start + len` along `axis`.
    pub fn slice(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let a = normalize_axis("slice", axis, self.rank())?;
        let extent = self.shape()[a];
        if start + len > extent {
            return Err(Error::invalid(
                "slice",
                format!("start + len <= {extent} on axis {a}"),
                format!("start {start}, len {len}"),
            ));
        }
        let strides = contiguous_strides(self.shape());
        let mut out_shape = self.shape().to_vec();
        out_shape[a] = len;
        let out = Tensor::uninit(self.gpu(), "slice", &out_shape)?;
        copy_region(
            "slice",
            self,
            start * strides[a],
            &strides,
            &out,
            0,
            &contiguous_strides(&out_shape),
            &out_shape,
        )?;
        let in_shape = self.shape().to_vec();
        Ok(record(out, "slice", &[self], move |g| {
            // Gradient: zeros of the input shape with g copied into the sliced window.
            let gx = Tensor::zeros(g.gpu(), &in_shape)?;
            let in_strides = contiguous_strides(&in_shape);
            copy_region(
                "slice_backward",
                g,
                0,
                &contiguous_strides(g.shape()),
                &gx,
                start * in_strides[a],
                &in_strides,
                g.shape(),
            )?;
            Ok(vec![Some(gx)])
        }))
    }

    /// Join tensors along `axis`; every other extent must agree.
    pub fn concat(parts: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| Error::invalid("concat", "at least one tensor", 0))?;
        let a = normalize_axis("concat", axis, first.rank())?;
        let mut out_shape = first.shape().to_vec();
        out_shape[a] = 0;
        for p in parts {
            first.check_same_gpu("concat", p)?;
            let mut s = p.shape().to_vec();
            if s.len() != first.rank() {
                return Err(Error::shape("concat", first.shape(), p.shape()));
            }
            out_shape[a] += s[a];
            s[a] = first.shape()[a];
            if s != first.shape() {
                return Err(Error::shape("concat", first.shape(), p.shape()));
            }
        }
        let out = Tensor::uninit(first.gpu(), "concat", &out_shape)?;
        let out_strides = contiguous_strides(&out_shape);
        let mut offset = 0;
        let mut starts = Vec::with_capacity(parts.len());
        for p in parts {
            copy_region(
                "concat",
                p,
                0,
                &contiguous_strides(p.shape()),
                &out,
                offset * out_strides[a],
                &out_strides,
                p.shape(),
            )?;
            starts.push((offset, p.shape()[a]));
            offset += p.shape()[a];
        }
        Ok(record(out, "concat", parts, move |g| {
            starts
                .iter()
                .map(|&(s, len)| g.slice(a as isize, s, len).map(Some))
                .collect()
        }))
    }
}
