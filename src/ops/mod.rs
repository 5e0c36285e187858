//! GPU ops, one file per family: validate → output shape → allocate → launch → record backward.
//!
//! Plain op configs (conv, transposed conv, pool, resample, elementwise operators) live in
//! [`config`], the one part of `ops` that `reference/` may import. The crate-wide list of
//! kernels (for the shader validation test) is `crate::kernels`, above every layer that owns one.

pub mod attention;
pub mod config;
pub mod conv3d;
pub(crate) mod conv3d_depthwise_rows;
pub mod conv3d_fast;
pub(crate) mod conv3d_fold;
mod conv3d_geometry;
pub mod conv3d_igemm;
pub(crate) mod conv3d_patchify;
mod conv3d_plan;
pub(crate) mod conv3d_pointwise;
pub(crate) mod conv3d_rows;
mod conv3d_subpixel;
mod conv3d_tune;
pub mod conv_transpose3d;
mod conv_transpose3d_patches;
mod conv_transpose3d_tune;
pub mod drr;
pub mod dw_mlp_mixed;
pub mod elementwise;
pub mod ema;
pub mod gelu_linear;
pub mod gelu_linear_mixed;
pub(crate) mod l2_normalize_wide;
pub(crate) mod linear_unary_backward_x16;
pub mod loss;
pub mod matmul;
pub mod matmul_f16;
pub mod matmul_f16_coop;
pub(crate) mod matmul_f16_vec4;
mod matmul_kernel;
mod matmul_launch;
mod matmul_pack_b;
mod matmul_plan;
mod matmul_subgroup_a;
pub mod matmul_tiled;
mod matmul_tune;
pub mod norm;
pub mod normalized_linear;
pub(crate) mod normalized_linear_few;
pub mod pool;
pub mod reduce;
pub mod resample;
pub mod shape;
pub mod softmax;
mod subgroup_broadcast;
pub(crate) mod unary_f16;

pub use attention::{attention, attention_with, AttentionPath};
pub use conv3d::{conv2d, conv3d, Conv2dConfig, Conv3dConfig};
pub use conv_transpose3d::{conv_transpose3d, ConvTranspose3dConfig};
pub use dw_mlp_mixed::{dw_mlp_mixed, dw_mlp_mixed_fits};
pub use elementwise::{
    add, add_scalar, binary, div, exp, fill, gelu, leaky_relu, log, maximum, minimum, mul, relu,
    scale, sub, unary, BinaryOp, UnaryOp,
};
pub use gelu_linear::gelu_linear;
pub use gelu_linear_mixed::gelu_linear_mixed;
pub use loss::{
    cross_entropy_labels, l2_normalize, mse, soft_cross_entropy, soft_cross_entropy_rows,
    soft_dice_loss,
};
pub use matmul::{linear, linear_with, matmul, matmul_with, MatmulKernel};
pub use matmul_f16::{linear_mixed, matmul_f16, matmul_f16_with, MatmulF16Kernel};
pub use matmul_f16_vec4::F16VecTile;
pub use norm::{instance_norm, instance_norm_leaky_relu, layer_norm};
pub use normalized_linear::normalized_linear;
pub use pool::{avg_pool3d, global_avg_pool, max_pool3d, Pool3dConfig};
pub use reduce::{mean, mean_all, sum, sum_all};
pub use resample::{resample, ResampleMode};
pub use softmax::{log_softmax, softmax, RowKernel};
