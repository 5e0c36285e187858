//! Sum and mean over axes. Kernel: shaders/reduce.wgsl. Reference: src/reference/reduce.rs.
//!
//! Backward of a sum is a broadcast of the output gradient back over the reduced axes (times
//! 1/R for a mean): `g`, reshaped with the reduced axes kept as 1, broadcast-multiplied by a
//! constant tensor of the input shape.

use super::elementwise::{binary_raw, BinaryOp};
use super::shape::rank6;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::{contiguous_strides, normalize_axis, DType, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `ReduceParams` in shaders/reduce.wgsl.
    struct ReduceParams {
        n_out: u32,
        n_red: u32,
        scale: f32,
        /// Reduced elements per workgroup (= n_red when unsplit).
        chunk: u32,
        kept_shape: [u32; 6],
        kept_stride: [u32; 6],
        red_shape: [u32; 6],
        red_stride: [u32; 6],
    }
}

const SUM_AXES: KernelSpec = KernelSpec {
    shader: "reduce",
    source: include_str!("../../shaders/reduce.wgsl"),
    entry: "sum_axes",
    inputs: 1,
    outputs: 1,
    params: ReduceParams::LAYOUT,
    constants: &[],
};

const SUM_AXES_SERIAL: KernelSpec = KernelSpec {
    entry: "sum_axes_serial",
    ..SUM_AXES
};

const SUM_ROWS: KernelSpec = KernelSpec {
    entry: "sum_rows",
    ..SUM_AXES
};

const SUM_ROWS_HALVES: KernelSpec = KernelSpec {
    entry: "sum_rows_halves",
    outputs: 2,
    ..SUM_AXES
};

/// The column sums on vec4s of columns (a lane sums four).
const SUM_ROWS4: KernelSpec = KernelSpec {
    entry: "sum_rows4",
    ..SUM_AXES
};
const SUM_ROWS_HALVES4: KernelSpec = KernelSpec {
    entry: "sum_rows_halves4",
    ..SUM_ROWS_HALVES
};

/// The column sums of f16 values (four columns per lane), in f32.
const SUM_ROWS_X16_4: KernelSpec = KernelSpec {
    entry: "sum_rows_x16_4",
    ..SUM_AXES
};

pub(crate) const KERNELS: &[KernelSpec] = &[
    SUM_AXES,
    SUM_AXES_SERIAL,
    SUM_ROWS,
    SUM_ROWS_HALVES,
    SUM_ROWS4,
    SUM_ROWS_HALVES4,
    SUM_ROWS_X16_4,
];

/// A column-sum kernel and its x extent: the vec4 form (`wide`) when `vec4s` holds, 64 lanes per
/// workgroup either way.
fn column_kernel(
    spec: &'static KernelSpec,
    wide: &'static KernelSpec,
    cols: usize,
    vec4s: bool,
) -> (&'static KernelSpec, u32) {
    if vec4s {
        (wide, cols.div_ceil(256) as u32)
    } else {
        (spec, cols.div_ceil(64) as u32)
    }
}

/// Rows one `sum_rows` invocation adds in order; longer column sums split into partials.
const ROWS_CHUNK: usize = 1024;

/// Reductions of at most this many elements per output run one invocation per output.
const SERIAL_MAX: usize = 128;

/// Launch: sum over `reduced` axes (a mask over x's axes) times `scale`; output keeps the
/// reduced axes with extent 1.
fn reduce_raw(x: &Tensor, reduced: &[bool], scale: f32) -> Result<Tensor> {
    let shape = x.shape();
    let strides = contiguous_strides(shape);
    let kept_shape: Vec<usize> = shape
        .iter()
        .zip(reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let red_shape: Vec<usize> = shape
        .iter()
        .zip(reduced)
        .map(|(&d, &r)| if r { d } else { 1 })
        .collect();
    let kept_stride: Vec<usize> = strides
        .iter()
        .zip(reduced)
        .map(|(&s, &r)| if r { 0 } else { s })
        .collect();
    let red_stride: Vec<usize> = strides
        .iter()
        .zip(reduced)
        .map(|(&s, &r)| if r { s } else { 0 })
        .collect();
    let out = Tensor::uninit(x.gpu(), "sum", &kept_shape)?;
    let n_out = out.numel();
    let n_red: usize = red_shape.iter().product();
    if n_out == 0 {
        return Ok(out);
    }
    if n_red == 0 {
        return Tensor::zeros(x.gpu(), &kept_shape);
    }
    if leading_axes_only(shape, reduced) {
        return sum_rows(x, n_red, n_out, scale)?.reshape(&kept_shape);
    }
    // One workgroup per output; each split sums at least MIN_CHUNK elements, so the second
    // pass stays small and short reductions stay one pass.
    const MIN_CHUNK: usize = 4096;
    let splits = split_count(n_out, n_red / MIN_CHUNK, n_out);
    let chunk = n_red.div_ceil(splits);
    // Every split starts inside the range (chunk >= MIN_CHUNK > splits guarantees it), so every
    // partial is written.
    debug_assert!((splits - 1) * chunk < n_red);
    let params = ReduceParams {
        n_out: n_out as u32,
        n_red: n_red as u32,
        scale: if splits > 1 { 1.0 } else { scale },
        chunk: chunk as u32,
        kept_shape: rank6("sum", &kept_shape, 1)?,
        kept_stride: rank6("sum", &kept_stride, 0)?,
        red_shape: rank6("sum", &red_shape, 1)?,
        red_stride: rank6("sum", &red_stride, 0)?,
    };
    if n_red <= SERIAL_MAX {
        x.gpu().dispatch(
            &SUM_AXES_SERIAL,
            &params,
            &[x.buffer()],
            &[out.buffer()],
            Grid::cover(n_out as u64, 64),
        )?;
        return Ok(out);
    }
    if splits == 1 {
        x.gpu().dispatch(
            &SUM_AXES,
            &params,
            &[x.buffer()],
            &[out.buffer()],
            Grid::Linear(n_out as u64),
        )?;
        return Ok(out);
    }
    // Pass 1: partial sums [splits, n_out]; pass 2: their sum over the splits, times `scale`.
    let partial = Tensor::uninit(x.gpu(), "sum", &[splits, n_out])?;
    x.gpu().dispatch(
        &SUM_AXES,
        &params,
        &[x.buffer()],
        &[partial.buffer()],
        Grid::Linear((n_out * splits) as u64),
    )?;
    reduce_raw(&partial, &[true, false], scale)?.reshape(&kept_shape)
}

/// Whether the reduced axes (ignoring extent-1 axes) all come before the kept ones, so the
/// contiguous input is a [rows, columns] matrix summed over its rows.
fn leading_axes_only(shape: &[usize], reduced: &[bool]) -> bool {
    let mut seen_kept = false;
    for (&d, &r) in shape.iter().zip(reduced) {
        if d == 1 {
            continue;
        }
        if r && seen_kept {
            return false;
        }
        seen_kept |= !r;
    }
    true
}

/// Column sums of x viewed as [rows, cols], times `scale`: lanes over columns (consecutive
/// addresses, no index arithmetic per element; the general kernels split every flat index into
/// six coordinates), each summing up to [`ROWS_CHUNK`] rows in order; longer sums write partials
/// [splits, cols] and sum those the same way.
fn sum_rows(x: &Tensor, rows: usize, cols: usize, scale: f32) -> Result<Tensor> {
    sum_rows_to(x, rows, cols, scale, None)
}

/// [`sum_rows`] whose last pass writes `dst` (of `cols` elements, not aliasing `x`) when given.
fn sum_rows_to(
    x: &Tensor,
    rows: usize,
    cols: usize,
    scale: f32,
    dst: Option<&Tensor>,
) -> Result<Tensor> {
    if rows > ROWS_CHUNK {
        let (partial, splits) = sum_rows_partials(x, rows, cols)?;
        return sum_rows_to(&partial, splits, cols, scale, dst);
    }
    let out = match dst {
        Some(dst) => dst.clone(),
        None => Tensor::uninit(x.gpu(), "sum", &[cols])?,
    };
    let params = rows_params(rows, cols, scale, rows);
    let (spec, x_groups) = column_kernel(&SUM_ROWS, &SUM_ROWS4, cols, cols.is_multiple_of(4));
    x.gpu().dispatch(
        spec,
        &params,
        &[x.buffer()],
        &[out.buffer()],
        Grid::Xyz(x_groups, 1, 1),
    )?;
    out.reshape(&[cols])
}

/// Column sums `[cols]` (f32) of an f16 `x` viewed as `[rows, cols]`, cols % 4 == 0: chunks of
/// up to [`ROWS_CHUNK`] rows summed in f32 in order from the exactly widened values, then
/// [`sum_rows`] over the chunks. The bias gradient of an f16 activation gradient, without an f32
/// copy of it.
pub(crate) fn sum_rows_half(x: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    let op = "sum_rows (f16)";
    x.expect_dtype(op, DType::F16)?;
    if !cols.is_multiple_of(4) || x.numel() != rows * cols {
        return Err(Error::invalid(
            op,
            format!("[{rows}, {cols}] values with cols % 4 == 0"),
            format!("{:?}", x.shape()),
        ));
    }
    if rows == 0 {
        return Tensor::zeros(x.gpu(), &[cols]);
    }
    let splits = rows.div_ceil(ROWS_CHUNK);
    let chunk = rows.div_ceil(splits);
    let splits = rows.div_ceil(chunk);
    let partial = Tensor::uninit(x.gpu(), op, &[splits, cols])?;
    x.gpu().dispatch_f16_aware(
        &SUM_ROWS_X16_4,
        &rows_params(rows, cols, 1.0, chunk),
        &[x.buffer()],
        &[partial.buffer()],
        Grid::Xyz(cols.div_ceil(256) as u32, splits as u32, 1),
    )?;
    if splits == 1 {
        return partial.reshape(&[cols]);
    }
    sum_rows(&partial, splits, cols, 1.0)
}

/// One split pass of [`sum_rows`] over more than [`ROWS_CHUNK`] rows: partial column sums
/// `[splits, cols]` of consecutive chunks of rows, and `splits`.
fn sum_rows_partials(x: &Tensor, rows: usize, cols: usize) -> Result<(Tensor, usize)> {
    let splits = rows.div_ceil(ROWS_CHUNK);
    let chunk = rows.div_ceil(splits);
    let splits = rows.div_ceil(chunk);
    let partial = Tensor::uninit(x.gpu(), "sum", &[splits, cols])?;
    let (spec, x_groups) = column_kernel(&SUM_ROWS, &SUM_ROWS4, cols, cols.is_multiple_of(4));
    x.gpu().dispatch(
        spec,
        &rows_params(rows, cols, 1.0, chunk),
        &[x.buffer()],
        &[partial.buffer()],
        Grid::Xyz(x_groups, splits as u32, 1),
    )?;
    Ok((partial, splits))
}

fn rows_params(rows: usize, cols: usize, scale: f32, chunk: usize) -> ReduceParams {
    ReduceParams {
        n_out: cols as u32,
        n_red: rows as u32,
        scale,
        chunk: chunk as u32,
        kept_shape: [1; 6],
        kept_stride: [0; 6],
        red_shape: [1; 6],
        red_stride: [0; 6],
    }
}

/// Column sums of `x` viewed as `[rows, 2·half]`, returned as two `[half]` tensors: columns
/// `0..half` and `half..2·half`. A norm's backward stacks its two parameter-gradient partials as
/// `[blocks, 2, C]`; this sums them straight into gγ and gβ in one launch (after a split pass
/// when there are more than [`ROWS_CHUNK`] blocks) instead of a sum and two slice copies.
pub(crate) fn sum_rows_halves(x: &Tensor, rows: usize, half: usize) -> Result<(Tensor, Tensor)> {
    let cols = 2 * half;
    if rows * cols != x.numel() {
        return Err(Error::shape(
            "sum_rows_halves",
            format!("[{rows}, {cols}] ({} elements)", rows * cols),
            x.shape(),
        ));
    }
    if rows == 0 || half == 0 {
        return Ok((
            Tensor::zeros(x.gpu(), &[half])?,
            Tensor::zeros(x.gpu(), &[half])?,
        ));
    }
    if rows > ROWS_CHUNK {
        let (partial, splits) = sum_rows_partials(x, rows, cols)?;
        return sum_rows_halves(&partial, splits, half);
    }
    let lo = Tensor::uninit(x.gpu(), "sum", &[half])?;
    let hi = Tensor::uninit(x.gpu(), "sum", &[half])?;
    let (spec, x_groups) = column_kernel(
        &SUM_ROWS_HALVES,
        &SUM_ROWS_HALVES4,
        cols,
        half.is_multiple_of(4),
    );
    x.gpu().dispatch(
        spec,
        &rows_params(rows, cols, 1.0, rows),
        &[x.buffer()],
        &[lo.buffer(), hi.buffer()],
        Grid::Xyz(x_groups, 1, 1),
    )?;
    Ok((lo, hi))
}

/// Split-K / split-reduction count shared by every launcher that cuts a long reduction across
/// workgroups and sums the partials with [`sum_leading_into`]: enough splits to give the device
/// about `SPLIT_TARGET_WORKGROUPS` workgroups when the output alone gives `workgroups`, at most
/// `max_splits` (each split must keep a useful length), and partials (`splits × outputs`) under
/// 16 Mi floats. 1 means no split.
pub(crate) fn split_count(workgroups: usize, max_splits: usize, outputs: usize) -> usize {
    const SPLIT_TARGET_WORKGROUPS: usize = 1024;
    split_count_toward(SPLIT_TARGET_WORKGROUPS, workgroups, max_splits, outputs)
}

/// [`split_count`] aiming at `target_workgroups` instead (a launcher that knows its adapter).
pub(crate) fn split_count_toward(
    target_workgroups: usize,
    workgroups: usize,
    max_splits: usize,
    outputs: usize,
) -> usize {
    target_workgroups
        .div_ceil(workgroups.max(1))
        .min(max_splits)
        .min((16 << 20) / outputs.max(1))
        .max(1)
}

/// Sum over the leading axis of `partial` (`[S, ...]`) into `out` (any shape of the same
/// element count), unrecorded: the split launchers' last pass writes their output directly
/// instead of summing into a temporary and copying it over.
pub(crate) fn sum_leading_into(partial: &Tensor, out: &Tensor) -> Result<()> {
    let rows = partial.shape().first().copied().unwrap_or(1);
    let cols = out.numel();
    if rows == 0 || rows * cols != partial.numel() {
        return Err(Error::shape(
            "sum_leading_into",
            format!("[S, ...] with S >= 1 and {cols} elements per row"),
            partial.shape(),
        ));
    }
    if cols == 0 {
        return Ok(());
    }
    sum_rows_to(partial, rows, cols, 1.0, Some(out)).map(drop)
}

/// Broadcast `g` (shape with reduced axes = 1) to `shape`, times `scale`.
fn expand_raw(g: &Tensor, shape: &[usize], scale: f32) -> Result<Tensor> {
    let s = Tensor::full(g.gpu(), shape, scale)?;
    binary_raw(BinaryOp::Mul, &s, g)
}

fn axes_mask(op: &'static str, rank: usize, axes: &[isize]) -> Result<Vec<bool>> {
    let mut mask = vec![false; rank];
    for &a in axes {
        let a = normalize_axis(op, a, rank)?;
        if mask[a] {
            return Err(Error::invalid(op, "each axis once", format!("{axes:?}")));
        }
        mask[a] = true;
    }
    Ok(mask)
}

fn reduce(
    op: &'static str,
    x: &Tensor,
    axes: &[isize],
    keepdim: bool,
    mean: bool,
) -> Result<Tensor> {
    let mask = axes_mask(op, x.rank(), axes)?;
    let r: usize = x
        .shape()
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m)
        .map(|(&d, _)| d)
        .product();
    let scale = if mean {
        if r == 0 {
            return Err(Error::invalid(
                op,
                "a non-empty reduction for a mean",
                "0 elements",
            ));
        }
        1.0 / r as f32
    } else {
        1.0
    };
    let kept = reduce_raw(x, &mask, scale)?;
    let kept_shape = kept.shape().to_vec();
    let out_shape: Vec<usize> = if keepdim {
        kept_shape.clone()
    } else {
        x.shape()
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| !m)
            .map(|(&d, _)| d)
            .collect()
    };
    let out = kept.reshape(&out_shape)?;
    let in_shape = x.shape().to_vec();
    Ok(record(out, op, &[x], move |g| {
        let g = g.reshape(&kept_shape)?;
        Ok(vec![Some(expand_raw(&g, &in_shape, scale)?)])
    }))
}

/// Sum over `axes` (negative axes count from the end).
pub fn sum(x: &Tensor, axes: &[isize], keepdim: bool) -> Result<Tensor> {
    reduce("sum", x, axes, keepdim, false)
}

/// Mean over `axes`.
pub fn mean(x: &Tensor, axes: &[isize], keepdim: bool) -> Result<Tensor> {
    reduce("mean", x, axes, keepdim, true)
}

/// Sum of every element, shape `[1]`.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    sum(&x.reshape(&[x.numel()])?, &[0], true)
}

/// Mean of every element, shape `[1]`.
pub fn mean_all(x: &Tensor) -> Result<Tensor> {
    mean(&x.reshape(&[x.numel()])?, &[0], true)
}

/// Sum `g` over the axes along which `shape` was broadcast to `g.shape()`, giving `shape`.
/// Not recorded (used inside backward closures).
pub(crate) fn sum_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let rank = g.rank();
    if shape.len() > rank {
        return Err(Error::shape("sum_to_shape", g.shape(), shape));
    }
    let off = rank - shape.len();
    let mask: Vec<bool> = (0..rank)
        .map(|i| i < off || (shape[i - off] == 1 && g.shape()[i] != 1))
        .collect();
    let summed = reduce_raw(g, &mask, 1.0)?;
    summed.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::{sum_rows_halves, ROWS_CHUNK};
    use crate::util::{compare, Rng, F32_ACCUM};
    use crate::Tensor;

    /// Both halves against f64 column sums, with one pass (rows ≤ ROWS_CHUNK) and with a split
    /// pass first, on halves that are and are not multiples of 4 (the vec4 kernels) and of the
    /// 64-lane workgroup.
    #[test]
    fn halves_are_the_column_sums_of_each_half() {
        let gpu = crate::gpu::unit_test_gpu();
        let mut rng = Rng::new(5);
        for (rows, half) in [
            (1, 3),
            (37, 40),
            (37, 300),
            (ROWS_CHUNK * 2 + 5, 33),
            (ROWS_CHUNK + 1, 36),
        ] {
            let data = rng.vec_uniform(rows * 2 * half, -1.0, 1.0);
            let x = Tensor::from_slice(&gpu, &data, &[rows, 2, half]).unwrap();
            let (lo, hi) = sum_rows_halves(&x, rows, half).unwrap();
            assert_eq!(
                (lo.shape(), hi.shape()),
                ([half].as_slice(), [half].as_slice())
            );
            for (h, got) in [lo, hi].iter().enumerate() {
                let want: Vec<f64> = (0..half)
                    .map(|c| {
                        (0..rows)
                            .map(|r| data[(2 * r + h) * half + c] as f64)
                            .sum::<f64>()
                    })
                    .collect();
                let got: Vec<f64> = got.to_vec().unwrap().iter().map(|&v| v as f64).collect();
                let what = format!("rows {rows} half {h} of {half}");
                compare(&what, &got, &want, F32_ACCUM).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let x = Tensor::zeros(&gpu, &[4, 6]).unwrap();
        assert!(sum_rows_halves(&x, 4, 2).is_err(), "4 × 6 is not 4 × 2·2");
    }
}
