// Shared DRR geometry, appended to drr_siddon.wgsl, drr_trilinear.wgsl and drr_backproject.wgsl
// by src/ops/drr.rs (WGSL has no include): the `DrrParams` struct (mirrors `DrrParams` in
// src/ops/drr.rs) and the pose → ray construction (mirrors src/drr/geometry.rs).
// Not a kernel on its own: it has no entry point and is validated as part of those three.
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
    sdd: f32, sid: f32, step_mm: f32, fixed_bound: f32,
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

// Which ray an invocation traces. A workgroup of 64 takes an 8×8 tile of detector pixels of one
// pose (tiles row-major, poses outermost), so neighbouring lanes march through neighbouring
// voxels in both detector directions (on lavapipe, 8×8, 16×4, 32×2 and 64×1 tiles measured the
// same within noise for the LIDC CT; GPUs with small caches are where 2-D tiles are expected
// to matter). `o` is the flat output index b·H·W + row·W + col,
// clamped to a valid ray when `live` is false (partial edge tiles). Dispatch: n_poses ·
// ceil(H/8) · ceil(W/8) workgroups on a folded 1-D grid.
struct RayIndex { o: u32, live: bool }

fn tiled_ray(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RayIndex {
    let tiles_w = (p.det_w + 7u) / 8u;
    let per_pose = tiles_w * ((p.det_h + 7u) / 8u);
    let t = wg.x + wg.y * nwg.x;
    let b = t / per_pose;
    let r = t % per_pose;
    let row = (r / tiles_w) * 8u + lid / 8u;
    let col = (r % tiles_w) * 8u + lid % 8u;
    let live = b < p.n_poses && row < p.det_h && col < p.det_w;
    let o = (min(b, p.n_poses - 1u) * p.det_h + min(row, p.det_h - 1u)) * p.det_w + min(col, p.det_w - 1u);
    return RayIndex(o, live);
}
