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
// ---- shared DRR geometry block (identical in drr_siddon.wgsl, drr_trilinear.wgsl,
// ---- drr_backproject.wgsl; mirrors src/drr/geometry.rs and `DrrParams` in src/ops/drr.rs)
struct DrrParams {
    nx: u32, ny: u32, nz: u32, n_poses: u32,
    z_offset: u32, det_h: u32, det_w: u32, flags: u32,
    inv00: f32, inv01: f32, inv02: f32, inv03: f32,
    inv10: f32, inv11: f32, inv12: f32, inv13: f32,
    inv20: f32, inv21: f32, inv22: f32, inv23: f32,
    aff00: f32, aff01: f32, aff02: f32, aff03: f32,
    aff10: f32, aff11: f32, aff12: f32, aff13: f32,
    aff20: f32, aff21: f32, aff22: f32, aff23: f32,
    pix_v: f32, pix_u: f32, off_v: f32, off_u: f32,
    sdd: f32, sid: f32, step_mm: f32, _pad0: f32,
    iso_x: f32, iso_y: f32, iso_z: f32, _pad1: f32,
}

const FLAG_PARALLEL: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 2u;
const BIG: f32 = 1e30;

// cos and sin of (rx, ry, rz), and the translation (mm) of one pose.
struct PoseCS { c: vec3<f32>, s: vec3<f32>, t: vec3<f32> }

fn load_pose(b: u32) -> PoseCS {
    let r = vec3<f32>(poses[b * 6u], poses[b * 6u + 1u], poses[b * 6u + 2u]);
    let t = vec3<f32>(poses[b * 6u + 3u], poses[b * 6u + 4u], poses[b * 6u + 5u]);
    return PoseCS(cos(r), sin(r), t);
}

// Elementary rotations by (c, s) = (cos θ, sin θ).
fn rot_x(c: f32, s: f32, v: vec3<f32>) -> vec3<f32> { return vec3<f32>(v.x, c * v.y - s * v.z, s * v.y + c * v.z); }
fn rot_y(c: f32, s: f32, v: vec3<f32>) -> vec3<f32> { return vec3<f32>(c * v.x + s * v.z, v.y, -s * v.x + c * v.z); }
fn rot_z(c: f32, s: f32, v: vec3<f32>) -> vec3<f32> { return vec3<f32>(c * v.x - s * v.y, s * v.x + c * v.y, v.z); }

// R v with R = Rz(rz)·Rx(rx)·Ry(ry) (ZXY intrinsic).
fn rotate(q: PoseCS, v: vec3<f32>) -> vec3<f32> {
    return rot_z(q.c.z, q.s.z, rot_x(q.c.x, q.s.x, rot_y(q.c.y, q.s.y, v)));
}

// Rᵀ v.
fn rotate_inv(q: PoseCS, v: vec3<f32>) -> vec3<f32> {
    return rot_y(q.c.y, -q.s.y, rot_x(q.c.x, -q.s.x, rot_z(q.c.z, -q.s.z, v)));
}

// Camera-frame endpoints of the ray of pixel (row, col): a = source point, b = pixel centre.
struct Ray { a: vec3<f32>, b: vec3<f32> }

fn camera_ray(row: u32, col: u32) -> Ray {
    let x = (f32(col) - 0.5 * f32(p.det_w - 1u)) * p.pix_u + p.off_u;
    let z = -((f32(row) - 0.5 * f32(p.det_h - 1u)) * p.pix_v + p.off_v);
    let b = vec3<f32>(x, p.sdd - p.sid, z);
    var a = vec3<f32>(0.0, -p.sid, 0.0);
    if ((p.flags & FLAG_PARALLEL) != 0u) {
        a = vec3<f32>(x, -p.sid, z);
    }
    return Ray(a, b);
}

// Camera → world (mm): R v + isocentre + t.
fn to_world(q: PoseCS, v: vec3<f32>) -> vec3<f32> {
    return rotate(q, v) + vec3<f32>(p.iso_x, p.iso_y, p.iso_z) + q.t;
}

// World (mm) → continuous voxel index local to the bound slab (z shifted by z_offset).
fn to_index(w: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(
        p.inv00 * w.x + p.inv01 * w.y + p.inv02 * w.z + p.inv03,
        p.inv10 * w.x + p.inv11 * w.y + p.inv12 * w.z + p.inv13,
        p.inv20 * w.x + p.inv21 * w.y + p.inv22 * w.z + p.inv23 - f32(p.z_offset));
}

// Interval t ∈ [t0, t1] ⊂ [0, 1] of a + t·d inside the box [lo, hi], and which axis set each
// end (3 = the segment end). Miss: t0 >= t1. Axis-parallel rays are tested by comparison only.
struct Span { t0: f32, t1: f32, ax0: u32, ax1: u32 }

fn clip_box(a: vec3<f32>, d: vec3<f32>, lo: vec3<f32>, hi: vec3<f32>) -> Span {
    var s = Span(0.0, 1.0, 3u, 3u);
    for (var k = 0u; k < 3u; k += 1u) {
        if (abs(d[k]) > 1e-20) {
            let inv = 1.0 / d[k];
            let ta = (lo[k] - a[k]) * inv;
            let tb = (hi[k] - a[k]) * inv;
            let tn = min(ta, tb);
            let tf = max(ta, tb);
            if (tn > s.t0) { s.t0 = tn; s.ax0 = k; }
            if (tf < s.t1) { s.t1 = tf; s.ax1 = k; }
        } else if (a[k] < lo[k] || a[k] > hi[k]) {
            s.t1 = -1.0;
        }
    }
    return s;
}

// The ray of (pose, row, col) in world mm and in local voxel index space.
struct WorldRay { aw: vec3<f32>, bw: vec3<f32>, ai: vec3<f32>, bi: vec3<f32>, ac: vec3<f32>, bc: vec3<f32> }

fn make_ray(q: PoseCS, row: u32, col: u32) -> WorldRay {
    let rc = camera_ray(row, col);
    let aw = to_world(q, rc.a);
    let bw = to_world(q, rc.b);
    return WorldRay(aw, bw, to_index(aw), to_index(bw), rc.a, rc.b);
}
// ---- end of shared block

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
