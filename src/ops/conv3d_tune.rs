//! The conv3d kernel family per adapter: which [`ConvPath`] `conv3d` takes (src/gpu/tuning.rs
//! decides; this file says what is timed and how).
//!
//! Variants (`CADS_KERNEL_CONV3D=<name>`): `tiled`, the register-tiled kernels of conv3d_fast.rs
//! (the default), `igemm_64x64` and `igemm_128x32`, the workgroup-memory implicit GEMM of
//! conv3d_igemm.rs (for GPUs; where a shape does not fit it, the register tiles), `rows`,
//! `rows_c4`, `rows_c4_m24` and `rows_w16`, the lanes-over-output-channel kernels of conv3d_rows.rs
//! with 2 or 4 output channels per lane and 8 to 24 voxels per invocation in their large tiles, in
//! workgroups of 8 or (`rows_w16`) 16 lanes (for CPU adapters; where a shape does not fit them, the
//! register tiles), and `naive`, the oracle. One choice covers the forward and both gradients.
//!
//! Candidates: on CPU adapters `tiled`, `rows`, `rows_c4` and `rows_c4_m24` (which row tile wins
//! depends on the CPU under the driver, [`RowsLanes`]), and `rows_w16` where the adapter's
//! subgroups have 16 lanes or more (lavapipe at `LP_NATIVE_VECTOR_WIDTH=512`; at 8 lanes a 16-lane
//! workgroup runs as two SIMD rows and measured within 1% of `rows_c4` on the tuning convs but 7%
//! slower on the whole encoder step, so it is not offered there: docs/kernel-tuning.md, "Sixteen
//! lanes per workgroup"); the implicit GEMM needs barriers, which lavapipe runs as separately
//! scheduled pieces of a workgroup loop: the matmul tiles built the same way measured 1.8–4.8×
//! slower than the register tiles there, docs/kernel-tuning.md). On other adapters `tiled` and the
//! implicit-GEMM tiles the device runs (`rows`' workgroups of 8 would leave most of a warp idle).
//! Each is timed on forward + input gradient + weight gradient of two representative convs: a
//! 32-channel 3³ conv at 2 × 16 × 32 × 32 (as in the decoders) and a strided 64 → 128 patch
//! embedding (k3 s2, the sub-pixel input gradient), about 12 GFLOP in all; on CPU adapters at a
//! quarter of the voxels (batch 1, half the depth), so the first conv of a process does not spend
//! tens of seconds tuning. A variant other than `tiled` and `naive` must first reproduce `tiled`'s
//! three results on both.

use std::time::Instant;

use super::conv3d::{
    backward_input_raw, backward_weight_raw, forward_raw, Conv3dConfig, ConvPlan, Geometry,
};
use super::conv3d_igemm::IgemmTile;
use super::conv3d_plan::ConvPath;
use super::conv3d_rows::RowsLanes;
use super::matmul_tune::disagreement;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, TuneRequest, TunedChoice};
use crate::tensor::Tensor;
use crate::util::Rng;

/// The op name of the choice: the memo and cache key, and `CADS_KERNEL_CONV3D`.
const OP: &str = "conv3d";

/// Every variant an override may name, in the order the tuner lists them.
const VARIANTS: [ConvPath; 8] = [
    ConvPath::Fast,
    ConvPath::Igemm(IgemmTile::T64x64),
    ConvPath::Igemm(IgemmTile::T128x32),
    ConvPath::Rows(RowsLanes::Two),
    ConvPath::Rows(RowsLanes::Four),
    ConvPath::Rows(RowsLanes::FourDeep),
    ConvPath::Rows(RowsLanes::Wide),
    ConvPath::Naive,
];

/// (input [N, D, H, W, Cin], Cout, config) of the convs timed on an adapter of this type: on
/// CPU adapters a quarter of the voxels (see the module docs).
fn tune_convs(device_type: wgpu::DeviceType) -> [([usize; 5], usize, Conv3dConfig); 2] {
    let (n, d) = if device_type == wgpu::DeviceType::Cpu {
        (1, 8)
    } else {
        (2, 16)
    };
    [
        ([n, d, 32, 32, 32], 32, Conv3dConfig::cube(3, 1, 1)),
        ([n, d, 32, 32, 64], 128, Conv3dConfig::cube(3, 2, 1)),
    ]
}

impl ConvPath {
    /// Every variant an override may name (`cads check` walks this list).
    pub const ALL: &'static [ConvPath] = &VARIANTS;

    /// `tiled`, `naive`, `igemm_64x64`, `igemm_128x32`, `rows`, `rows_c4`, `rows_c4_m24`,
    /// `rows_w16`; a forced register tile pair
    /// (`ConvPath::Tiles`, tests and benchmarks only) as `tiles_<forward>_<weight>`.
    pub fn name(self) -> String {
        match self {
            ConvPath::Fast => "tiled".into(),
            ConvPath::Naive => "naive".into(),
            ConvPath::Igemm(tile) => tile.name().into(),
            ConvPath::Rows(lanes) => lanes.name().into(),
            ConvPath::Tiles { forward, weight } => format!("tiles_{forward:?}_{weight:?}"),
        }
    }

    /// The variant named `name` (as [`ConvPath::name`] prints the tunable ones).
    pub fn from_name(name: &str) -> Result<ConvPath> {
        VARIANTS
            .into_iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| {
                let names: Vec<String> = VARIANTS.iter().map(|v| v.name()).collect();
                Error::invalid(OP, format!("a kernel variant named one of {names:?}"), name)
            })
    }

    /// The path that runs for this one on `gpu`, decided before any work: an implicit-GEMM tile
    /// the device cannot run (workgroup memory) is replaced by one it can, else by the register
    /// tiles; every other path runs as itself.
    pub fn runs_as(self, gpu: &Gpu) -> ConvPath {
        match self {
            ConvPath::Igemm(tile) => std::iter::once(tile)
                .chain(IgemmTile::ALL)
                .find(|t| t.check(gpu.limits()).is_ok())
                .map_or(ConvPath::Fast, ConvPath::Igemm),
            path => path,
        }
    }

    /// The variants the tuner times on this adapter: `tiled` and the row families on CPU adapters,
    /// `tiled` and the implicit-GEMM tiles the device runs elsewhere (see the module docs).
    pub fn candidates(gpu: &Gpu) -> Vec<ConvPath> {
        let a = gpu.adapter();
        ConvPath::candidates_for(a.device_type, a.subgroup_max_size, gpu.limits())
    }

    /// [`ConvPath::candidates`] for an adapter of this type, largest subgroup size and limits.
    pub fn candidates_for(
        device_type: wgpu::DeviceType,
        subgroup_max_size: u32,
        limits: &wgpu::Limits,
    ) -> Vec<ConvPath> {
        let mut paths = vec![ConvPath::Fast];
        if device_type == wgpu::DeviceType::Cpu {
            paths.extend([
                ConvPath::Rows(RowsLanes::Two),
                ConvPath::Rows(RowsLanes::Four),
                ConvPath::Rows(RowsLanes::FourDeep),
            ]);
            if subgroup_max_size as usize >= RowsLanes::Wide.workgroup_lanes() {
                paths.push(ConvPath::Rows(RowsLanes::Wide));
            }
        } else {
            paths.extend(
                IgemmTile::ALL
                    .into_iter()
                    .filter(|t| t.check(limits).is_ok())
                    .map(ConvPath::Igemm),
            );
        }
        paths
    }

    /// The path `conv3d` takes on this context: `CADS_KERNEL_CONV3D` when set (an unknown name
    /// is an error), else the candidate measured fastest on this adapter at first use (cached
    /// on disk, src/gpu/tuning.rs), else `tiled` (`CADS_TUNE=off`, or a failed tuning); resolved
    /// for the device ([`ConvPath::runs_as`]).
    pub fn chosen(gpu: &Gpu) -> Result<ConvPath> {
        Ok(ConvPath::from_name(&ConvPath::tuned_choice(gpu)?.variant)?.runs_as(gpu))
    }

    /// [`ConvPath::chosen`] with where the choice came from.
    pub fn tuned_choice(gpu: &Gpu) -> Result<TunedChoice> {
        if let Some(choice) = gpu.remembered_choice(OP) {
            return Ok(choice);
        }
        let names: Vec<String> = VARIANTS.iter().map(|v| v.name()).collect();
        let variants: Vec<&str> = names.iter().map(String::as_str).collect();
        let candidate_names: Vec<String> =
            ConvPath::candidates(gpu).iter().map(|v| v.name()).collect();
        let candidates: Vec<&str> = candidate_names.iter().map(String::as_str).collect();
        let request = TuneRequest {
            op: OP,
            variants: &variants,
            candidates: &candidates,
            default: "tiled",
            kernels: &[
                super::conv3d::KERNELS,
                super::conv3d_fast::KERNELS,
                super::conv3d_igemm::KERNELS,
                super::conv3d_rows::KERNELS,
            ],
        };
        let mut bench = ConvTuneBench::new(gpu);
        gpu.tuned_variant(&request, |name| bench.measure(ConvPath::from_name(name)?))
    }
}

/// One timed conv: its geometry and inputs x, w and an upstream gradient g.
struct TuneConv {
    geo: Geometry,
    x: Tensor,
    w: Tensor,
    g: Tensor,
}

/// The inputs (made at the first measurement), `tiled`'s results and the variants checked.
pub(crate) struct ConvTuneBench<'g> {
    gpu: &'g Gpu,
    convs: Vec<([usize; 5], usize, Conv3dConfig)>,
    inputs: Vec<TuneConv>,
    references: Vec<Option<[Vec<f32>; 3]>>,
    checked: Vec<ConvPath>,
}

impl<'g> ConvTuneBench<'g> {
    pub(crate) fn new(gpu: &'g Gpu) -> ConvTuneBench<'g> {
        let convs = tune_convs(gpu.adapter().device_type).to_vec();
        ConvTuneBench {
            gpu,
            references: vec![None; convs.len()],
            convs,
            inputs: Vec::new(),
            checked: Vec::new(),
        }
    }

    fn make_inputs(&mut self) -> Result<()> {
        if !self.inputs.is_empty() {
            return Ok(());
        }
        let mut rng = Rng::new(0xc0);
        for (x_shape, cout, cfg) in &self.convs {
            let k = cfg.kernel;
            let w_shape = [k[0], k[1], k[2], x_shape[4] / cfg.groups, *cout];
            let geo = Geometry::new(OP, x_shape, &w_shape, cfg)?;
            let random = |rng: &mut Rng, shape: &[usize]| {
                let n = shape.iter().product();
                Tensor::from_slice(self.gpu, &rng.vec_uniform(n, -1.0, 1.0), shape)
            };
            self.inputs.push(TuneConv {
                x: random(&mut rng, x_shape)?,
                w: random(&mut rng, &w_shape)?,
                g: random(&mut rng, &geo.out)?,
                geo,
            });
        }
        Ok(())
    }

    /// The three passes of one conv on `path`: [y, dL/dx, dL/dw].
    fn run(conv: &TuneConv, path: ConvPath) -> Result<[Tensor; 3]> {
        let plan = ConvPlan::new(conv.geo, path)?;
        Ok([
            forward_raw(&conv.x, &conv.w, None, &plan)?,
            backward_input_raw(&conv.g, &conv.w, &plan)?,
            backward_weight_raw(&conv.g, &conv.x, &plan)?,
        ])
    }

    /// Milliseconds of forward + both gradients of every conv on `path` (wall clock around
    /// submit and wait), after an implicit-GEMM or `rows` path reproduced `tiled` on all of them.
    pub(crate) fn measure(&mut self, path: ConvPath) -> Result<f64> {
        self.make_inputs()?;
        let checked = matches!(path, ConvPath::Igemm(_) | ConvPath::Rows(_));
        if checked && !self.checked.contains(&path) {
            self.check(path)?;
            self.checked.push(path);
        }
        self.gpu.synchronize()?;
        let t0 = Instant::now();
        for conv in &self.inputs {
            drop(ConvTuneBench::run(conv, path)?);
        }
        self.gpu.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }

    fn check(&mut self, path: ConvPath) -> Result<()> {
        for (i, conv) in self.inputs.iter().enumerate() {
            if self.references[i].is_none() {
                let [y, gx, gw] = ConvTuneBench::run(conv, ConvPath::Fast)?;
                self.references[i] = Some([y.to_vec()?, gx.to_vec()?, gw.to_vec()?]);
            }
            let want = self.references[i].as_ref().expect("made just above");
            let got = ConvTuneBench::run(conv, path)?;
            for (pass, (got, want)) in ["forward", "input gradient", "weight gradient"]
                .iter()
                .zip(got.iter().zip(want))
            {
                if let Some(worst) = disagreement(&got.to_vec()?, want) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "kernel variant {} to reproduce tiled's {pass} of x {:?} -> {} channels ({:?})",
                            path.name(),
                            conv.geo.x,
                            conv.geo.out[4],
                            conv.geo.cfg
                        ),
                        worst,
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cpu_adapters_time_tiled_and_rows() {
        for v in VARIANTS {
            assert_eq!(ConvPath::from_name(&v.name()).unwrap(), v);
        }
        let e = ConvPath::from_name("igemm_1x1").unwrap_err().to_string();
        assert!(e.contains("igemm_64x64") && e.contains("igemm_1x1"), "{e}");
        let big = wgpu::Limits {
            max_compute_workgroup_storage_size: 32_768,
            ..wgpu::Limits::default()
        };
        let eight_lanes = [
            ConvPath::Fast,
            ConvPath::Rows(RowsLanes::Two),
            ConvPath::Rows(RowsLanes::Four),
            ConvPath::Rows(RowsLanes::FourDeep),
        ];
        assert_eq!(
            ConvPath::candidates_for(wgpu::DeviceType::Cpu, 8, &big),
            eight_lanes
        );
        // 16-lane SIMD rows (lavapipe at 512-bit vectors) add the 16-lane row family.
        assert_eq!(
            ConvPath::candidates_for(wgpu::DeviceType::Cpu, 16, &big),
            [&eight_lanes[..], &[ConvPath::Rows(RowsLanes::Wide)]].concat()
        );
        assert_eq!(
            ConvPath::candidates_for(wgpu::DeviceType::DiscreteGpu, 32, &big),
            [
                ConvPath::Fast,
                ConvPath::Igemm(IgemmTile::T64x64),
                ConvPath::Igemm(IgemmTile::T128x32)
            ]
        );
        // 16 KiB: neither tile fits (17 408 and 21 504 bytes).
        assert_eq!(
            ConvPath::candidates_for(
                wgpu::DeviceType::IntegratedGpu,
                32,
                &wgpu::Limits::default()
            ),
            [ConvPath::Fast]
        );
    }

    /// An implicit-GEMM variant is timed only after it reproduced `tiled`; one that does not
    /// (a reference made wrong on purpose) is an error naming the variant and the pass.
    #[test]
    fn implicit_gemm_must_reproduce_the_register_tiles_before_it_is_timed() {
        let gpu = crate::gpu::unit_test_gpu();
        let mut bench = ConvTuneBench::new(&gpu);
        bench.convs = vec![
            ([1, 5, 6, 7, 8], 12, Conv3dConfig::cube(3, 1, 1)),
            ([1, 6, 7, 5, 8], 16, Conv3dConfig::cube(3, 2, 1)),
        ];
        bench.references = vec![None; 2];
        let path = ConvPath::Igemm(IgemmTile::T64x64);
        assert!(bench.measure(path).unwrap() > 0.0);
        assert!(bench.measure(ConvPath::Fast).unwrap() > 0.0);
        assert_eq!(bench.checked, [path]);
        if let Some(r) = bench.references[1].as_mut() {
            r[2].iter_mut().for_each(|v| *v += 1.0);
        }
        let other = ConvPath::Igemm(IgemmTile::T128x32);
        let e = bench.measure(other).unwrap_err().to_string();
        assert!(
            e.contains("igemm_128x32") && e.contains("weight gradient"),
            "{e}"
        );
    }
}
