//! GPU ops, one file per family: validate → output shape → allocate → launch → record backward.

pub mod attention;
pub mod conv3d;
pub mod conv3d_fast;
mod conv3d_subpixel;
pub mod conv_transpose3d;
pub mod drr;
pub mod elementwise;
pub mod ema;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod resample;
pub mod shape;
pub mod softmax;

pub use attention::{attention, attention_with, AttentionPath};
pub use conv3d::{conv2d, conv3d, Conv2dConfig, Conv3dConfig};
pub use conv_transpose3d::{conv_transpose3d, ConvTranspose3dConfig};
pub use elementwise::{
    add, add_scalar, binary, div, exp, fill, gelu, leaky_relu, log, maximum, minimum, mul, relu,
    scale, sub, unary, BinaryOp, UnaryOp,
};
pub use loss::{
    cross_entropy_labels, l2_normalize, mse, soft_cross_entropy, soft_cross_entropy_rows,
    soft_dice_loss,
};
pub use matmul::{linear, matmul, matmul_with, MatmulKernel};
pub use norm::{instance_norm, layer_norm};
pub use pool::{avg_pool3d, global_avg_pool, max_pool3d, Pool3dConfig};
pub use reduce::{mean, mean_all, sum, sum_all};
pub use resample::{resample, ResampleMode};
pub use softmax::{log_softmax, softmax, RowKernel};

use crate::gpu::KernelSpec;

/// Every kernel the crate launches (the shader validation test walks this list).
pub fn all_kernels() -> Vec<&'static KernelSpec> {
    let families: &[&[KernelSpec]] = &[
        crate::tensor::KERNELS,
        elementwise::KERNELS,
        reduce::KERNELS,
        pool::KERNELS,
        conv_transpose3d::KERNELS,
        attention::KERNELS,
        resample::KERNELS,
        softmax::KERNELS,
        norm::KERNELS,
        loss::KERNELS,
        crate::optim::KERNELS,
        matmul::KERNELS,
        crate::bench::KERNELS,
        drr::KERNELS,
        conv3d::KERNELS,
        conv3d_fast::KERNELS,
        ema::KERNELS,
    ];
    families.iter().flat_map(|f| f.iter()).collect()
}
