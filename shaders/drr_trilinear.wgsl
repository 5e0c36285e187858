// Trilinear ray-marching DRR: samples every `step_mm` along each ray, anchored at the source
// point (sample k at s_k = k·step_mm from a), with a zero-padded trilinear interpolation read
// manually from the storage buffer; one invocation per ray, everything in registers.
//
//   img[b, r, c] (+)= step_mm · Σ_k f(a_i + (s_k / L)(b_i − a_i)),   L = |b_w − a_w|,
//   f(x) = Σ_{corners v} vol[v] · Π_axes max(0, 1 − |x − v|)   (voxels outside the slab = 0)
//
// Only samples with t_k = s_k/L ∈ [0, 1] inside the padded box [−1, n] (where f can be non-zero)
// are visited. A tiled volume is additive over slabs (each slab interpolates its own voxels).
//
// Pose Jacobian (entry `trilinear_forward_jacobian`: image and d img / d pose [B, H·W, 6] in
// one pass, used when the pose requires grad): p_k = a + s_k·û (world), û = (b − a)/L, so with
// G_k = Mᵀ∇f(p_k) (world gradient of the interpolant) and Π = I − ûûᵀ:
//   dP/da = step·Σ_k [G_k − (s_k/L)·Π G_k],  dP/db = step·Σ_k (s_k/L)·Π G_k,
// then chain-ruled to the 6 pose parameters (the sample range is held fixed: f is continuous and
// vanishes on the padded boundary, so entering/leaving samples contribute nothing).
//
// Layouts: vol [nz, ny, nx] f32 (x fastest, slab z ∈ [z_offset, z_offset + nz)); poses [B, 6];
// img [B, H, W]; pose_grad (the Jacobian) [B, H·W, 6].
// Bindings (trilinear_forward): 0 params, 1 vol, 2 poses, 3 img (read_write).
// Bindings (trilinear_forward_jacobian): 0 params, 1 vol, 2 poses, 3 img, 4 pose_grad = jacobian (read_write).
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
// and the sample set (sample_range, sample_point, whole_to_i32) is
// shaders/drr_trilinear_samples.wgsl (shared with the scatter adjoint), appended likewise.

// The 8 corner values around x as two vec4 (no private array: dynamically indexed private
// arrays are spilled to memory by SIMD compilers such as lavapipe's):
// lo = (c000, c100, c010, c110), hi = (c001, c101, c011, c111) with c_xyz the corner offsets.
struct Cell { lo: vec4<f32>, hi: vec4<f32>, f: vec3<f32> }

// Zero padding without branches: every corner index is clamped into the volume (so all 8 loads
// are in bounds) and a corner outside the volume has its value multiplied by 0. On SIMD
// compilers (lavapipe) an `if interior {…} else {…}` runs both sides for every sample, and the
// per-corner checks of the edge side cost more than the loads themselves.
fn load_cell(x: vec3<f32>) -> Cell {
    let fl = floor(x);
    let i = whole_to_i32(fl);
    let n = vec3<i32>(i32(p.nx), i32(p.ny), i32(p.nz));
    let i0 = clamp(i, vec3<i32>(0), n - 1);
    let i1 = clamp(i + 1, vec3<i32>(0), n - 1);
    // 1 where the corner coordinate lies inside [0, n), else 0, per axis.
    let m0 = select(vec3<f32>(0.0), vec3<f32>(1.0), i >= vec3<i32>(0) & i < n);
    let m1 = select(vec3<f32>(0.0), vec3<f32>(1.0), i + 1 >= vec3<i32>(0) & i + 1 < n);
    let sy = p.nx;
    let sz = p.nx * p.ny;
    let r00 = u32(i0.z) * sz + u32(i0.y) * sy; // (y0, z0)
    let r10 = u32(i0.z) * sz + u32(i1.y) * sy; // (y1, z0)
    let r01 = u32(i1.z) * sz + u32(i0.y) * sy; // (y0, z1)
    let r11 = u32(i1.z) * sz + u32(i1.y) * sy; // (y1, z1)
    let x0 = u32(i0.x);
    let x1 = u32(i1.x);
    let mx = vec4<f32>(m0.x, m1.x, m0.x, m1.x);
    var cell: Cell;
    cell.f = x - fl;
    cell.lo = vec4<f32>(vol[r00 + x0], vol[r00 + x1], vol[r10 + x0], vol[r10 + x1])
        * mx * vec4<f32>(m0.y, m0.y, m1.y, m1.y) * m0.z;
    cell.hi = vec4<f32>(vol[r01 + x0], vol[r01 + x1], vol[r11 + x0], vol[r11 + x1])
        * mx * vec4<f32>(m0.y, m0.y, m1.y, m1.y) * m1.z;
    return cell;
}

fn interp(cl: Cell) -> f32 {
    let f = cl.f;
    // along x: (x00, x10, x01, x11) for (y, z) = (0,0), (1,0), (0,1), (1,1)
    let a = vec4<f32>(cl.lo.x, cl.lo.z, cl.hi.x, cl.hi.z);
    let b = vec4<f32>(cl.lo.y, cl.lo.w, cl.hi.y, cl.hi.w);
    let xs = mix(a, b, f.x);
    return mix(mix(xs.x, xs.y, f.y), mix(xs.z, xs.w, f.y), f.z);
}

// ∇f in index space.
fn interp_grad(cl: Cell) -> vec3<f32> {
    let f = cl.f;
    let g = 1.0 - f;
    let c0 = cl.lo.x; let c1 = cl.lo.y; let c2 = cl.lo.z; let c3 = cl.lo.w;
    let c4 = cl.hi.x; let c5 = cl.hi.y; let c6 = cl.hi.z; let c7 = cl.hi.w;
    let dx = (c1 - c0) * g.y * g.z + (c3 - c2) * f.y * g.z + (c5 - c4) * g.y * f.z + (c7 - c6) * f.y * f.z;
    let dy = (c2 - c0) * g.x * g.z + (c3 - c1) * f.x * g.z + (c6 - c4) * g.x * f.z + (c7 - c5) * f.x * f.z;
    let dz = (c4 - c0) * g.x * g.y + (c5 - c1) * f.x * g.y + (c6 - c2) * g.x * f.y + (c7 - c3) * f.x * f.y;
    return vec3<f32>(dx, dy, dz);
}

@compute @workgroup_size(64)
fn trilinear_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let ri = tiled_ray(wg, nwg, lid);
    if (!ri.live) { return; }
    let o = ri.o;
    let n_pix = p.det_h * p.det_w;
    let q = load_pose(o / n_pix);
    let pix = o % n_pix;
    let r = make_ray(q, pix / p.det_w, pix % p.det_w);
    let d = r.bi - r.ai;
    let s = sample_range(r.ai, d, length(r.bw - r.aw));
    var acc = 0.0;
    for (var k = s.k0; k <= s.k1; k += 1) {
        acc += interp(load_cell(sample_point(r.ai, d, s, k)));
    }
    var out = acc * p.step_mm;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) { out += img[o]; }
    img[o] = out;
}

@compute @workgroup_size(64)
fn trilinear_forward_jacobian(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let ri = tiled_ray(wg, nwg, lid);
    if (!ri.live) { return; }
    let o = ri.o;
    let n_pix = p.det_h * p.det_w;
    let q = load_pose(o / n_pix);
    let pix = o % n_pix;
    let r = make_ray(q, pix / p.det_w, pix % p.det_w);
    let d = r.bi - r.ai;
    let len = length(r.bw - r.aw);
    let s = sample_range(r.ai, d, len);
    var acc = 0.0;
    var sum_g = vec3<f32>(0.0);   // Σ ∇f (index space)
    var sum_tg = vec3<f32>(0.0);  // Σ t_k ∇f, t_k = s_k / L
    for (var k = s.k0; k <= s.k1; k += 1) {
        let t = f32(k) * s.dt;
        let cell = load_cell(r.ai + d * t);
        acc += interp(cell);
        let gr = interp_grad(cell);
        sum_g += gr;
        sum_tg += t * gr;
    }
    let u = (r.bw - r.aw) / len;
    let gw = inv_t(sum_g);
    let tgw = inv_t(sum_tg);
    let proj = tgw - u * dot(u, tgw);
    let ga = p.step_mm * (gw - proj);
    let gb = p.step_mm * proj;
    var out = acc * p.step_mm;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) { out += img[o]; }
    img[o] = out;
    write_pose_grad(o, q, r, ga, gb, 1.0);
}
