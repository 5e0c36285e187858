//! Pointwise convs with few output channels (1×1×1, stride 1, no padding, groups 1, Cout % 4 ≠ 0:
//! a segmentation head's classes) as transposed matmuls, where no tiled kernel fits.
//!
//! Why: every fast conv kernel wants Cout in fours (lanes over groups of 4 or 8 output
//! channels), so a head with 2, 3 or 14 classes ran the naive kernels: one invocation per output
//! value (forward) or per weight element and voxel chunk (weight gradient), 0.5–2 GFLOP/s on
//! lavapipe. With M output voxels, x as [M, Cin] and w as [Cin, Cout]:
//!
//!   y  = x · w + b          computed as  yᵀ = wᵀ · xᵀ   ([Cout, M], then transposed)
//!   gw = xᵀ · g             computed as  gwᵀ = gᵀ · x   ([Cout, Cin], then transposed)
//!
//! The transposed forms put the few output channels on the product's rows and the many voxels
//! (forward) or input channels (weight gradient) on its columns, which the matmul tiles spread
//! over their lanes; a 4-row vec4 tile wastes at most 3 of its 4 rows (a tall one would waste
//! up to 31 of 32). The input gradient gx = g · wᵀ ([M, Cin]) is a plain product on the
//! adapter's tile (K = Cout, padded to a multiple of 4 by the launcher where that pays,
//! src/ops/matmul.rs); the flipped conv it replaces has Cout input channels, which the fast
//! kernels refuse too.

use super::conv3d::Geometry;
use super::elementwise;
use super::matmul::{matmul, matmul_launch, MatmulKernel};
use crate::error::Result;
use crate::tensor::Tensor;

/// The tile for the products with Cout rows: 4 rows × 4 columns per invocation.
const TILE: MatmulKernel = MatmulKernel::vec4(4, 4);

/// Whether `geo` is a pointwise conv whose output channels no fast kernel takes (Cout % 4 ≠ 0)
/// and whose input channels a vec4 product reads (Cin % 4 == 0).
pub(crate) fn fits(geo: &Geometry) -> bool {
    let c = &geo.cfg;
    c.groups == 1
        && c.kernel == [1; 3]
        && c.stride == [1; 3]
        && c.padding == [0; 3]
        && !geo.out[4].is_multiple_of(4)
        && geo.x[4].is_multiple_of(4)
}

/// y `[N, D, H, W, Cout]` = x · w + b (launches only, nothing recorded).
pub(crate) fn forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    geo: &Geometry,
) -> Result<Tensor> {
    let (m, cin, cout) = (geo.m_total(), geo.x[4], geo.out[4]);
    x.gpu().no_grad(|| {
        let x2 = x.reshape(&[m, cin])?;
        let w2 = w.reshape(&[cin, cout])?;
        // yᵀ [Cout, M] = wᵀ · xᵀ
        let yt = matmul_launch(&w2, &x2, true, true, TILE)?;
        let y = yt.transpose_last2()?;
        let y = match bias {
            Some(b) => elementwise::add(&y, b)?,
            None => y,
        };
        y.reshape(&geo.out)
    })
}

/// gx `[N, D, H, W, Cin]` = g · wᵀ (launches only; the adapter's matmul tile: M voxels × Cin).
pub(crate) fn backward_input(g: &Tensor, w: &Tensor, geo: &Geometry) -> Result<Tensor> {
    let (m, cin, cout) = (geo.m_total(), geo.x[4], geo.out[4]);
    g.gpu().no_grad(|| {
        let gx = matmul(
            &g.reshape(&[m, cout])?,
            &w.reshape(&[cin, cout])?,
            false,
            true,
        )?;
        gx.reshape(&geo.x)
    })
}

/// gw `[1, 1, 1, Cin, Cout]` = xᵀ · g (launches only).
pub(crate) fn backward_weight(g: &Tensor, x: &Tensor, geo: &Geometry) -> Result<Tensor> {
    let (m, cin, cout) = (geo.m_total(), geo.x[4], geo.out[4]);
    g.gpu().no_grad(|| {
        // gwᵀ [Cout, Cin] = gᵀ · x
        let gwt = matmul_launch(
            &g.reshape(&[m, cout])?,
            &x.reshape(&[m, cin])?,
            true,
            false,
            TILE,
        )?;
        gwt.transpose_last2()?.reshape(&geo.w_shape())
    })
}
