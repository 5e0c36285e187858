// The ray walks of the scatter adjoints (entries `siddon_scatter`, `trilinear_scatter`), appended
// after drr_scatter.wgsl or drr_scatter_cas.wgsl (which declare the bindings and `scatter_add`)
// and drr_geometry.wgsl. Each mirrors its forward kernel step for step (drr_siddon.wgsl's walk,
// drr_trilinear.wgsl's sample range and zero-padded corners) so that ⟨P v, g⟩ = ⟨v, Pᵀ g⟩ to
// rounding; see drr_scatter.wgsl for the equations, layouts and bindings.

fn scatter_entry_index(e: f32, dk: f32, n: u32) -> i32 {
    var i = i32(floor(e + 0.5));
    if (dk < 0.0) { i = i32(ceil(e + 0.5)) - 1; }
    return clamp(i, 0, i32(n) - 1);
}

fn scatter_axis_step(dk: f32) -> i32 {
    return select(select(0, -1, dk < 0.0), 1, dk > 0.0);
}

fn scatter_next_face(i: i32, st: i32, ak: f32, inv_dk: f32) -> f32 {
    return select(BIG, (f32(i) + 0.5 * f32(st) - ak) * inv_dk, st != 0);
}

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
    let a = r.ai;
    let d = r.bi - r.ai;
    // each segment Δt (index-space parameter) weighs g·L
    let w = gv * length(r.bw - r.aw);
    let hi = vec3<f32>(f32(p.nx), f32(p.ny), f32(p.nz)) - 0.5;
    let sp = clip_box(a, d, vec3<f32>(-0.5), hi);
    if (!(sp.t0 < sp.t1)) { return; }
    let e = a + d * sp.t0;
    let ix = scatter_entry_index(e.x, d.x, p.nx);
    let iy = scatter_entry_index(e.y, d.y, p.ny);
    let iz = scatter_entry_index(e.z, d.z, p.nz);
    let st = vec3<i32>(scatter_axis_step(d.x), scatter_axis_step(d.y), scatter_axis_step(d.z));
    let moving = st != vec3<i32>(0);
    let inv_d = select(vec3<f32>(0.0), 1.0 / d, moving);
    var tx = scatter_next_face(ix, st.x, a.x, inv_d.x);
    var ty = scatter_next_face(iy, st.y, a.y, inv_d.y);
    var tz = scatter_next_face(iz, st.z, a.z, inv_d.z);
    let tdelta = abs(inv_d);
    var left = vec3<i32>(
        select(select(1 << 30, ix, st.x < 0), i32(p.nx) - 1 - ix, st.x > 0),
        select(select(1 << 30, iy, st.y < 0), i32(p.ny) - 1 - iy, st.y > 0),
        select(select(1 << 30, iz, st.z < 0), i32(p.nz) - 1 - iz, st.z > 0));
    let stride = vec3<i32>(st.x, st.y * i32(p.nx), st.z * i32(p.nx * p.ny));
    var lin = (iz * i32(p.ny) + iy) * i32(p.nx) + ix;
    var t = sp.t0;
    let max_steps = p.nx + p.ny + p.nz + 4u;
    for (var s = 0u; s < max_steps; s += 1u) {
        let tn = min(min(tx, ty), tz);
        if (tn >= sp.t1) {
            scatter_add(u32(lin), w * (sp.t1 - t));
            break;
        }
        if (tn > t) { scatter_add(u32(lin), w * (tn - t)); }
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
        if (min(min(left.x, left.y), left.z) < 0) { break; }
    }
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
    let len = length(r.bw - r.aw);
    // The forward's sample range: t_k = k·dt inside the padded box [−1, n].
    let dt = p.step_mm / len;
    let sp = clip_box(a, d, vec3<f32>(-1.0), vec3<f32>(f32(p.nx), f32(p.ny), f32(p.nz)));
    if (!(sp.t0 < sp.t1)) { return; }
    let k0 = i32(ceil(sp.t0 / dt));
    let k1 = i32(floor(sp.t1 / dt));
    let w = gv * p.step_mm;
    let n = vec3<i32>(i32(p.nx), i32(p.ny), i32(p.nz));
    for (var k = k0; k <= k1; k += 1) {
        let x = a + d * (f32(k) * dt);
        let fl = floor(x);
        let i = vec3<i32>(fl);
        let f = x - fl;
        // corner c ∈ {0,1}³ gets Π_axes (c ? f : 1 − f); corners outside the slab are the zero
        // padding of the forward and get nothing.
        for (var c = 0u; c < 8u; c += 1u) {
            let off = vec3<i32>(i32(c & 1u), i32((c >> 1u) & 1u), i32((c >> 2u) & 1u));
            let v = i + off;
            if (all(v >= vec3<i32>(0)) && all(v < n)) {
                let tent = select(1.0 - f, f, off == vec3<i32>(1));
                scatter_add(u32((v.z * n.y + v.y) * n.x + v.x), w * tent.x * tent.y * tent.z);
            }
        }
    }
}
