// DRR adjoints (backprojection) as voxel-driven GATHERS: no float atomics, deterministic.
// One invocation per voxel of the bound slab; for every pose it projects the voxel's support box
// onto the detector, and sums over the pixels of that footprint the upstream gradient times the
// voxel's weight in that ray's line integral:
//
//   siddon:    gvol[v] = Σ_b Σ_(r,c) g[b, r, c] · L · |ray ∩ [v − ½, v + ½]|_t
//   trilinear: gvol[v] = Σ_b Σ_(r,c) g[b, r, c] · step · Σ_k Π_axes max(0, 1 − |p_k − v|)
//
// with the same rays, sample grid (t_k = k·step/L) and index frame as drr_siddon.wgsl /
// drr_trilinear.wgsl, so ⟨P v, g⟩ = ⟨v, Pᵀ g⟩ holds to rounding. The footprint is the bounding
// rectangle of the 8 projected corners (a perspective map keeps a box in front of the source
// inside the hull of its corners); a box reaching behind the source scans the whole detector.
//
// Layouts: poses [B, 6]; g [B, H, W]; gvol [nz, ny, nx] (the slab, x fastest).
// Bindings: 0 params, 1 poses, 2 g, 3 gvol (read_write, written fresh).
// Dispatch: one invocation per slab voxel, workgroup 64, folded 1-D grid.
// Launched by src/ops/drr.rs (backproject_raw).

@group(0) @binding(0) var<uniform> p: DrrParams;
@group(0) @binding(1) var<storage, read> poses: array<f32>;
@group(0) @binding(2) var<storage, read> g_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> gvol: array<f32>;
// The geometry block (DrrParams, pose → ray) is shaders/drr_geometry.wgsl, appended to this
// source by src/ops/drr.rs (WGSL has no include).

// Local voxel index → world mm.
fn index_to_world(i: vec3<f32>) -> vec3<f32> {
    let z = i.z + f32(p.z_offset);
    return vec3<f32>(
        p.aff00 * i.x + p.aff01 * i.y + p.aff02 * z + p.aff03,
        p.aff10 * i.x + p.aff11 * i.y + p.aff12 * z + p.aff13,
        p.aff20 * i.x + p.aff21 * i.y + p.aff22 * z + p.aff23);
}

// Pixel rectangle [c0, c1] × [r0, r1] covering the projection of the index box [lo, hi].
fn footprint(q: PoseCS, lo: vec3<f32>, hi: vec3<f32>) -> vec4<i32> {
    var cmin = BIG;
    var cmax = -BIG;
    var rmin = BIG;
    var rmax = -BIG;
    var full = false;
    let cone = (p.flags & FLAG_PARALLEL) == 0u;
    for (var k = 0u; k < 8u; k += 1u) {
        let corner = select(lo, hi, vec3<bool>((k & 1u) != 0u, (k & 2u) != 0u, (k & 4u) != 0u));
        let cam = rotate_inv(q, index_to_world(corner) - vec3<f32>(p.iso_x, p.iso_y, p.iso_z) - q.t);
        var scale = 1.0;
        if (cone) {
            let depth = cam.y + p.sid;
            if (depth <= 1e-3 * p.sdd) {
                full = true;
            } else {
                scale = p.sdd / depth;
            }
        }
        let col = (cam.x * scale - p.off_u) / p.pix_u + 0.5 * f32(p.det_w - 1u);
        let row = (-cam.z * scale - p.off_v) / p.pix_v + 0.5 * f32(p.det_h - 1u);
        cmin = min(cmin, col);
        cmax = max(cmax, col);
        rmin = min(rmin, row);
        rmax = max(rmax, row);
    }
    let wmax = f32(p.det_w - 1u);
    let hmax = f32(p.det_h - 1u);
    if (full) { return vec4<i32>(0, i32(p.det_w) - 1, 0, i32(p.det_h) - 1); }
    // A ray through a pixel centre meets the box only if the centre lies in the projected hull,
    // so the pixel centres in [min, max] suffice (1e-3 px of slack for rounding). Clamp in float
    // first so the conversion to i32 is always in range.
    return vec4<i32>(i32(clamp(ceil(cmin - 1e-3), -1.0, wmax + 1.0)), i32(clamp(floor(cmax + 1e-3), -1.0, wmax + 1.0)),
                     i32(clamp(ceil(rmin - 1e-3), -1.0, hmax + 1.0)), i32(clamp(floor(rmax + 1e-3), -1.0, hmax + 1.0)));
}

fn voxel_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 64u + lid;
}

fn voxel_centre(i: u32) -> vec3<f32> {
    return vec3<f32>(f32(i % p.nx), f32((i / p.nx) % p.ny), f32(i / (p.nx * p.ny)));
}

@compute @workgroup_size(64)
fn siddon_backproject(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = voxel_id(wg, nwg, lid);
    if (i >= p.nx * p.ny * p.nz) { return; }
    let v = voxel_centre(i);
    let lo = v - 0.5;
    let hi = v + 0.5;
    var acc = 0.0;
    for (var b = 0u; b < p.n_poses; b += 1u) {
        let q = load_pose(b);
        let fp = footprint(q, lo, hi);
        for (var row = max(fp.z, 0); row <= min(fp.w, i32(p.det_h) - 1); row += 1) {
            for (var col = max(fp.x, 0); col <= min(fp.y, i32(p.det_w) - 1); col += 1) {
                let r = make_ray(q, u32(row), u32(col));
                let sp = clip_box(r.ai, r.bi - r.ai, lo, hi);
                if (sp.t0 < sp.t1) {
                    let o = (b * p.det_h + u32(row)) * p.det_w + u32(col);
                    acc += g_up[o] * (sp.t1 - sp.t0) * length(r.bw - r.aw);
                }
            }
        }
    }
    gvol[i] = acc;
}

@compute @workgroup_size(64)
fn trilinear_backproject(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = voxel_id(wg, nwg, lid);
    if (i >= p.nx * p.ny * p.nz) { return; }
    let v = voxel_centre(i);
    let lo = v - 1.0;
    let hi = v + 1.0;
    var acc = 0.0;
    for (var b = 0u; b < p.n_poses; b += 1u) {
        let q = load_pose(b);
        let fp = footprint(q, lo, hi);
        for (var row = max(fp.z, 0); row <= min(fp.w, i32(p.det_h) - 1); row += 1) {
            for (var col = max(fp.x, 0); col <= min(fp.y, i32(p.det_w) - 1); col += 1) {
                let r = make_ray(q, u32(row), u32(col));
                let d = r.bi - r.ai;
                let len = length(r.bw - r.aw);
                let dt = p.step_mm / len;
                let sp = clip_box(r.ai, d, lo, hi);
                if (sp.t0 < sp.t1) {
                    var w = 0.0;
                    for (var k = i32(ceil(sp.t0 / dt)); k <= i32(floor(sp.t1 / dt)); k += 1) {
                        let off = abs(r.ai + d * (f32(k) * dt) - v);
                        let tent = max(vec3<f32>(0.0), 1.0 - off);
                        w += tent.x * tent.y * tent.z;
                    }
                    let o = (b * p.det_h + u32(row)) * p.det_w + u32(col);
                    acc += g_up[o] * w * p.step_mm;
                }
            }
        }
    }
    gvol[i] = acc;
}
