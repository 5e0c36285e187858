// Exact Siddon DRR: the line integral of a piecewise-constant volume along each ray, as an
// incremental Amanatides–Woo voxel walk with everything in registers (no intersection lists).
//
//   img[b, r, c] (+)= |b_w − a_w| · Σ_voxels vol[z, y, x] · Δt(ray(b, r, c) ∩ voxel)
//
// Rays: P(t) = a + t(b − a), t ∈ [0, 1] from the source point a to the pixel centre b, generated
// from the pose (see src/drr/geometry.rs for the frames). The walk runs in voxel index space of
// the bound slab (voxel i spans [i − ½, i + ½]); lengths are converted to mm by |b_w − a_w|.
// Slabs of a tiled volume are additive: each slab walks its own sub-box (FLAG_ACCUMULATE adds).
//
// Pose Jacobian (entry `siddon_forward_jacobian`, used when the pose requires grad: the image
// and the per-ray Jacobian d img / d pose [B, H·W, 6] in one walk; backward multiplies by the
// upstream gradient and sums over rays): writing S = Σ_seg v·Δt = Σ_crossings (v_before −
// v_after)·t_c over the plane crossings t_c = (plane − a_k)/(b_k − a_k) (entry and exit of the box
// included, values outside are 0), dt_c/da_k = (t_c − 1)/d_k and dt_c/db_k = −t_c/d_k. Then
// P = |b_w − a_w|·S is chain-ruled to world mm and to the 6 pose parameters.
//
// Layouts: vol [nz, ny, nx] f32 (x fastest, the slab z ∈ [z_offset, z_offset + nz));
// poses [B, 6] = [rx, ry, rz, tx, ty, tz] (rad, mm); img [B, H, W]; pose_grad (the Jacobian) [B, H·W, 6].
// Bindings (siddon_forward): 0 params, 1 vol, 2 poses, 3 img (read_write).
// Bindings (siddon_forward_jacobian): 0 params, 1 vol, 2 poses, 3 img, 4 pose_grad = jacobian (read_write).
// Dispatch: one invocation per ray, workgroup 64, folded 1-D grid over B·H·W.
// Launched by src/ops/drr.rs (forward_raw, forward_jacobian_raw).

@group(0) @binding(0) var<uniform> p: DrrParams;
@group(0) @binding(1) var<storage, read> vol: array<f32>;
@group(0) @binding(2) var<storage, read> poses: array<f32>;
@group(0) @binding(3) var<storage, read_write> img: array<f32>;

@group(0) @binding(4) var<storage, read_write> pose_grad: array<f32>;
// The geometry block (DrrParams, pose → ray) is shaders/drr_geometry.wgsl, appended to this
// source by src/ops/drr.rs (WGSL has no include).

// The pose-gradient helpers (inv_t, drot_*, write_pose_grad) are shaders/drr_pose_grad.wgsl,
// appended like the geometry block.

fn vox(ix: i32, iy: i32, iz: i32) -> f32 {
    return vol[(u32(iz) * p.ny + u32(iy)) * p.nx + u32(ix)];
}

// First voxel index along one axis at the entry point e, moving with direction sign of dk:
// a point on a face belongs to the voxel the ray is about to enter.
fn entry_index(e: f32, dk: f32, n: u32) -> i32 {
    var i = i32(floor(e + 0.5));
    if (dk < 0.0) { i = i32(ceil(e + 0.5)) - 1; }
    return clamp(i, 0, i32(n) - 1);
}

fn axis_step(dk: f32) -> i32 {
    return select(select(0, -1, dk < 0.0), 1, dk > 0.0);
}

// t of the next face crossing on one axis from voxel i (BIG when the ray is parallel to it).
fn next_face(i: i32, st: i32, ak: f32, inv_dk: f32) -> f32 {
    return select(BIG, (f32(i) + 0.5 * f32(st) - ak) * inv_dk, st != 0);
}

// Walk state shared by both entries.
struct Walk { sum: f32, ga: vec3<f32>, gb: vec3<f32> }

// S = Σ v·Δt over the bound slab; with `grad`, also dS/da and dS/db in index space.
// Branch-free stepping (selects, so SIMD lanes do not diverge): a linear voxel index advanced by
// the axis stride, crossing times advanced by t_delta = 1/|d_k|, and per-axis counters of the
// faces left before the box exit (the walk ends when one goes negative).
fn siddon_walk(a: vec3<f32>, d: vec3<f32>, grad: bool) -> Walk {
    var w = Walk(0.0, vec3<f32>(0.0), vec3<f32>(0.0));
    let hi = vec3<f32>(f32(p.nx), f32(p.ny), f32(p.nz)) - 0.5;
    let sp = clip_box(a, d, vec3<f32>(-0.5), hi);
    if (!(sp.t0 < sp.t1)) { return w; }
    let e = a + d * sp.t0;
    let ix = entry_index(e.x, d.x, p.nx);
    let iy = entry_index(e.y, d.y, p.ny);
    let iz = entry_index(e.z, d.z, p.nz);
    let st = vec3<i32>(axis_step(d.x), axis_step(d.y), axis_step(d.z));
    let moving = st != vec3<i32>(0);
    let inv_d = select(vec3<f32>(0.0), 1.0 / d, moving);
    var tx = next_face(ix, st.x, a.x, inv_d.x);
    var ty = next_face(iy, st.y, a.y, inv_d.y);
    var tz = next_face(iz, st.z, a.z, inv_d.z);
    let tdelta = abs(inv_d);
    // faces left on each axis before leaving the box (large when not moving)
    var left = vec3<i32>(
        select(select(1 << 30, ix, st.x < 0), i32(p.nx) - 1 - ix, st.x > 0),
        select(select(1 << 30, iy, st.y < 0), i32(p.ny) - 1 - iy, st.y > 0),
        select(select(1 << 30, iz, st.z < 0), i32(p.nz) - 1 - iz, st.z > 0));
    let stride = vec3<i32>(st.x, st.y * i32(p.nx), st.z * i32(p.nx * p.ny));
    var lin = (iz * i32(p.ny) + iy) * i32(p.nx) + ix;
    var t = sp.t0;
    var v = vol[lin];
    var ga = vec3<f32>(0.0);
    var gb = vec3<f32>(0.0);
    if (grad && sp.ax0 < 3u) {
        // entry crossing: (0 − v) at t0
        let k = sp.ax0;
        ga[k] += -v * (sp.t0 - 1.0) * inv_d[k];
        gb[k] += v * sp.t0 * inv_d[k];
    }
    var acc = 0.0;
    let max_steps = p.nx + p.ny + p.nz + 4u;
    for (var s = 0u; s < max_steps; s += 1u) {
        let tn = min(min(tx, ty), tz);
        if (tn >= sp.t1) {
            acc += v * (sp.t1 - t);
            if (grad && sp.ax1 < 3u) {
                let k = sp.ax1;
                ga[k] += v * (sp.t1 - 1.0) * inv_d[k];
                gb[k] += -v * sp.t1 * inv_d[k];
            }
            break;
        }
        acc += v * (tn - t);
        t = tn;
        let mx = tx <= min(ty, tz);
        let my = !mx && ty <= tz;
        let mz = !mx && !my;
        let m = vec3<bool>(mx, my, mz);
        lin += dot(select(vec3<i32>(0), stride, m), vec3<i32>(1));
        left -= select(vec3<i32>(0), vec3<i32>(1), m);
        tx += select(0.0, tdelta.x, mx);
        ty += select(0.0, tdelta.y, my);
        tz += select(0.0, tdelta.z, mz);
        let inside = min(min(left.x, left.y), left.z) >= 0;
        var v_next = 0.0;
        if (inside) { v_next = vol[lin]; }
        if (grad) {
            let jump = v - v_next;
            let mf = select(vec3<f32>(0.0), vec3<f32>(1.0), m);
            ga += mf * (jump * (tn - 1.0)) * inv_d;
            gb -= mf * (jump * tn) * inv_d;
        }
        if (!inside) { break; }
        v = v_next;
    }
    w.sum = acc;
    w.ga = ga;
    w.gb = gb;
    return w;
}

@compute @workgroup_size(64)
fn siddon_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let ri = tiled_ray(wg, nwg, lid);
    if (!ri.live) { return; }
    let o = ri.o;
    let n_pix = p.det_h * p.det_w;
    let b = o / n_pix;
    let pix = o % n_pix;
    let q = load_pose(b);
    let r = make_ray(q, pix / p.det_w, pix % p.det_w);
    let w = siddon_walk(r.ai, r.bi - r.ai, false);
    var out = w.sum * length(r.bw - r.aw);
    if ((p.flags & FLAG_ACCUMULATE) != 0u) { out += img[o]; }
    img[o] = out;
}

@compute @workgroup_size(64)
fn siddon_forward_jacobian(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let ri = tiled_ray(wg, nwg, lid);
    if (!ri.live) { return; }
    let o = ri.o;
    let n_pix = p.det_h * p.det_w;
    let b = o / n_pix;
    let pix = o % n_pix;
    let q = load_pose(b);
    let r = make_ray(q, pix / p.det_w, pix % p.det_w);
    let w = siddon_walk(r.ai, r.bi - r.ai, true);
    // P = L·S with L = |b_w − a_w|: dP/da_w = L·Mᵀ dS/da_i − S·u, dP/db_w = L·Mᵀ dS/db_i + S·u.
    let len = length(r.bw - r.aw);
    let u = (r.bw - r.aw) / len;
    let ga = len * inv_t(w.ga) - w.sum * u;
    let gb = len * inv_t(w.gb) + w.sum * u;
    var out = w.sum * len;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) { out += img[o]; }
    img[o] = out;
    write_pose_grad(o, q, r, ga, gb, 1.0);
}
