//! Which kernel computes a matmul: the variants ([`MatmulKernel`]), their names, the choice per
//! adapter (timed once, cached, overridable by `CADS_KERNEL_MATMUL`) and their kernel specs, the
//! vec4 tiles' transposed-A forms included. The launch, the shapes and the autograd record are
//! src/ops/matmul.rs.

use super::matmul::MatmulParams;
use super::matmul_tiled::SharedTile;
use super::matmul_tune::TuneBench;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelSpec, TuneRequest, TunedChoice};

const SOURCE: &str = include_str!("../../shaders/matmul.wgsl");

const fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "matmul",
        source: SOURCE,
        entry,
        inputs: 2,
        outputs: 1,
        params: MatmulParams::LAYOUT,
        constants: &[],
    }
}

const fn spec_vec4(entry: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "matmul_vec4",
        source: include_str!("../../shaders/matmul_vec4.wgsl"),
        ..spec(entry)
    }
}

/// A `_bias` form: inputs a, b and the bias, then c.
const fn spec_vec4_bias(entry: &'static str) -> KernelSpec {
    KernelSpec {
        inputs: 3,
        ..spec_vec4(entry)
    }
}

/// Invocations per workgroup of the scalar tile and of the vec4 tiles without a `_w<WG>` suffix
/// (along columns); matches the generator.
pub(crate) const TILE_WORKGROUP: u32 = 64;

/// The tall tiles in workgroups of one lavapipe SIMD row (8 invocations).
const VEC4_32X4_W8: MatmulKernel = MatmulKernel::Vec4 {
    rows: 32,
    cols: 4,
    lanes: 8,
    staged_k: 0,
};
const VEC4_16X8_W8: MatmulKernel = MatmulKernel::Vec4 {
    rows: 16,
    cols: 8,
    lanes: 8,
    staged_k: 0,
};
/// The tall tile in workgroups of one 16-lane SIMD row: llvmpipe with 512-bit vectors
/// (`LP_NATIVE_VECTOR_WIDTH=512`, an AVX-512 CPU).
const VEC4_32X4_W16: MatmulKernel = MatmulKernel::Vec4 {
    rows: 32,
    cols: 4,
    lanes: 16,
    staged_k: 0,
};
/// 16 rows × one pair of columns (vec2) per invocation: the 8×4 tile's accumulators with half
/// its per-lane B values per FMA (docs/kernel-tuning.md, "Two columns per lane").
const VEC4_16X2: MatmulKernel = MatmulKernel::vec4(16, 2);

/// Which kernel computes a matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// One output per invocation: slow, simple, the oracle the tiled kernels are tested against.
    Naive,
    /// Register tile of `rows × cols` outputs per invocation.
    Tile { rows: u32, cols: u32 },
    /// Register tile of `rows × cols` outputs on vec4 loads of A (shaders/matmul_vec4.wgsl), in
    /// workgroups of `lanes` invocations; B and C in vec4 column groups, or in one vec2 group
    /// when `cols` is 2. Needs K % 4 == 0 and N % 4 == 0; a transposed A with
    /// M % 4 == 0 is read in place (the `_ta` forms), as is a transposed B (the `_tb` forms)
    /// when A is not transposed too; any other transposed operand is first copied to row-major
    /// (O(size), small next to the O(M·N·K) product). Other shapes fall back to
    /// `Tile { 4, 4 }`. `staged_k` > 0: A is staged in workgroup memory
    /// `staged_k` values of k at a time (the `_sa<staged_k>` tiles, workgroups of 8, 4 columns).
    Vec4 {
        rows: u32,
        cols: u32,
        lanes: u32,
        staged_k: u32,
    },
    /// A workgroup-memory tile for GPUs (src/ops/matmul_tiled.rs): any shape, either transpose,
    /// no copies. On a device without what the tile needs (subgroups, workgroup memory) another
    /// tile runs, or `vec4_4x4` when none fits ([`SharedTile::on_device`]).
    Shared(SharedTile),
}

impl MatmulKernel {
    /// Every kernel variant (tests and benchmarks walk this list).
    pub const ALL: &'static [MatmulKernel] = &[
        MatmulKernel::Naive,
        MatmulKernel::Tile { rows: 4, cols: 4 },
        MatmulKernel::vec4(4, 4),
        MatmulKernel::vec4(4, 8),
        MatmulKernel::vec4(8, 4),
        MatmulKernel::vec4(8, 8),
        VEC4_32X4_W8,
        VEC4_16X8_W8,
        VEC4_32X4_W16,
        VEC4_16X2,
        MatmulKernel::Vec4 {
            rows: 32,
            cols: 4,
            lanes: 8,
            staged_k: 128,
        },
        MatmulKernel::Vec4 {
            rows: 48,
            cols: 4,
            lanes: 8,
            staged_k: 64,
        },
        MatmulKernel::Shared(SharedTile::Wg64x64),
        MatmulKernel::Shared(SharedTile::Wg128x64),
        MatmulKernel::Shared(SharedTile::Wg128x128),
        MatmulKernel::Shared(SharedTile::Sg128x128),
    ];

    /// A vec4 tile in the default workgroup of 64.
    pub const fn vec4(rows: u32, cols: u32) -> MatmulKernel {
        MatmulKernel::Vec4 {
            rows,
            cols,
            lanes: TILE_WORKGROUP,
            staged_k: 0,
        }
    }

    /// The kernel when tuning is off (`CADS_TUNE=off`): the vec4 4×4 tile, best on lavapipe
    /// Mesa 25, where every storage-buffer load becomes a per-lane checked sequence and larger
    /// tiles lose (docs/lavapipe-loads.md); within 1.7× of the best tile elsewhere.
    pub fn default_for(_gpu: &Gpu) -> MatmulKernel {
        MatmulKernel::vec4(4, 4)
    }

    /// The kernels the tuner times on this adapter: the vec4 register tiles everywhere, and on
    /// GPU adapters also the workgroup-memory tiles the device runs
    /// ([`SharedTile::candidates`]).
    pub fn candidates(gpu: &Gpu) -> Vec<MatmulKernel> {
        let mut kernels: Vec<MatmulKernel> = MatmulKernel::ALL
            .iter()
            .copied()
            .filter(|k| matches!(k, MatmulKernel::Vec4 { .. }))
            .collect();
        kernels.extend(
            SharedTile::candidates(gpu)
                .into_iter()
                .map(MatmulKernel::Shared),
        );
        kernels
    }

    /// The kernel this context runs: `CADS_KERNEL_MATMUL` when set (an unknown name is an
    /// error), else the candidate measured fastest on this adapter at first use (cached on
    /// disk, see src/gpu/tuning.rs), else with `CADS_TUNE=off` [`MatmulKernel::default_for`].
    pub fn chosen(gpu: &Gpu) -> Result<MatmulKernel> {
        MatmulKernel::from_name(&MatmulKernel::tuned_choice(gpu)?.variant)
    }

    /// [`MatmulKernel::chosen`] with where the choice came from (override, default, cache or
    /// measured now).
    pub fn tuned_choice(gpu: &Gpu) -> Result<TunedChoice> {
        if let Some(choice) = gpu.remembered_choice("matmul") {
            return Ok(choice);
        }
        let names: Vec<String> = MatmulKernel::ALL.iter().map(|k| k.name()).collect();
        let variants: Vec<&str> = names.iter().map(String::as_str).collect();
        let candidate_names: Vec<String> = MatmulKernel::candidates(gpu)
            .iter()
            .map(|k| k.name())
            .collect();
        let candidates: Vec<&str> = candidate_names.iter().map(String::as_str).collect();
        let default = MatmulKernel::default_for(gpu).name();
        let request = TuneRequest {
            op: "matmul",
            variants: &variants,
            candidates: &candidates,
            default: &default,
            kernels: &[
                KERNELS,
                KERNELS_NARROW,
                KERNELS_TA,
                KERNELS_TB,
                KERNELS_BIAS,
                KERNELS_PACKED_B,
                KERNELS_PACKED_B_BIAS,
                super::matmul_pack_b::KERNELS,
                super::matmul_subgroup_a::KERNELS,
                super::matmul_tiled::KERNELS,
            ],
        };
        let mut bench = TuneBench::new(gpu);
        gpu.tuned_variant(&request, |name| {
            bench.measure(MatmulKernel::from_name(name)?)
        })
    }

    /// The kernel that runs for this one on `gpu`, decided from the device before any work: a
    /// workgroup-memory tile the device cannot run is replaced ([`SharedTile::on_device`], else
    /// `vec4_4x4`); every other kernel runs as itself.
    pub fn runs_as(self, gpu: &Gpu) -> MatmulKernel {
        match self {
            MatmulKernel::Shared(tile) => tile
                .on_device(gpu)
                .map_or(MatmulKernel::vec4(4, 4), MatmulKernel::Shared),
            kernel => kernel,
        }
    }

    /// The kernel named `name` (as [`MatmulKernel::name`] prints it).
    pub fn from_name(name: &str) -> Result<MatmulKernel> {
        MatmulKernel::ALL
            .iter()
            .copied()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<String> = MatmulKernel::ALL.iter().map(|k| k.name()).collect();
                Error::invalid("matmul", format!("a kernel named one of {names:?}"), name)
            })
    }

    /// Short name used in benchmark case names and `CADS_KERNEL_MATMUL`, e.g. `naive`, `4x4`,
    /// `vec4_8x4`, `vec4_32x4_w8`, `wg128x128`.
    pub fn name(self) -> String {
        match self {
            MatmulKernel::Naive => "naive".into(),
            MatmulKernel::Tile { rows, cols } => format!("{rows}x{cols}"),
            MatmulKernel::Vec4 {
                rows,
                cols,
                lanes: TILE_WORKGROUP,
                staged_k: 0,
            } => format!("vec4_{rows}x{cols}"),
            MatmulKernel::Vec4 {
                rows,
                cols,
                lanes,
                staged_k: 0,
            } => format!("vec4_{rows}x{cols}_w{lanes}"),
            MatmulKernel::Vec4 {
                rows,
                cols,
                lanes,
                staged_k,
            } => format!("vec4_{rows}x{cols}_w{lanes}_sa{staged_k}"),
            MatmulKernel::Shared(tile) => tile.name().into(),
        }
    }

    pub(super) fn spec(self) -> Result<&'static KernelSpec> {
        if let MatmulKernel::Shared(tile) = self {
            return Ok(tile.spec());
        }
        if let Some(i) = NARROW_TILES.iter().position(|k| *k == self) {
            return Ok(&KERNELS_NARROW[i]);
        }
        let i = MatmulKernel::ALL
            .iter()
            .position(|k| *k == self)
            .ok_or_else(|| {
                Error::invalid(
                    "matmul",
                    "a tile listed in MatmulKernel::ALL",
                    format!("{self:?}"),
                )
            })?;
        Ok(&KERNELS[i])
    }
}

/// Same order as `MatmulKernel::ALL`.
pub(crate) const KERNELS: &[KernelSpec] = &[
    spec("matmul_naive"),
    spec("matmul_tile_4x4"),
    spec_vec4("matmul_vec4_4x4"),
    spec_vec4("matmul_vec4_4x8"),
    spec_vec4("matmul_vec4_8x4"),
    spec_vec4("matmul_vec4_8x8"),
    spec_vec4("matmul_vec4_32x4_w8"),
    spec_vec4("matmul_vec4_16x8_w8"),
    spec_vec4("matmul_vec4_32x4_w16"),
    spec_vec4("matmul_vec4_16x2"),
    spec_vec4("matmul_vec4_32x4_w8_sa128"),
    spec_vec4("matmul_vec4_48x4_w8_sa64"),
];

/// Lanes of the narrow companions of the vec4 tiles of [`TILE_WORKGROUP`] lanes.
const NARROW_LANES: u32 = 16;

/// Products of at most this many rows take the 8 × 8 vec4 tile ([`MatmulKernel::for_rows`]).
const SHORT_ROWS: usize = 8;

const fn narrow(rows: u32, cols: u32) -> MatmulKernel {
    MatmulKernel::Vec4 {
        rows,
        cols,
        lanes: NARROW_LANES,
        staged_k: 0,
    }
}

/// The narrow companions (`_w16`) of the tiles of 64 lanes, and their plain forms in the same
/// order; not tuning candidates of their own: [`MatmulKernel::for_columns`] swaps one in.
const NARROW_TILES: [MatmulKernel; 5] = [
    narrow(4, 4),
    narrow(4, 8),
    narrow(8, 4),
    narrow(8, 8),
    narrow(16, 2),
];
pub(crate) const KERNELS_NARROW: &[KernelSpec] = &[
    spec_vec4("matmul_vec4_4x4_w16"),
    spec_vec4("matmul_vec4_4x8_w16"),
    spec_vec4("matmul_vec4_8x4_w16"),
    spec_vec4("matmul_vec4_8x8_w16"),
    spec_vec4("matmul_vec4_16x2_w16"),
];

/// The vec4 register tiles that also come in a transposed-A form (`matmul_vec4_ta_*`, reading
/// A stored `[.., K, M]` directly), a transposed-B form (`matmul_vec4_tb_*`, reading B stored
/// `[.., N, K]` directly) and a `_bias` form ([`KERNELS_BIAS`]), and those forms, in the same
/// order.
const FORM_TILES: [MatmulKernel; 13] = [
    MatmulKernel::vec4(4, 4),
    MatmulKernel::vec4(4, 8),
    MatmulKernel::vec4(8, 4),
    MatmulKernel::vec4(8, 8),
    VEC4_32X4_W8,
    VEC4_16X8_W8,
    VEC4_32X4_W16,
    NARROW_TILES[0],
    NARROW_TILES[1],
    NARROW_TILES[2],
    NARROW_TILES[3],
    VEC4_16X2,
    NARROW_TILES[4],
];
pub(crate) const KERNELS_TA: &[KernelSpec] = &[
    spec_vec4("matmul_vec4_ta_4x4"),
    spec_vec4("matmul_vec4_ta_4x8"),
    spec_vec4("matmul_vec4_ta_8x4"),
    spec_vec4("matmul_vec4_ta_8x8"),
    spec_vec4("matmul_vec4_ta_32x4_w8"),
    spec_vec4("matmul_vec4_ta_16x8_w8"),
    spec_vec4("matmul_vec4_ta_32x4_w16"),
    spec_vec4("matmul_vec4_ta_4x4_w16"),
    spec_vec4("matmul_vec4_ta_4x8_w16"),
    spec_vec4("matmul_vec4_ta_8x4_w16"),
    spec_vec4("matmul_vec4_ta_8x8_w16"),
    spec_vec4("matmul_vec4_ta_16x2"),
    spec_vec4("matmul_vec4_ta_16x2_w16"),
];
pub(crate) const KERNELS_TB: &[KernelSpec] = &[
    spec_vec4("matmul_vec4_tb_4x4"),
    spec_vec4("matmul_vec4_tb_4x8"),
    spec_vec4("matmul_vec4_tb_8x4"),
    spec_vec4("matmul_vec4_tb_8x8"),
    spec_vec4("matmul_vec4_tb_32x4_w8"),
    spec_vec4("matmul_vec4_tb_16x8_w8"),
    spec_vec4("matmul_vec4_tb_32x4_w16"),
    spec_vec4("matmul_vec4_tb_4x4_w16"),
    spec_vec4("matmul_vec4_tb_4x8_w16"),
    spec_vec4("matmul_vec4_tb_8x4_w16"),
    spec_vec4("matmul_vec4_tb_8x8_w16"),
    spec_vec4("matmul_vec4_tb_16x2"),
    spec_vec4("matmul_vec4_tb_16x2_w16"),
];

/// The plain forms with the bias row added (`C = A·B + 1·biasᵀ`, a linear layer's forward), in
/// the order of [`FORM_TILES`] (the A-staged tiles have none).
pub(crate) const KERNELS_BIAS: &[KernelSpec] = &[
    spec_vec4_bias("matmul_vec4_4x4_bias"),
    spec_vec4_bias("matmul_vec4_4x8_bias"),
    spec_vec4_bias("matmul_vec4_8x4_bias"),
    spec_vec4_bias("matmul_vec4_8x8_bias"),
    spec_vec4_bias("matmul_vec4_32x4_w8_bias"),
    spec_vec4_bias("matmul_vec4_16x8_w8_bias"),
    spec_vec4_bias("matmul_vec4_32x4_w16_bias"),
    spec_vec4_bias("matmul_vec4_4x4_w16_bias"),
    spec_vec4_bias("matmul_vec4_4x8_w16_bias"),
    spec_vec4_bias("matmul_vec4_8x4_w16_bias"),
    spec_vec4_bias("matmul_vec4_8x8_w16_bias"),
    spec_vec4_bias("matmul_vec4_16x2_bias"),
    spec_vec4_bias("matmul_vec4_16x2_w16_bias"),
];

/// The tiles with a `pb_` form (B packed in column panels: `PACKED_B_TILES` of
/// scripts/gen_matmul_wgsl.py), and those forms, plain and `_bias`, in the same order.
const PACKED_B_TILES: [MatmulKernel; 2] = [VEC4_32X4_W8, VEC4_32X4_W16];
pub(crate) const KERNELS_PACKED_B: &[KernelSpec] = &[
    spec_vec4("matmul_vec4_pb_32x4_w8"),
    spec_vec4("matmul_vec4_pb_32x4_w16"),
];
pub(crate) const KERNELS_PACKED_B_BIAS: &[KernelSpec] = &[
    spec_vec4_bias("matmul_vec4_pb_32x4_w8_bias"),
    spec_vec4_bias("matmul_vec4_pb_32x4_w16_bias"),
];

impl MatmulKernel {
    /// The kernel that runs this tile for a product with `n` columns: a vec4 tile of 64 lanes
    /// whose workgroup would leave at least half of them idle (`n` ≤ 32 lanes' columns) runs as
    /// its `_w16` companion, since a lane past the last column group computes a clamped copy of
    /// it (a PVT stage-1 layer, 64 columns in the 8×4 tile's 256, did 4× the work); every other
    /// kernel runs as itself.
    pub(crate) fn for_columns(self, n: usize) -> MatmulKernel {
        match self {
            MatmulKernel::Vec4 {
                rows,
                cols,
                lanes: TILE_WORKGROUP,
                staged_k: 0,
            } if n <= (TILE_WORKGROUP / 2 * cols) as usize => narrow(rows, cols),
            kernel => kernel,
        }
    }

    /// The kernel that runs this tile for a product of `m` rows: a vec4 tile of more than 8 rows
    /// on at most 8 rows (a DINO head's last layer: a few crops times a [256, 60000] weight)
    /// computes clamped copies of the last row in most of its accumulators and streams B as
    /// slowly as for a full tile, so the 8 × 8 tile runs it (`matmul/head_6x256_by_256x60000`:
    /// 1.5× the 32 × 4 tile on lavapipe; docs/kernel-tuning.md); every other kernel as itself.
    pub(crate) fn for_rows(self, m: usize) -> MatmulKernel {
        match self {
            MatmulKernel::Vec4 { rows, .. } if rows > SHORT_ROWS as u32 && m <= SHORT_ROWS => {
                MatmulKernel::vec4(8, 8)
            }
            kernel => kernel,
        }
    }

    /// The transposed-A form of this vec4 tile, if it has one (the A-staged tiles do not).
    pub(super) fn spec_ta(self) -> Option<&'static KernelSpec> {
        self.form_of(KERNELS_TA)
    }

    /// The transposed-B form of this vec4 tile, if it has one (the A-staged tiles do not).
    pub(super) fn spec_tb(self) -> Option<&'static KernelSpec> {
        self.form_of(KERNELS_TB)
    }

    /// The plain form with the bias row added, if this vec4 tile has one.
    pub(super) fn spec_bias(self) -> Option<&'static KernelSpec> {
        self.form_of(KERNELS_BIAS)
    }

    /// The `pb_` form of this vec4 tile (B read from column panels, src/ops/matmul_pack_b.rs),
    /// plain or with the bias row, and its panel width in vec4 column groups; the tall tiles of
    /// one SIMD row have one.
    pub(super) fn spec_packed_b(self, bias: bool) -> Option<(&'static KernelSpec, usize)> {
        let i = PACKED_B_TILES.iter().position(|k| *k == self)?;
        let MatmulKernel::Vec4 { cols, lanes, .. } = self else {
            return None;
        };
        let forms = if bias {
            KERNELS_PACKED_B_BIAS
        } else {
            KERNELS_PACKED_B
        };
        Some((&forms[i], (lanes * cols / 4) as usize))
    }

    /// The entry of `forms` (listed in the order of [`FORM_TILES`]) for this tile.
    fn form_of(self, forms: &'static [KernelSpec]) -> Option<&'static KernelSpec> {
        FORM_TILES
            .iter()
            .position(|k| *k == self)
            .map(|i| &forms[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_narrow_tile_is_a_wide_tiles_twin_in_workgroups_of_16() {
        assert_eq!(NARROW_TILES.len(), KERNELS_NARROW.len());
        for (tile, spec) in NARROW_TILES.iter().zip(KERNELS_NARROW) {
            assert_eq!(spec.entry, format!("matmul_{}", tile.name()));
            assert!(spec.entry.ends_with("_w16"), "{}", spec.entry);
            let MatmulKernel::Vec4 { rows, cols, .. } = *tile else {
                panic!("{tile:?}")
            };
            let wide = MatmulKernel::vec4(rows, cols);
            assert!(MatmulKernel::ALL.contains(&wide), "{wide:?}");
            // Narrow up to half the wide workgroup's columns, wide past it.
            let half = (TILE_WORKGROUP / 2 * cols) as usize;
            assert_eq!(wide.for_columns(half), *tile);
            assert_eq!(wide.for_columns(half + 4), wide);
            assert_eq!(tile.for_columns(4), *tile);
            assert_eq!(tile.spec().unwrap().entry, spec.entry);
        }
        assert_eq!(VEC4_32X4_W8.for_columns(4), VEC4_32X4_W8);
    }

    #[test]
    fn each_transposed_form_is_its_tiles_twin() {
        for (forms, tag) in [(KERNELS_TA, "vec4_ta_"), (KERNELS_TB, "vec4_tb_")] {
            assert_eq!(FORM_TILES.len(), forms.len());
            for (tile, spec) in FORM_TILES.iter().zip(forms) {
                let twin = format!("matmul_{}", tile.name().replacen("vec4_", tag, 1));
                assert_eq!(spec.entry, twin);
                assert!(
                    MatmulKernel::ALL.contains(tile) || NARROW_TILES.contains(tile),
                    "{tile:?}"
                );
            }
        }
        for (i, tile) in PACKED_B_TILES.iter().enumerate() {
            let twin = format!("matmul_{}", tile.name().replacen("vec4_", "vec4_pb_", 1));
            let (plain, panel4) = tile.spec_packed_b(false).unwrap();
            let (biased, _) = tile.spec_packed_b(true).unwrap();
            assert_eq!(plain.entry, twin);
            assert_eq!(biased.entry, format!("{twin}_bias"));
            assert_eq!((plain.inputs, biased.inputs), (2, 3));
            assert_eq!(panel4, [8, 16][i]);
        }
        assert!(VEC4_16X8_W8.spec_packed_b(false).is_none());
        assert_eq!(FORM_TILES.len(), KERNELS_BIAS.len());
        for tile in FORM_TILES {
            let spec = tile.spec_bias().unwrap();
            assert_eq!(spec.entry, format!("matmul_{}_bias", tile.name()));
            assert_eq!(spec.inputs, 3);
        }
    }
}
