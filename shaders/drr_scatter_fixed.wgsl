// DRR adjoints as ray-driven scatters in FIXED POINT: the same walks as drr_scatter.wgsl (see its
// header for the equations), with every contribution v added as the integer round(v · 2^s) by an
// i32 `atomicAdd` (core WGSL; one `lock xadd` on x86, where a float atomic add is a
// compare-exchange loop), then converted back to f32 by dividing by 2^s. Integer addition is
// associative, so the result does not depend on the order of the adds: bit-identical run to run.
//
// The scale 2^s (chosen per launch so no sum can overflow; the launcher, src/ops/drr.rs, derives
// the bound): `fixed_bound` = B_1 is a host bound on |Σ of the contributions to one voxel| per unit
// of max |g| (over all rays of the launch), so with m = max|g| · B_1 every exact voxel sum lies in
// [−m, m]. `fixed_scale` picks the largest integer s with 2^s · m <= 2^30. Each add rounds by at
// most ½ (one add per ray and voxel: a ray's cell moves monotonically along each axis, so it
// leaves a corner once), and a launch has fewer than 2^29 rays (DrrSetup::validate), so every
// partial sum of the integers stays below 2^30 + 2^28 < 2^31 (the f32 products carry a relative
// error ~1e-7, far inside the remaining margin). Absolute precision: each add is off by at most
// 2^−(s+1) <= m / 2^29 (s is at most one below the largest admissible), so a voxel's error is at
// most (number of rays adding to it) · m / 2^29.
// A non-finite g gives scale NaN, and then every voxel of the gradient is NaN (as the float
// scatters would give NaN or inf where the bad rays pass), never a silently wrong number.
//
// Layouts: poses [B, 6]; g [B, H, W]; scale [1] (f32, written by `fixed_scale`); gvol [nz, ny, nx]
// as i32 while accumulating (zero-filled by the launcher), f32 bits after `fixed_to_float`.
// Bindings (all three entries): 0 params, 1 poses, 2 g, 3 scale (read_write), 4 gvol (read_write,
// array<atomic<i32>>).
// Dispatch: `fixed_scale` one workgroup; the scatters one invocation per ray, 8×8 detector tiles
// per workgroup (tiled_ray); `fixed_to_float` one invocation per voxel of the slab.
// Source: this file, then drr_geometry.wgsl, the shared walks and the entries
// (drr_trilinear_samples.wgsl, drr_siddon_walk.wgsl, drr_scatter_walks.wgsl).
// Launched by src/ops/drr.rs (backproject_slab).

@group(0) @binding(0) var<uniform> p: DrrParams;
@group(0) @binding(1) var<storage, read> poses: array<f32>;
@group(0) @binding(2) var<storage, read> g_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> gvol: array<atomic<i32>>;

fn scatter_add(i: u32, v: f32) {
    atomicAdd(&gvol[i], i32(round(v * scale[0])));
}

const SCALE_WG: u32 = 256u;
var<workgroup> wg_max: array<f32, SCALE_WG>;
var<workgroup> wg_bad: array<u32, SCALE_WG>;

// scale[0] = 2^s for the largest s with 2^s · max|g| · fixed_bound <= 2^30 (1 when g is all zero,
// NaN when some g is not finite). One workgroup strides over the B·H·W upstream values.
@compute @workgroup_size(256)
fn fixed_scale(@builtin(local_invocation_index) lid: u32) {
    let n = p.n_poses * p.det_h * p.det_w;
    var mx = 0.0;
    var bad = 0u;
    for (var i = lid; i < n; i += SCALE_WG) {
        let bits = bitcast<u32>(g_up[i]);
        // exponent all ones: inf or NaN (tested on the bits: NaN compares may be folded away)
        bad |= u32((bits & 0x7f800000u) == 0x7f800000u);
        mx = max(mx, bitcast<f32>(bits & 0x7fffffffu));
    }
    wg_max[lid] = mx;
    wg_bad[lid] = bad;
    workgroupBarrier();
    for (var h = SCALE_WG / 2u; h > 0u; h /= 2u) {
        if (lid < h) {
            wg_max[lid] = max(wg_max[lid], wg_max[lid + h]);
            wg_bad[lid] |= wg_bad[lid + h];
        }
        workgroupBarrier();
    }
    if (lid != 0u) { return; }
    let m = wg_max[0] * p.fixed_bound;
    if (wg_bad[0] != 0u || (bitcast<u32>(m) & 0x7f800000u) == 0x7f800000u) {
        scale[0] = bitcast<f32>(0x7fc00000u); // NaN
        return;
    }
    if (m == 0.0) {
        scale[0] = 1.0;
        return;
    }
    // s = 30 − ceil(log2 m), then one step down if log2's rounding made it too large; ldexp by a
    // power of two is exact, so the test is exact. Clamped to the normal f32 range.
    var s = clamp(30 - i32(ceil(log2(m))), -126, 126);
    if (ldexp(m, s) > 1073741824.0) { s -= 1; }
    scale[0] = ldexp(1.0, s);
}

// gvol[i] = i32 sum / 2^s, written back as f32 bits in place.
@compute @workgroup_size(64)
fn fixed_to_float(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.nx * p.ny * p.nz) { return; }
    let v = f32(atomicLoad(&gvol[i])) / scale[0];
    atomicStore(&gvol[i], bitcast<i32>(v));
}
