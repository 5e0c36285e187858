//! The conv plan's unit tests: each branch of the kernel choice, from the shapes and the path
//! alone (no device). Part of src/ops/conv3d_plan.rs.

use super::{ConvPath, ConvPlan, ForwardKernel, InputKernel, WeightKernel};
use crate::ops::conv3d::{Conv3dConfig, Geometry};
use crate::ops::conv3d_fast::{FastForward, FastWeight, ForwardTile, WeightTile};
use crate::ops::conv3d_igemm::IgemmTile;
use crate::ops::conv3d_rows::{RowsLanes, RowsTile, RowsWeightTile};

fn plan(x: [usize; 5], cout: usize, cfg: Conv3dConfig, path: ConvPath) -> ConvPlan {
    let w = [
        cfg.kernel[0],
        cfg.kernel[1],
        cfg.kernel[2],
        x[4] / cfg.groups,
        cout,
    ];
    ConvPlan::new(Geometry::new("test", &x, &w, &cfg).unwrap(), path).unwrap()
}

/// The plan is a pure function of the shapes and the path (no device): each branch of the
/// kernel choice, resolved before any work.
#[test]
fn the_plan_names_every_kernel_from_the_shapes() {
    // Stride 1, Cout and Cin multiples of 8: all tiled, input gradient as the flipped conv.
    let p = plan(
        [1, 6, 6, 6, 16],
        8,
        Conv3dConfig::cube(3, 1, 1),
        ConvPath::Fast,
    );
    let tiled = FastForward::Tiled {
        variant: 0,
        c4: true,
    };
    assert_eq!(p.forward, ForwardKernel::Fast(tiled));
    assert!(matches!(p.input, InputKernel::FlippedConv { kernel, .. } if kernel == tiled));
    assert!(matches!(
        p.weight,
        WeightKernel::Fast(FastWeight::Tiled { .. })
    ));

    // Stride 2 with Cin % 8 == 0: the sub-pixel decomposition.
    let p = plan(
        [1, 7, 6, 9, 16],
        8,
        Conv3dConfig::cube(3, 2, 1),
        ConvPath::Fast,
    );
    assert!(matches!(p.input, InputKernel::Subpixel(_)));

    // Cin = 3: no class conv has a tile (their Cout is Cin), so the gather kernel; Cout = 3:
    // no forward tile either.
    let p = plan(
        [1, 7, 6, 9, 3],
        8,
        Conv3dConfig::cube(3, 2, 1),
        ConvPath::Fast,
    );
    assert!(matches!(p.input, InputKernel::Gather));
    let p = plan(
        [1, 5, 5, 5, 8],
        3,
        Conv3dConfig::cube(3, 1, 1),
        ConvPath::Fast,
    );
    assert_eq!(p.forward, ForwardKernel::Naive);

    // Patchify (kernel = stride, no padding): the matmul form, on every fast path; with
    // padding, the sub-pixel classes.
    for path in [
        ConvPath::Fast,
        ConvPath::Rows(RowsLanes::Two),
        ConvPath::Rows(RowsLanes::Four),
        ConvPath::Rows(RowsLanes::FourDeep),
        ConvPath::Rows(RowsLanes::Wide),
    ] {
        let p = plan(
            [1, 8, 8, 8, 8],
            16,
            Conv3dConfig::new([1, 4, 4]).stride([1, 4, 4]),
            path,
        );
        assert!(matches!(p.input, InputKernel::Patchify));
        assert_eq!(p.kernel_names()[1], "patchify");
    }
    let p = plan(
        [1, 8, 8, 8, 8],
        16,
        Conv3dConfig::cube(2, 2, 1),
        ConvPath::Fast,
    );
    assert!(matches!(p.input, InputKernel::Subpixel(_)));

    // Depthwise (groups = C, C % 4 == 0).
    let dw = Conv3dConfig {
        groups: 8,
        ..Conv3dConfig::cube(3, 1, 1)
    };
    let p = plan([1, 5, 5, 5, 8], 8, dw, ConvPath::Fast);
    assert_eq!(p.forward, ForwardKernel::Fast(FastForward::Depthwise));
    assert_eq!(p.weight, WeightKernel::Fast(FastWeight::Depthwise));

    // The naive path, and a forced tile.
    let p = plan(
        [1, 6, 6, 6, 16],
        8,
        Conv3dConfig::cube(3, 1, 1),
        ConvPath::Naive,
    );
    assert_eq!(p.forward, ForwardKernel::Naive);
    assert!(matches!(p.input, InputKernel::Gather));
    assert_eq!(p.weight, WeightKernel::Naive);
    let forced = ConvPath::Tiles {
        forward: ForwardTile::M16N8,
        weight: WeightTile::N8,
    };
    let p = plan([1, 6, 6, 6, 16], 16, Conv3dConfig::cube(3, 1, 1), forced);
    assert_eq!(
        p.forward,
        ForwardKernel::Fast(FastForward::Tiled {
            variant: 1,
            c4: true
        })
    );
    assert_eq!(
        p.weight,
        WeightKernel::Fast(FastWeight::Tiled { variant: 1 })
    );
}

/// The implicit-GEMM path: every pass on the tile where the channel counts are in fours
/// (the input gradient as the flipped conv at stride 1, as sub-pixel class convs at stride
/// 2), the other kernels where they are not; `kernel_names` (what `cads bench` prints) says
/// which ran.
#[test]
fn the_implicit_gemm_path_plans_each_pass_on_the_tile_where_it_fits() {
    let tile = IgemmTile::T128x32;
    let path = ConvPath::Igemm(tile);
    let igemm = FastForward::Igemm(tile);
    let p = plan([1, 6, 6, 6, 16], 8, Conv3dConfig::cube(3, 1, 1), path);
    assert_eq!(p.forward, ForwardKernel::Fast(igemm));
    assert!(matches!(p.input, InputKernel::FlippedConv { kernel, .. } if kernel == igemm));
    assert_eq!(p.weight, WeightKernel::Fast(FastWeight::Igemm(tile)));
    assert_eq!(p.kernel_names(), ["igemm_128x32"; 3]);
    let p = plan([1, 7, 6, 9, 16], 8, Conv3dConfig::cube(3, 2, 1), path);
    assert!(matches!(p.input, InputKernel::Subpixel(_)));
    assert_eq!(p.kernel_names(), ["igemm_128x32"; 3]);
    // Cout = 6: no pass has its channels in fours (the input gradient's convs map 6 → 16).
    let p = plan([1, 6, 6, 6, 16], 6, Conv3dConfig::cube(3, 1, 1), path);
    assert!(
        p.kernel_names().iter().all(|k| !k.starts_with("igemm")),
        "{:?}",
        p.kernel_names()
    );
    // The register tiles and the naive kernels name themselves.
    let fast = plan(
        [1, 6, 6, 6, 16],
        8,
        Conv3dConfig::cube(3, 1, 1),
        ConvPath::Fast,
    );
    assert_eq!(fast.kernel_names(), ["tiled"; 3]);
    let naive = plan(
        [1, 6, 6, 6, 16],
        8,
        Conv3dConfig::cube(3, 1, 1),
        ConvPath::Naive,
    );
    assert_eq!(naive.kernel_names(), ["naive"; 3]);
}

/// The row paths (CPU adapters): every pass on the row kernels where groups = 1 and the
/// channels are in fours, the 4-voxel forward tile for outputs under 8 voxels, on `rows` the
/// 2-channel tiles for outputs of 256 voxels or more (forward) and Cin % 64 == 0 (weight
/// gradient), on `rows_c4` the 4-channel tiles there too, on `rows_c4_m24` the 24-voxel tile
/// for the large outputs, on `rows_w16` the 4-channel tiles where Cout fills its 16 lanes
/// (Cout >= 64) and 2 channels per lane below that, 24 voxels deep on large outputs; the
/// register tiles where the shape does not fit.
#[test]
fn the_row_paths_plan_each_pass_on_the_row_kernels_where_they_fit() {
    for lanes in [
        RowsLanes::Two,
        RowsLanes::Four,
        RowsLanes::FourDeep,
        RowsLanes::Wide,
    ] {
        let rows = ConvPath::Rows(lanes);
        let name = lanes.name();
        // The weight tile for Cout < 64 with Cin % 64 != 0.
        let narrow_weight = match lanes {
            RowsLanes::Wide => RowsWeightTile::R8C2,
            RowsLanes::Two | RowsLanes::Four | RowsLanes::FourDeep => RowsWeightTile::R8C4,
        };
        let p = plan([1, 6, 6, 6, 16], 8, Conv3dConfig::cube(3, 1, 1), rows);
        // 216 output voxels: the 8-voxel tile on every family.
        let m8 = FastForward::Rows {
            lanes,
            tile: RowsTile::M8C4,
        };
        assert_eq!(p.forward, ForwardKernel::Fast(m8));
        assert!(matches!(p.input, InputKernel::FlippedConv { kernel, .. } if kernel == m8));
        let r8 = FastWeight::Rows {
            lanes,
            tile: narrow_weight,
        };
        assert_eq!(p.weight, WeightKernel::Fast(r8));
        assert_eq!(p.kernel_names(), [name; 3]);
        let p = plan([1, 7, 6, 9, 16], 8, Conv3dConfig::cube(3, 2, 1), rows);
        assert!(matches!(p.input, InputKernel::Subpixel(_)));
        assert_eq!(p.kernel_names(), [name; 3]);
        // 2·2·1 output voxels: the 4-voxel tile.
        let p = plan([1, 8, 8, 4, 8], 16, Conv3dConfig::cube(4, 4, 0), rows);
        assert_eq!(
            p.forward,
            ForwardKernel::Fast(FastForward::Rows {
                lanes,
                tile: RowsTile::M4C4
            })
        );
        // 2·7·6·6 = 504 output voxels from 64 channels: the 16-voxel tile on `rows`, also for
        // the flipped input gradient, and the 64-channel weight tile; the 8-voxel and
        // 32-channel tiles on `rows_c4`, the 24-voxel tile on `rows_c4_m24`; on `rows_w16`
        // 24 voxels × 2 channels and 32 × 2 channels (12 output channels), but 24 × 4 for
        // the input gradient (the flipped conv has 64).
        let p = plan([2, 7, 6, 6, 64], 12, Conv3dConfig::cube(3, 1, 1), rows);
        let (tile, input_tile, weight_tile) = match lanes {
            RowsLanes::Two => (RowsTile::M16C2, RowsTile::M16C2, RowsWeightTile::R16C2),
            RowsLanes::Four => (RowsTile::M8C4, RowsTile::M8C4, RowsWeightTile::R8C4),
            RowsLanes::FourDeep => (RowsTile::M24C4, RowsTile::M24C4, RowsWeightTile::R8C4),
            RowsLanes::Wide => (RowsTile::M24C2, RowsTile::M24C4, RowsWeightTile::R8C2),
        };
        let large = FastForward::Rows { lanes, tile };
        assert_eq!(p.forward, ForwardKernel::Fast(large));
        let flipped = FastForward::Rows {
            lanes,
            tile: input_tile,
        };
        assert!(matches!(p.input, InputKernel::FlippedConv { kernel, .. } if kernel == flipped));
        assert_eq!(
            p.weight,
            WeightKernel::Fast(FastWeight::Rows {
                lanes,
                tile: weight_tile
            })
        );
        // Groups 2, Cout 6: the register tiles (or naive) on every pass.
        for (cout, cfg) in [
            (16, Conv3dConfig::cube(3, 1, 1).groups(2)),
            (6, Conv3dConfig::cube(3, 1, 1)),
        ] {
            let p = plan([1, 6, 6, 6, 16], cout, cfg, rows);
            assert!(
                !p.kernel_names().contains(&name),
                "{cfg:?}: {:?}",
                p.kernel_names()
            );
        }
        // Cin 1 (the 7³ stride-2 stem): the forward folds its kernel axes into the channels,
        // the weight gradient keeps the register tile; Cout 6 from Cin 16: the input
        // gradient is the flipped conv 6 → 16, which folds.
        let p = plan([1, 8, 12, 12, 1], 16, Conv3dConfig::cube(7, 2, 3), rows);
        let folded = FastForward::RowsFolded { lanes };
        assert_eq!(p.forward, ForwardKernel::Fast(folded));
        assert_eq!(p.kernel_names()[0], lanes.folded_name());
        assert_eq!(p.kernel_names()[2], "tiled");
        let p = plan([1, 6, 6, 6, 16], 6, Conv3dConfig::cube(3, 1, 1), rows);
        assert!(matches!(
            p.input,
            InputKernel::FlippedConv { kernel, .. } if kernel == folded
        ));
        // 64 output channels fill 16 lanes of 4: the 4-channel tiles on `rows_w16` too, 24
        // voxels deep (504 output voxels).
        let p = plan([2, 7, 6, 6, 32], 64, Conv3dConfig::cube(3, 1, 1), rows);
        let (tile, weight_tile) = match lanes {
            RowsLanes::Two => (RowsTile::M16C2, RowsWeightTile::R8C4),
            RowsLanes::Four => (RowsTile::M8C4, RowsWeightTile::R8C4),
            RowsLanes::FourDeep | RowsLanes::Wide => (RowsTile::M24C4, RowsWeightTile::R8C4),
        };
        assert_eq!(
            p.forward,
            ForwardKernel::Fast(FastForward::Rows { lanes, tile })
        );
        assert_eq!(
            p.weight,
            WeightKernel::Fast(FastWeight::Rows {
                lanes,
                tile: weight_tile
            })
        );
        // Depthwise 3³ (the PVT blocks' DWConv): the depthwise row kernels, 16-lane on
        // `rows_w16`, named after the family.
        let p = plan(
            [1, 4, 6, 6, 32],
            32,
            Conv3dConfig::cube(3, 1, 1).groups(32),
            rows,
        );
        let wide = lanes == RowsLanes::Wide;
        assert_eq!(
            p.forward,
            ForwardKernel::Fast(FastForward::DepthwiseRows { wide })
        );
        assert_eq!(
            p.weight,
            WeightKernel::Fast(FastWeight::DepthwiseRows { wide })
        );
        let depthwise = if wide { "rows_w16" } else { "rows" };
        assert_eq!(p.kernel_names(), [depthwise; 3]);
    }
}
