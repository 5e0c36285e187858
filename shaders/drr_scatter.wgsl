// DRR adjoints (backprojection) as RAY-DRIVEN SCATTERS with float atomics — the fast volume
// gradient where the adapter has SHADER_FLOAT32_ATOMIC (wgpu `DeviceFeatures::float_atomics`).
// One invocation per ray walks exactly the voxels (Siddon) or samples (trilinear) of the forward
// kernels and adds its share of the upstream gradient into the slab's gradient:
//
//   siddon:    gvol[v] += g[b, r, c] · L · |ray ∩ [v − ½, v + ½]|_t      for every voxel v crossed
//   trilinear: gvol[v] += g[b, r, c] · step · Π_axes max(0, 1 − |p_k − v|) for the 8 corners of
//              every sample p_k (summed in registers per ray while the ray stays near v, see
//              drr_scatter_walks.wgsl)
//
// so gvol = Pᵀ g, the same adjoint as the voxel-driven gather in drr_backproject.wgsl (its
// oracle), at the cost of one walk per ray instead of one footprint scan per voxel. The order of
// the atomic adds is not fixed, so results vary in the last bits from run to run (not
// deterministic); the gather is deterministic.
//
// Layouts: poses [B, 6]; g [B, H, W]; gvol [nz, ny, nx] (the slab, x fastest; zero-filled by the
// launcher, then accumulated).
// Bindings: 0 params, 1 poses, 2 g, 3 gvol (read_write, array<atomic<f32>>).
// Dispatch: one invocation per ray, 8×8 detector tiles per workgroup (tiled_ray).
// Source: this file (binding and `scatter_add`), then drr_geometry.wgsl, the shared walks
// (drr_siddon_walk.wgsl, drr_trilinear_samples.wgsl) and the entries in drr_scatter_walks.wgsl.
// Launched by src/ops/drr.rs (backproject_slab).

@group(0) @binding(0) var<uniform> p: DrrParams;
@group(0) @binding(1) var<storage, read> poses: array<f32>;
@group(0) @binding(2) var<storage, read> g_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> gvol: array<atomic<f32>>;

fn scatter_add(i: u32, v: f32) {
    atomicAdd(&gvol[i], v);
}
