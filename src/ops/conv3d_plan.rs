//! The kernel choice of one convolution, resolved once: [`ConvPath`] (what the caller asks for)
//! and `ConvPlan` (which kernel runs the forward, the input gradient and the weight gradient),
//! decided from the validated geometry alone before anything is allocated or launched, as
//! `ops/matmul.rs` plans. The launchers in conv3d.rs, conv3d_fast.rs and conv3d_subpixel.rs
//! then follow the plan; none of them decides or signals "fall back" after doing work.

use super::conv3d::{Conv3dConfig, Geometry};
use super::conv3d_depthwise_rows;
use super::conv3d_fast::{self, FastForward, FastWeight, ForwardTile, WeightTile};
use super::conv3d_fold;
use super::conv3d_igemm::{self, IgemmTile};
use super::conv3d_patchify;
use super::conv3d_pointwise;
use super::conv3d_rows::{self, RowsLanes, RowsTile, RowsWeightTile};
use super::conv3d_subpixel::{self, SubpixelPlan};
use crate::error::{Error, Result};

/// Which kernels a call uses: the register-tiled ones where their shape conditions hold
/// (`Fast`), or the straightforward ones everywhere (the oracle, for tests and timing
/// comparisons), or the tiled ones restricted to one forward tile and one weight-gradient tile
/// (timing comparisons and tests of every variant), or the workgroup-memory implicit GEMM for
/// GPUs (conv3d_igemm.rs) where it fits, the register tiles elsewhere, or the lanes-over-output-
/// channel kernels for CPU adapters (conv3d_rows.rs), with 2 or 4 output channels per lane in
/// their large tiles, where they fit, the register tiles elsewhere. Where a shape fits no
/// allowed tiled kernel, the plan picks the straightforward kernel, before any work. `conv3d`
/// takes the path chosen per adapter (conv3d_tune.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvPath {
    #[default]
    Fast,
    Naive,
    Tiles {
        forward: ForwardTile,
        weight: WeightTile,
    },
    Igemm(IgemmTile),
    Rows(RowsLanes),
}

impl ConvPath {
    fn is_fast(self) -> bool {
        self != ConvPath::Naive
    }
    /// The fast forward kernel of a convolution with geometry `geo` on this path (the forward,
    /// and the class convs of the input gradient), if any.
    fn forward_kernel(self, geo: &Geometry) -> Option<FastForward> {
        match self {
            ConvPath::Igemm(tile) if conv3d_igemm::fits(geo, tile) => {
                Some(FastForward::Igemm(tile))
            }
            ConvPath::Rows(lanes) if conv3d_rows::fits(geo) => Some(FastForward::Rows {
                lanes,
                tile: RowsTile::for_geometry(geo, lanes),
            }),
            ConvPath::Rows(lanes) if conv3d_depthwise_rows::fits(geo) => {
                Some(FastForward::DepthwiseRows {
                    wide: lanes == RowsLanes::Wide,
                })
            }
            ConvPath::Rows(lanes) if conv3d_fold::fits(geo) => {
                Some(FastForward::RowsFolded { lanes })
            }
            _ => conv3d_fast::plan_forward(geo, self.forward_tile()),
        }
    }
    fn forward_tile(self) -> Option<ForwardTile> {
        match self {
            ConvPath::Tiles { forward, .. } => Some(forward),
            _ => None,
        }
    }
    fn weight_tile(self) -> Option<WeightTile> {
        match self {
            ConvPath::Tiles { weight, .. } => Some(weight),
            _ => None,
        }
    }
}

/// The forward kernel of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForwardKernel {
    Fast(FastForward),
    /// 1×1×1 with Cout % 4 ≠ 0 as a transposed matmul (conv3d_pointwise.rs).
    Pointwise,
    Naive,
}

/// The input-gradient kernel of a plan.
#[derive(Clone, Debug)]
pub(crate) enum InputKernel {
    /// Strided: one stride-1 fast conv per output parity class (conv3d_subpixel.rs).
    Subpixel(SubpixelPlan),
    /// Stride 1: gx = conv(g, flip(w)ᵀ) with padding dil·(k−1) − p (geometry `geo`) on a fast
    /// forward kernel.
    FlippedConv { geo: Geometry, kernel: FastForward },
    /// Kernel = stride, no padding or dilation, groups 1 (a patchify conv such as PVT's spatial
    /// reduction): the patches do not overlap, so gx is the matmul g · Wᵀ scattered back into
    /// the patches (conv3d_patchify.rs).
    Patchify,
    /// 1×1×1 with Cout % 4 ≠ 0: gx = g · wᵀ as one matmul (conv3d_pointwise.rs).
    Pointwise,
    /// The direct gather kernel (any shape).
    Gather,
}

/// The weight-gradient kernel of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightKernel {
    Fast(FastWeight),
    /// 1×1×1 with Cout % 4 ≠ 0 as a transposed matmul (conv3d_pointwise.rs).
    Pointwise,
    Naive,
}

/// Every kernel choice of one convolution (forward and both gradients), resolved once from the
/// validated geometry and the path before anything is allocated or launched.
#[derive(Clone, Debug)]
pub(crate) struct ConvPlan {
    pub geo: Geometry,
    pub forward: ForwardKernel,
    pub input: InputKernel,
    pub weight: WeightKernel,
}

impl ConvPlan {
    pub fn new(geo: Geometry, path: ConvPath) -> Result<ConvPlan> {
        if !path.is_fast() {
            return Ok(ConvPlan::naive(geo));
        }
        let pointwise = conv3d_pointwise::fits(&geo);
        let forward = match path.forward_kernel(&geo) {
            Some(k) => ForwardKernel::Fast(k),
            None if pointwise => ForwardKernel::Pointwise,
            None => ForwardKernel::Naive,
        };
        let weight = match path {
            ConvPath::Igemm(tile) if conv3d_igemm::fits(&geo, tile) => {
                WeightKernel::Fast(FastWeight::Igemm(tile))
            }
            ConvPath::Rows(lanes) if conv3d_rows::fits(&geo) => {
                WeightKernel::Fast(FastWeight::Rows {
                    lanes,
                    tile: RowsWeightTile::for_geometry(&geo, lanes),
                })
            }
            ConvPath::Rows(lanes) if conv3d_depthwise_rows::fits(&geo) => {
                WeightKernel::Fast(FastWeight::DepthwiseRows {
                    wide: lanes == RowsLanes::Wide,
                })
            }
            _ => match conv3d_fast::plan_backward_weight(&geo, path.weight_tile()) {
                Some(k) => WeightKernel::Fast(k),
                None if pointwise => WeightKernel::Pointwise,
                None => WeightKernel::Naive,
            },
        };
        let c = &geo.cfg;
        let stride1 = c.stride == [1; 3];
        // Strided: the sub-pixel decomposition. With many classes (SR 4 and 8 patch convs: 64
        // and 512) the per-class launches cost more than the gather kernel's skipped taps,
        // measured on lavapipe (SR 8: 638 vs 131 ms).
        let classes: usize = c.stride.iter().product();
        let mut input = InputKernel::Gather;
        if conv3d_patchify::fits(&geo) {
            input = InputKernel::Patchify;
        } else if !stride1 && classes <= 8 && c.dilation == [1; 3] {
            if let Some(sub) = conv3d_subpixel::plan(&geo, &|g| path.forward_kernel(g))? {
                input = InputKernel::Subpixel(sub);
            }
        }
        // Stride 1 with padding p <= dil·(k−1) on every axis: the flipped conv.
        let pad_ok = (0..3).all(|a| c.padding[a] <= c.dilation[a] * (c.kernel[a] - 1));
        if stride1 && pad_ok {
            let cfg_t = Conv3dConfig {
                padding: [0, 1, 2].map(|a| c.dilation[a] * (c.kernel[a] - 1) - c.padding[a]),
                ..*c
            };
            let wf_shape = [c.kernel[0], c.kernel[1], c.kernel[2], geo.cout_g, geo.x[4]];
            let geo_t = Geometry::new("conv3d_backward_input", &geo.out, &wf_shape, &cfg_t)?;
            if geo_t.out != geo.x {
                return Err(Error::shape(
                    "conv3d_backward_input",
                    geo.x,
                    format!("{:?} from the flipped conv", geo_t.out),
                ));
            }
            if let Some(kernel) = path.forward_kernel(&geo_t) {
                input = InputKernel::FlippedConv { geo: geo_t, kernel };
            }
        }
        if pointwise {
            input = InputKernel::Pointwise;
        }
        Ok(ConvPlan {
            geo,
            forward,
            input,
            weight,
        })
    }

    /// The straightforward kernels everywhere (the oracle).
    pub fn naive(geo: Geometry) -> ConvPlan {
        ConvPlan {
            geo,
            forward: ForwardKernel::Naive,
            input: InputKernel::Gather,
            weight: WeightKernel::Naive,
        }
    }

    /// The kernel family each pass runs, [forward, input gradient, weight gradient]: an
    /// implicit-GEMM tile's name (`igemm_64x64`), `rows`, `rows_c4`, `rows_c4_m24` or `rows_w16`
    /// (conv3d_rows.rs; the depthwise row kernels as `rows`, shared by the 8-lane families, or
    /// `rows_w16`), `rows_folded`, `rows_c4_folded`, `rows_c4_m24_folded` or `rows_w16_folded`
    /// (the same with kernel axes folded into few input channels, conv3d_fold.rs), `tiled` (the
    /// register tiles, depthwise included), `pointwise` (a 1×1×1 conv with Cout % 4 ≠ 0 as a
    /// matmul, conv3d_pointwise.rs) or `naive` (the straightforward kernels); what
    /// `cads bench` reports.
    pub fn kernel_names(&self) -> [&'static str; 3] {
        fn depthwise_name(wide: bool) -> &'static str {
            if wide {
                RowsLanes::Wide.name()
            } else {
                "rows"
            }
        }
        fn fast(k: FastForward) -> &'static str {
            match k {
                FastForward::Igemm(tile) => tile.name(),
                FastForward::Rows { lanes, .. } => lanes.name(),
                FastForward::DepthwiseRows { wide } => depthwise_name(wide),
                FastForward::RowsFolded { lanes } => lanes.folded_name(),
                _ => "tiled",
            }
        }
        let forward = match self.forward {
            ForwardKernel::Fast(k) => fast(k),
            ForwardKernel::Pointwise => "pointwise",
            ForwardKernel::Naive => "naive",
        };
        let input = match &self.input {
            InputKernel::Subpixel(sub) => sub.first_kernel().map_or("tiled", fast),
            InputKernel::FlippedConv { kernel, .. } => fast(*kernel),
            InputKernel::Patchify => "patchify",
            InputKernel::Pointwise => "pointwise",
            InputKernel::Gather => "naive",
        };
        let weight = match self.weight {
            WeightKernel::Fast(FastWeight::Igemm(tile)) => tile.name(),
            WeightKernel::Fast(FastWeight::Rows { lanes, .. }) => lanes.name(),
            WeightKernel::Fast(FastWeight::DepthwiseRows { wide }) => depthwise_name(wide),
            WeightKernel::Fast(_) => "tiled",
            WeightKernel::Pointwise => "pointwise",
            WeightKernel::Naive => "naive",
        };
        [forward, input, weight]
    }

    /// Whether the forward, the input-gradient (as the flipped conv) and the weight-gradient
    /// pass run the row kernels, the ones with subgroup-broadcast twins.
    pub fn row_kernel_passes(&self) -> [bool; 3] {
        let rows = |k: &FastForward| {
            matches!(k, FastForward::Rows { .. } | FastForward::RowsFolded { .. })
        };
        let forward = matches!(&self.forward, ForwardKernel::Fast(k) if rows(k));
        let input = match &self.input {
            InputKernel::FlippedConv { kernel, .. } => rows(kernel),
            InputKernel::Subpixel(sub) => sub.first_kernel().is_some_and(|k| rows(&k)),
            _ => false,
        };
        let weight = matches!(self.weight, WeightKernel::Fast(FastWeight::Rows { .. }));
        [forward, input, weight]
    }
}

#[cfg(test)]
#[path = "conv3d_plan_tests.rs"]
mod tests;
