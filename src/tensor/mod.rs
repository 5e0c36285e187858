//! GPU tensors: a buffer from the pool, a shape and an element type. No autograd logic lives here
//! beyond carrying the tape node (`autograd` owns the semantics).
//!
//! Element types ([`DType`]): f32 everywhere, and f16 for mixed precision: an f16 tensor stores
//! two elements per 4-byte word (src/tensor/cast.rs has the layout), is made by
//! [`Tensor::to_dtype`] or [`Tensor::from_f16_slice`], and is read by the few kernels written for
//! it (the casts, the f16 matmul). Every other op refuses it with [`Error::DTypeMismatch`] when
//! it binds its buffers (src/gpu/recorder.rs), so no f32 kernel ever misreads half data.
//!
//! `tensor` and `autograd` are ONE layer (see the crate docs, Layers): a tensor carries its tape
//! node and the tape holds tensors, so they import each other, and nothing else above `gpu`. The
//! arithmetic they need themselves — `Tensor::full` and the gradient sum — is this module's own
//! unrecorded fill/add (`arith.rs`), not `ops`.
//!
//! Tensors are always contiguous row-major; `reshape` shares the buffer, `permute`, `slice` and
//! `concat` copy (see `layout.rs`). A tensor is immutable once built, except through the explicit
//! in-place methods used by optimizers (`assign`).

mod arith;
mod cast;
mod layout;
mod saved;
pub(crate) use arith::add_unrecorded;
pub(crate) use cast::{add_half_unrecorded, cast_unrecorded};
pub(crate) use layout::{copy_region, copy_region_any_rank};
pub use layout::{rank6, MAX_RANK};
pub(crate) use saved::{half_rounding, Saved};

use crate::gpu::KernelSpec;

/// The tensor layer's kernels: the region copy and the unrecorded fill/add.
pub(crate) const KERNELS: &[KernelSpec] = &[
    layout::COPY_REGION,
    layout::COPY_REGION_ROWS,
    layout::COPY_REGION_ROWS4,
    arith::FILL_SPEC,
    arith::ADD_SPEC,
    arith::FILL4_SPEC,
    arith::ADD4_SPEC,
    cast::TO_F16,
    cast::TO_F32,
    cast::TO_F16_X4,
    cast::TO_F32_X4,
    cast::TO_F16_X8,
    cast::TO_F32_X8,
    cast::ADD_F16,
];

use std::sync::Arc;

use crate::autograd::Node;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, PooledBuffer};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32, the type of every op.
    #[default]
    F32,
    /// IEEE binary16 (11-bit significand, largest finite 65504): mixed-precision operands.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
    /// Bytes of `numel` elements as stored: rounded up to whole 4-byte words (an f16 tensor of
    /// odd length has a zero half at the end), the unit of copies and of the kernels' loads.
    pub fn storage_bytes(self, op: &'static str, numel: usize) -> Result<u64> {
        let bytes = crate::util::size::checked_bytes(op, numel, self.size_bytes())?;
        Ok(bytes.next_multiple_of(4))
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) struct TensorInner {
    pub gpu: Gpu,
    pub storage: Arc<PooledBuffer>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub id: u64,
    /// A leaf that gradients are wanted for (parameters, or inputs the user marks).
    pub requires_grad: bool,
    /// The tape node that produced this tensor, if it was recorded.
    pub node: Option<Arc<Node>>,
}

/// A tensor on one device (f32, or f16 for mixed precision). Cloning is cheap (shares the buffer
/// and the tape node).
#[derive(Clone)]
pub struct Tensor {
    pub(crate) inner: Arc<TensorInner>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(id {}, shape {:?}, {}, grad {})",
            self.inner.id,
            self.inner.shape,
            self.inner.dtype,
            self.requires_grad()
        )
    }
}

/// A tensor's values on their way to the host ([`Tensor::to_vec_async`]).
#[derive(Debug)]
pub struct PendingValues {
    read: crate::gpu::PendingRead,
    dtype: DType,
    numel: usize,
}

impl PendingValues {
    /// Whether the values have landed (one non-blocking device poll).
    pub fn ready(&self) -> Result<bool> {
        self.read.ready()
    }
    /// The values (blocks only if they have not landed yet), f16 ones widened exactly.
    pub fn wait(self) -> Result<Vec<f32>> {
        Ok(values_from_bytes(
            &self.read.wait()?,
            self.dtype,
            self.numel,
        ))
    }
}

/// Host f32 values of `numel` elements stored as `dtype` in `bytes` (f16 widened exactly).
fn values_from_bytes(bytes: &[u8], dtype: DType, numel: usize) -> Vec<f32> {
    match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec(bytes),
        DType::F16 => {
            let halves: Vec<half::f16> = bytemuck::pod_collect_to_vec(bytes);
            halves[..numel].iter().map(|h| h.to_f32()).collect()
        }
    }
}

/// Number of elements of a shape, saturating at `usize::MAX` instead of wrapping: a wrapped
/// product (`[1 << 32, 1 << 32]` → 0 in release builds) would pass every later size check.
/// Allocation paths use [`crate::util::size::checked_numel`] for a typed error.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

impl Tensor {
    /// An f32 tensor with uninitialised contents (op outputs that a kernel fully overwrites).
    pub(crate) fn uninit(gpu: &Gpu, op: &'static str, shape: &[usize]) -> Result<Tensor> {
        Tensor::uninit_dtype(gpu, op, shape, DType::F32)
    }

    /// [`Tensor::uninit`] of any element type (f16 storage is tagged in the pool, see the
    /// module docs).
    pub(crate) fn uninit_dtype(
        gpu: &Gpu,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let n = crate::util::size::checked_numel(op, shape)?;
        let bytes = dtype.storage_bytes(op, n)?;
        gpu.check_bytes(op, bytes)?;
        if n > u32::MAX as usize {
            return Err(Error::invalid(op, "at most 2^32-1 elements", n));
        }
        let storage = Arc::new(match dtype {
            DType::F32 => gpu.pool().take(bytes),
            DType::F16 => gpu.pool().take_half(bytes),
        });
        Ok(Tensor {
            inner: Arc::new(TensorInner {
                gpu: gpu.clone(),
                storage,
                shape: shape.to_vec(),
                dtype,
                id: gpu.next_id(),
                requires_grad: false,
                node: None,
            }),
        })
    }

    /// Upload host data.
    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            return Err(Error::shape(
                "Tensor::from_slice",
                format!("{} values for shape {shape:?}", numel(shape)),
                format!("{} values", data.len()),
            ));
        }
        let t = Tensor::uninit(gpu, "Tensor::from_slice", shape)?;
        gpu.write_bytes("Tensor::from_slice", t.buffer(), bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// Upload f16 host data as an f16 tensor.
    pub fn from_f16_slice(gpu: &Gpu, data: &[half::f16], shape: &[usize]) -> Result<Tensor> {
        let op = "Tensor::from_f16_slice";
        if numel(shape) != data.len() {
            return Err(Error::shape(
                op,
                format!("{} values for shape {shape:?}", numel(shape)),
                format!("{} values", data.len()),
            ));
        }
        let t = Tensor::uninit_dtype(gpu, op, shape, DType::F16)?;
        // An odd count leaves the last word's high half to write_bytes, which pads it with 0.
        gpu.write_bytes(op, t.buffer(), bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// All zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::uninit(gpu, "Tensor::zeros", shape)?;
        let bytes = (t.numel() as u64 * 4).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        if bytes > 0 {
            gpu.encode(|enc| enc.clear_buffer(t.buffer(), 0, Some(bytes)))?;
        }
        Ok(t)
    }

    /// Every element equal to `value`.
    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor> {
        arith::fill(gpu, shape, value)
    }

    /// A leaf parameter: gradients are collected for it by `backward`.
    pub fn parameter(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(gpu, data, shape)?.requires_grad_(true))
    }

    /// The same data as a leaf with `requires_grad` set (or cleared). Drops any tape node.
    pub fn requires_grad_(self, requires: bool) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                gpu: self.inner.gpu.clone(),
                storage: self.inner.storage.clone(),
                shape: self.inner.shape.clone(),
                dtype: self.inner.dtype,
                id: self.inner.id,
                requires_grad: requires,
                node: None,
            }),
        }
    }

    /// The same data, cut from the tape: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                gpu: self.inner.gpu.clone(),
                storage: self.inner.storage.clone(),
                shape: self.inner.shape.clone(),
                dtype: self.inner.dtype,
                id: self.inner.gpu.next_id(),
                requires_grad: false,
                node: None,
            }),
        }
    }

    /// Copy to the host (waits for pending work). f16 values are widened to f32 exactly.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let op = "Tensor::to_vec";
        let bytes = self
            .inner
            .gpu
            .read_bytes(op, self.buffer(), self.storage_bytes(op)?)?;
        Ok(values_from_bytes(&bytes, self.dtype(), self.numel()))
    }

    /// The f16 values of an f16 tensor, as stored (waits for pending work).
    pub fn to_f16_vec(&self) -> Result<Vec<half::f16>> {
        let op = "Tensor::to_f16_vec";
        self.expect_dtype(op, DType::F16)?;
        let bytes = self
            .inner
            .gpu
            .read_bytes(op, self.buffer(), self.storage_bytes(op)?)?;
        let mut halves: Vec<half::f16> = bytemuck::pod_collect_to_vec(&bytes);
        halves.truncate(self.numel());
        Ok(halves)
    }

    /// Start copying to the host without waiting (see `gpu::PendingRead`): the values of the
    /// work recorded so far, collected later with [`PendingValues::wait`].
    pub fn to_vec_async(&self) -> Result<PendingValues> {
        let op = "Tensor::to_vec_async";
        Ok(PendingValues {
            read: self
                .inner
                .gpu
                .read_bytes_async(op, self.buffer(), self.storage_bytes(op)?)?,
            dtype: self.dtype(),
            numel: self.numel(),
        })
    }

    /// Start copying several tensors of one device to the host, back to back in ONE read (one
    /// staging buffer, one submit, one mapping): the values of `parts` concatenated in order,
    /// collected with [`PendingValues::wait`]. No device-side concatenation is recorded.
    pub fn to_vec_async_joined(parts: &[&Tensor]) -> Result<PendingValues> {
        let op = "Tensor::to_vec_async_joined";
        let Some(first) = parts.first() else {
            return Err(Error::invalid(op, "at least one tensor", 0));
        };
        for p in &parts[1..] {
            first.check_same_gpu(op, p)?;
        }
        // One element type for the joined values: f32 (gradients of f32 master weights).
        for p in parts {
            p.expect_dtype(op, DType::F32)?;
        }
        let reads: Vec<(&wgpu::Buffer, u64)> = parts
            .iter()
            .map(|t| (t.buffer(), t.numel() as u64 * 4))
            .collect();
        Ok(PendingValues {
            read: first.inner.gpu.read_many_async(op, &reads)?,
            dtype: DType::F32,
            numel: parts.iter().map(|t| t.numel()).sum(),
        })
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "Tensor::to_scalar",
                "one element",
                self.shape(),
            ));
        }
        Ok(self.to_vec()?[0])
    }

    /// Overwrite the contents of an f32 tensor with host data of the same size (e.g. loading
    /// weights).
    pub fn write(&self, data: &[f32]) -> Result<()> {
        self.expect_dtype("Tensor::write", DType::F32)?;
        if data.len() != self.numel() {
            return Err(Error::shape(
                "Tensor::write",
                format!("{} values", self.numel()),
                format!("{} values", data.len()),
            ));
        }
        self.inner.storage.forget_half_rounding();
        self.inner
            .gpu
            .write_bytes("Tensor::write", self.buffer(), bytemuck::cast_slice(data))
    }

    /// Overwrite the contents with another tensor's (same element count), in stream order.
    /// Not recorded: for optimizer and EMA updates outside the tape.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        let op = "Tensor::assign";
        if src.numel() != self.numel() {
            return Err(Error::shape(op, self.shape(), src.shape()));
        }
        src.expect_dtype(op, self.dtype())?;
        let bytes = self.storage_bytes(op)?;
        self.inner.storage.forget_half_rounding();
        if bytes > 0 {
            self.inner.gpu.encode(|enc| {
                enc.copy_buffer_to_buffer(src.buffer(), 0, self.buffer(), 0, bytes)
            })?;
        }
        Ok(())
    }

    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }
    pub fn rank(&self) -> usize {
        self.inner.shape.len()
    }
    pub fn numel(&self) -> usize {
        numel(&self.inner.shape)
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }
    /// Bytes of the elements as stored (see [`DType::storage_bytes`]).
    fn storage_bytes(&self, op: &'static str) -> Result<u64> {
        self.dtype().storage_bytes(op, self.numel())
    }
    /// Fail with [`Error::DTypeMismatch`] unless the tensor is of `dtype`.
    pub(crate) fn expect_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype() == dtype {
            Ok(())
        } else {
            Err(Error::DTypeMismatch {
                op,
                expected: format!("an {dtype} tensor"),
                got: format!("an {} tensor of shape {:?}", self.dtype(), self.shape()),
            })
        }
    }
    /// Extent of axis `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = normalize_axis("Tensor::dim", axis, self.rank())?;
        Ok(self.inner.shape[a])
    }
    pub fn gpu(&self) -> &Gpu {
        &self.inner.gpu
    }
    /// Identity used by `Gradients` (shared by clones; new for every op result and `detach`).
    pub fn id(&self) -> u64 {
        self.inner.id
    }
    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.inner.requires_grad || self.inner.node.is_some()
    }
    /// The device buffer (bound whole; only the first `numel` elements are meaningful).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.inner.storage.buffer()
    }

    /// Attach a tape node to a freshly computed result.
    pub(crate) fn with_node(self, node: Arc<Node>) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                gpu: self.inner.gpu.clone(),
                storage: self.inner.storage.clone(),
                shape: self.inner.shape.clone(),
                dtype: self.inner.dtype,
                id: self.inner.id,
                requires_grad: false,
                node: Some(node),
            }),
        }
    }

    /// A view with the same storage and another shape (recorded, so gradients reshape back).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if crate::util::size::checked_numel("reshape", shape)? != self.numel() {
            return Err(Error::shape("reshape", self.shape(), shape));
        }
        let out = Tensor {
            inner: Arc::new(TensorInner {
                gpu: self.inner.gpu.clone(),
                storage: self.inner.storage.clone(),
                shape: shape.to_vec(),
                dtype: self.inner.dtype,
                id: self.inner.gpu.next_id(),
                requires_grad: false,
                node: None,
            }),
        };
        let in_shape = self.shape().to_vec();
        Ok(crate::autograd::record(out, "reshape", &[self], move |g| {
            Ok(vec![Some(g.reshape(&in_shape)?)])
        }))
    }

    /// Fail unless `other` lives on the same device.
    pub(crate) fn check_same_gpu(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.gpu().same(other.gpu()) {
            Ok(())
        } else {
            Err(Error::invalid(
                op,
                "tensors on the same device",
                "tensors on two devices",
            ))
        }
    }
}

/// Map a possibly negative axis into `0..rank`.
pub fn normalize_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    if a < 0 || a >= rank as isize {
        return Err(Error::invalid(
            op,
            format!("an axis in -{rank}..{rank}"),
            axis,
        ));
    }
    Ok(a as usize)
}

/// Row-major element strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}
