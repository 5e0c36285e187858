//! GPU ops, one file per family: validate → output shape → allocate → launch → record backward.

pub mod elementwise;
pub mod matmul;
pub mod reduce;
pub mod shape;

pub use elementwise::{
    add, add_scalar, binary, div, exp, fill, gelu, leaky_relu, log, maximum, minimum, mul, relu,
    scale, sub, unary, BinaryOp, UnaryOp,
};
pub use matmul::{linear, matmul, matmul_with, MatmulKernel};
pub use reduce::{mean, mean_all, sum, sum_all};

use crate::gpu::KernelSpec;

/// Every kernel the crate launches (the shader validation test walks this list).
pub fn all_kernels() -> Vec<&'static KernelSpec> {
    let families: &[&[KernelSpec]] = &[
        crate::tensor::KERNELS,
        elementwise::KERNELS,
        reduce::KERNELS,
        matmul::KERNELS,
        crate::bench::KERNELS,
    ];
    families.iter().flat_map(|f| f.iter()).collect()
}
