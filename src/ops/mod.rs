//! GPU ops, one file per family: validate → output shape → allocate → launch → record backward.

pub mod elementwise;
pub mod loss;
pub mod norm;
pub mod reduce;
pub mod shape;
pub mod softmax;

pub use elementwise::{
    add, add_scalar, binary, div, exp, fill, gelu, leaky_relu, log, maximum, minimum, mul, relu,
    scale, sub, unary, BinaryOp, UnaryOp,
};
pub use loss::{cross_entropy_labels, l2_normalize, mse, soft_cross_entropy, soft_cross_entropy_rows};
pub use norm::{instance_norm, layer_norm};
pub use reduce::{mean, mean_all, sum, sum_all};
pub use softmax::{log_softmax, softmax, RowKernel};

use crate::gpu::KernelSpec;

/// Every kernel the crate launches (the shader validation test walks this list).
pub fn all_kernels() -> Vec<&'static KernelSpec> {
    let families: &[&[KernelSpec]] = &[
        crate::tensor::KERNELS,
        elementwise::KERNELS,
        reduce::KERNELS,
        softmax::KERNELS,
        norm::KERNELS,
        loss::KERNELS,
    ];
    families.iter().flat_map(|f| f.iter()).collect()
}
