//! The tensor layer's own unrecorded arithmetic (shaders/tensor_fill_add.wgsl): `fill` for
//! [`Tensor::full`] and a same-shape `add` for gradient accumulation in `autograd`. They sit here
//! so that tensor + autograd (one layer) never import `ops`; the recorded, broadcasting ops live
//! in `ops::elementwise`.

use super::Tensor;
use crate::error::{Error, Result};
use crate::gpu::{scalar_or_vec4, Gpu, KernelSpec};

crate::gpu::shader_params! {
    /// Mirrors `FillAddParams` in shaders/tensor_fill_add.wgsl.
    struct FillAddParams {
        n: u32,
        value: f32,
        _pad: [u32; 2],
    }
}

const SOURCE: &str = include_str!("../../shaders/tensor_fill_add.wgsl");

pub(crate) const FILL_SPEC: KernelSpec = KernelSpec {
    shader: "tensor_fill_add",
    source: SOURCE,
    entry: "fill",
    inputs: 0,
    outputs: 1,
    params: FillAddParams::LAYOUT,
    constants: &[],
};
pub(crate) const ADD_SPEC: KernelSpec = KernelSpec {
    shader: "tensor_fill_add",
    source: SOURCE,
    entry: "add",
    inputs: 2,
    outputs: 1,
    params: FillAddParams::LAYOUT,
    constants: &[],
};

/// The four-elements-per-invocation forms (n % 4 == 0).
pub(crate) const FILL4_SPEC: KernelSpec = KernelSpec {
    entry: "fill4",
    ..FILL_SPEC
};
pub(crate) const ADD4_SPEC: KernelSpec = KernelSpec {
    entry: "add4",
    ..ADD_SPEC
};

/// A new tensor with every element equal to `value` (unrecorded: a constant).
pub(crate) fn fill(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor> {
    let out = Tensor::uninit(gpu, "fill", shape)?;
    let n = out.numel();
    if n > 0 {
        let params = FillAddParams {
            n: n as u32,
            value,
            _pad: [0; 2],
        };
        let (spec, grid) = scalar_or_vec4(&FILL_SPEC, &FILL4_SPEC, n, n.is_multiple_of(4));
        gpu.dispatch(spec, &params, &[], &[out.buffer()], grid)?;
    }
    Ok(out)
}

/// `a + b` for two tensors of the same shape, unrecorded (no broadcasting: gradient
/// contributions to one tensor always have that tensor's shape).
pub(crate) fn add_unrecorded(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.check_same_gpu(op, b)?;
    if a.shape() != b.shape() {
        return Err(Error::shape(op, a.shape(), b.shape()));
    }
    let out = Tensor::uninit(a.gpu(), op, a.shape())?;
    let n = out.numel();
    if n > 0 {
        let params = FillAddParams {
            n: n as u32,
            value: 0.0,
            _pad: [0; 2],
        };
        let (spec, grid) = scalar_or_vec4(&ADD_SPEC, &ADD4_SPEC, n, n.is_multiple_of(4));
        a.gpu().dispatch(
            spec,
            &params,
            &[a.buffer(), b.buffer()],
            &[out.buffer()],
            grid,
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::{Error, Tensor};

    #[test]
    fn fill_and_add_are_exact_and_check_their_shapes() {
        let gpu = crate::gpu::unit_test_gpu();
        let a = Tensor::full(&gpu, &[3, 5], 1.5).unwrap();
        assert_eq!(a.to_vec().unwrap(), vec![1.5; 15]);
        let b_data: Vec<f32> = (0..15).map(|i| i as f32 - 7.0).collect();
        let b = Tensor::from_slice(&gpu, &b_data, &[3, 5]).unwrap();
        let sum = super::add_unrecorded("test add", &a, &b).unwrap();
        let want: Vec<f32> = b_data.iter().map(|v| v + 1.5).collect();
        assert_eq!(sum.to_vec().unwrap(), want);
        // Unrecorded even when an input needs gradients.
        let p = b.clone().requires_grad_(true);
        assert!(!super::add_unrecorded("test add", &a, &p)
            .unwrap()
            .requires_grad());
        // No broadcasting: a shape mismatch is a typed error naming the op.
        let c = Tensor::full(&gpu, &[5], 0.0).unwrap();
        match super::add_unrecorded("test add", &a, &c) {
            Err(Error::ShapeMismatch { op, .. }) => assert_eq!(op, "test add"),
            other => panic!("expected a shape error, got {other:?}"),
        }
        assert_eq!(Tensor::full(&gpu, &[0, 4], 2.0).unwrap().numel(), 0);
    }

    /// Counts that are a multiple of 4 run four elements per invocation, others one, each past
    /// one workgroup of 256 invocations; every element is written.
    #[test]
    fn fill_and_add_take_vec4s_when_the_count_allows() {
        let gpu = crate::gpu::unit_test_gpu();
        for (n, suffix) in [(4 * 300, "4"), (1021, "")] {
            gpu.synchronize().unwrap();
            gpu.set_profiling(true);
            let a = Tensor::full(&gpu, &[n], -2.5).unwrap();
            let b_data: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b = Tensor::from_slice(&gpu, &b_data, &[n]).unwrap();
            let sum = super::add_unrecorded("test add", &a, &b).unwrap();
            assert_eq!(a.to_vec().unwrap(), vec![-2.5; n]);
            let want: Vec<f32> = b_data.iter().map(|v| v - 2.5).collect();
            assert_eq!(sum.to_vec().unwrap(), want);
            gpu.set_profiling(false);
            let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
            for entry in ["fill", "add"] {
                let entry = format!("tensor_fill_add::{entry}{suffix}");
                assert!(ran.contains(&entry), "n {n}: {entry} not in {ran:?}");
            }
        }
    }
}
