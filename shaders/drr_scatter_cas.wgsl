// DRR adjoints as ray-driven scatters WITHOUT float atomics: the same walks as drr_scatter.wgsl
// (see its header for the equations), with the float add emulated by a compare-and-swap loop on
// the f32 bits in an atomic<u32> — core WGSL, so this runs on every adapter. Contention is low
// (neighbouring rays rarely hit one voxel at the same instant), so the loop rarely repeats.
// Not deterministic (the order of adds varies).
//
// Layouts: poses [B, 6]; g [B, H, W]; gvol [nz, ny, nx] as f32 bits (zero-filled by the launcher).
// Bindings: 0 params, 1 poses, 2 g, 3 gvol (read_write, array<atomic<u32>>).
// Dispatch: one invocation per ray, 8×8 detector tiles per workgroup (tiled_ray).
// Source: this file, then drr_geometry.wgsl, the shared walks and the entries
// (drr_trilinear_samples.wgsl, drr_scatter_walks.wgsl, drr_siddon_walk.wgsl).
// Launched by src/ops/drr.rs (backproject_slab).

@group(0) @binding(0) var<uniform> p: DrrParams;
@group(0) @binding(1) var<storage, read> poses: array<f32>;
@group(0) @binding(2) var<storage, read> g_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> gvol: array<atomic<u32>>;

fn scatter_add(i: u32, v: f32) {
    var old = atomicLoad(&gvol[i]);
    loop {
        let r = atomicCompareExchangeWeak(&gvol[i], old, bitcast<u32>(bitcast<f32>(old) + v));
        if (r.exchanged) { break; }
        old = r.old_value;
    }
}
