// The Siddon voxel walk (incremental Amanatides–Woo), written once and appended to the forward
// (drr_siddon.wgsl, which also differentiates it for the pose) and to the scatter adjoint
// (drr_scatter_walks.wgsl), so that the adjoint visits exactly the forward's voxels and lengths
// (⟨P v, g⟩ = ⟨v, Pᵀ g⟩ to rounding). Not a kernel on its own (WGSL has no include; src/ops/drr.rs
// concatenates the sources).
//
// The walk runs in voxel index space of the bound slab (voxel i spans [i − ½, i + ½]) along
// a + t·d, t ∈ [t0, t1] = the ray inside the slab's box. Branch-free stepping (selects, so SIMD
// lanes do not diverge): a linear voxel index advanced by the axis stride, crossing times advanced
// by t_delta = 1/|d_k|, and per-axis counters of the faces left before the box exit (the walk ends
// when one goes negative).

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

// The walk's state. `hit` is false when the ray misses the slab (nothing to walk); `t0`/`ax0`
// and `t1`/`ax1` are the box entry and exit and the axis that set each (3 = a segment end),
// `inv_d` = 1/d per moving axis (0 on a still one), for the pose derivative of the crossings.
struct SiddonWalk {
    hit: bool,
    t: f32,
    t0: f32, t1: f32, ax0: u32, ax1: u32,
    next: vec3<f32>,
    tdelta: vec3<f32>,
    inv_d: vec3<f32>,
    stride: vec3<i32>,
    left: vec3<i32>,
    lin: i32,
}

fn siddon_start(a: vec3<f32>, d: vec3<f32>) -> SiddonWalk {
    var w: SiddonWalk;
    let hi = vec3<f32>(f32(p.nx), f32(p.ny), f32(p.nz)) - 0.5;
    let sp = clip_box(a, d, vec3<f32>(-0.5), hi);
    w.hit = sp.t0 < sp.t1;
    w.t0 = sp.t0; w.t1 = sp.t1; w.ax0 = sp.ax0; w.ax1 = sp.ax1;
    w.t = sp.t0;
    let e = a + d * sp.t0;
    let ix = entry_index(e.x, d.x, p.nx);
    let iy = entry_index(e.y, d.y, p.ny);
    let iz = entry_index(e.z, d.z, p.nz);
    let st = vec3<i32>(axis_step(d.x), axis_step(d.y), axis_step(d.z));
    let moving = st != vec3<i32>(0);
    w.inv_d = select(vec3<f32>(0.0), 1.0 / d, moving);
    w.next = vec3<f32>(next_face(ix, st.x, a.x, w.inv_d.x), next_face(iy, st.y, a.y, w.inv_d.y),
                       next_face(iz, st.z, a.z, w.inv_d.z));
    w.tdelta = abs(w.inv_d);
    // faces left on each axis before leaving the box (large when not moving)
    w.left = vec3<i32>(
        select(select(1 << 30, ix, st.x < 0), i32(p.nx) - 1 - ix, st.x > 0),
        select(select(1 << 30, iy, st.y < 0), i32(p.ny) - 1 - iy, st.y > 0),
        select(select(1 << 30, iz, st.z < 0), i32(p.nz) - 1 - iz, st.z > 0));
    w.stride = vec3<i32>(st.x, st.y * i32(p.nx), st.z * i32(p.nx * p.ny));
    w.lin = (iz * i32(p.ny) + iy) * i32(p.nx) + ix;
    return w;
}

// One segment of the walk: voxel `lin` over Δt = `dt`, ending at `end`. Either the ray leaves
// the box there (`exit`: the end is t1, nothing crossed) or it crosses the faces `crossed` into
// the walk's new voxel (w.lin), which is still in the slab when `inside`.
struct SiddonSegment { lin: i32, dt: f32, end: f32, exit: bool, crossed: vec3<bool>, inside: bool }

// At most nx + ny + nz + 4 segments per ray (the loop bound of every caller).
fn siddon_next(w: ptr<function, SiddonWalk>) -> SiddonSegment {
    var s: SiddonSegment;
    s.lin = (*w).lin;
    let tn = min(min((*w).next.x, (*w).next.y), (*w).next.z);
    if (tn >= (*w).t1) {
        s.dt = (*w).t1 - (*w).t;
        s.end = (*w).t1;
        s.exit = true;
        return s;
    }
    s.dt = tn - (*w).t;
    s.end = tn;
    (*w).t = tn;
    let mx = (*w).next.x <= min((*w).next.y, (*w).next.z);
    let my = !mx && (*w).next.y <= (*w).next.z;
    let m = vec3<bool>(mx, my, !mx && !my);
    (*w).lin += dot(select(vec3<i32>(0), (*w).stride, m), vec3<i32>(1));
    (*w).left -= select(vec3<i32>(0), vec3<i32>(1), m);
    (*w).next += select(vec3<f32>(0.0), (*w).tdelta, m);
    s.crossed = m;
    s.inside = min(min((*w).left.x, (*w).left.y), (*w).left.z) >= 0;
    return s;
}
