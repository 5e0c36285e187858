//! GPU ops, one file per family: validate → output shape → allocate → launch → record backward.

pub mod conv3d;
pub mod conv3d_fast;
pub mod elementwise;
pub mod reduce;
pub mod shape;

pub use elementwise::{
    add, add_scalar, binary, div, exp, fill, gelu, leaky_relu, log, maximum, minimum, mul, relu,
    scale, sub, unary, BinaryOp, UnaryOp,
};
pub use conv3d::{conv2d, conv3d, Conv2dConfig, Conv3dConfig};
pub use reduce::{mean, mean_all, sum, sum_all};

use crate::gpu::KernelSpec;

/// Every kernel the crate launches (the shader validation test walks this list).
pub fn all_kernels() -> Vec<&'static KernelSpec> {
    let families: &[&[KernelSpec]] = &[
        crate::tensor::KERNELS,
        elementwise::KERNELS,
        reduce::KERNELS,
        conv3d::KERNELS,
        conv3d_fast::KERNELS,
    ];
    families.iter().flat_map(|f| f.iter()).collect()
}
