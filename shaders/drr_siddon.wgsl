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

// The walk itself (siddon_start, siddon_next) is shaders/drr_siddon_walk.wgsl, appended like
// the geometry block and shared with the scatter adjoint.

// Walk result shared by both entries.
struct Walk { sum: f32, ga: vec3<f32>, gb: vec3<f32> }

// S = Σ v·Δt over the bound slab; with `grad`, also dS/da and dS/db in index space (each plane
// crossing t_c contributes (v_before − v_after)·dt_c/da, see the header).
fn siddon_walk(a: vec3<f32>, d: vec3<f32>, grad: bool) -> Walk {
    var out = Walk(0.0, vec3<f32>(0.0), vec3<f32>(0.0));
    var w = siddon_start(a, d);
    if (!w.hit) { return out; }
    let inv_d = w.inv_d;
    var v = vol[w.lin];
    var ga = vec3<f32>(0.0);
    var gb = vec3<f32>(0.0);
    if (grad && w.ax0 < 3u) {
        // entry crossing: (0 − v) at t0
        let k = w.ax0;
        ga[k] += -v * (w.t0 - 1.0) * inv_d[k];
        gb[k] += v * w.t0 * inv_d[k];
    }
    var acc = 0.0;
    let max_steps = p.nx + p.ny + p.nz + 4u;
    for (var s = 0u; s < max_steps; s += 1u) {
        let seg = siddon_next(&w);
        acc += v * seg.dt;
        if (seg.exit) {
            if (grad && w.ax1 < 3u) {
                let k = w.ax1;
                ga[k] += v * (w.t1 - 1.0) * inv_d[k];
                gb[k] += -v * w.t1 * inv_d[k];
            }
            break;
        }
        var v_next = 0.0;
        if (seg.inside) { v_next = vol[w.lin]; }
        if (grad) {
            let jump = v - v_next;
            let mf = select(vec3<f32>(0.0), vec3<f32>(1.0), seg.crossed);
            ga += mf * (jump * (seg.end - 1.0)) * inv_d;
            gb -= mf * (jump * seg.end) * inv_d;
        }
        if (!seg.inside) { break; }
        v = v_next;
    }
    out.sum = acc;
    out.ga = ga;
    out.gb = gb;
    return out;
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
