//! The crate-level list of every kernel the crate launches, walked by the shader validation test
//! (`tests/shaders.rs`: naga parse + validate, bindings and params sizes against the launchers).
//!
//! It lives at the top of the crate, not in `ops`, because the list reaches into every layer that
//! owns shaders (`tensor`, `ops`, `optim`, `bench`); a registry inside `ops` would make `ops`
//! import the layers above it.

use crate::gpu::KernelSpec;
use crate::ops::{
    attention, conv3d, conv3d_depthwise_rows, conv3d_fast, conv3d_igemm, conv3d_rows,
    conv_transpose3d, drr, elementwise, ema, l2_normalize_wide, linear_unary_backward_x16, loss,
    matmul, matmul_f16, matmul_f16_coop, matmul_f16_vec4, matmul_tiled, norm,
    normalized_linear_few, pool, reduce, resample, softmax, unary_f16,
};

/// Every kernel the crate launches.
pub fn all_kernels() -> Vec<&'static KernelSpec> {
    let families: &[&[KernelSpec]] = &[
        crate::tensor::KERNELS,
        elementwise::KERNELS,
        unary_f16::KERNELS,
        linear_unary_backward_x16::KERNELS,
        reduce::KERNELS,
        pool::KERNELS,
        conv_transpose3d::KERNELS,
        attention::KERNELS,
        resample::KERNELS,
        softmax::KERNELS,
        norm::KERNELS,
        loss::KERNELS,
        l2_normalize_wide::KERNELS,
        normalized_linear_few::KERNELS,
        crate::optim::KERNELS,
        matmul::KERNELS,
        matmul::KERNELS_TA,
        matmul::KERNELS_TB,
        matmul::KERNELS_NARROW,
        matmul::KERNELS_BIAS,
        matmul::KERNELS_PACKED_B,
        matmul::KERNELS_PACKED_B_BIAS,
        matmul::KERNELS_PACK_B,
        matmul::KERNELS_SUBGROUP_A,
        matmul::KERNELS_SUBGROUP_A_F16,
        matmul_tiled::KERNELS,
        matmul_f16::KERNELS,
        matmul_f16_vec4::KERNELS,
        matmul_f16_coop::KERNELS,
        crate::bench::KERNELS,
        drr::KERNELS,
        conv3d::KERNELS,
        conv3d_fast::KERNELS,
        conv3d_igemm::KERNELS,
        conv3d_rows::KERNELS,
        conv3d_depthwise_rows::KERNELS,
        ema::KERNELS,
    ];
    families.iter().flat_map(|f| f.iter()).collect()
}
