// Pose-gradient helpers shared by the forward-Jacobian kernels of shaders/drr_siddon.wgsl and
// shaders/drr_trilinear.wgsl, appended to their sources by src/ops/drr.rs (WGSL has no include).
// They use the including shader's `p` (DrrParams) and `pose_grad` binding.

// Mᵀ g with M the linear part of the world→index map: turns d/d(index) into d/d(world mm).
fn inv_t(g: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(
        p.inv00 * g.x + p.inv10 * g.y + p.inv20 * g.z,
        p.inv01 * g.x + p.inv11 * g.y + p.inv21 * g.z,
        p.inv02 * g.x + p.inv12 * g.y + p.inv22 * g.z);
}

// Derivatives of the elementary rotations with respect to their angle.
fn drot_x(c: f32, s: f32, v: vec3<f32>) -> vec3<f32> { return vec3<f32>(0.0, -s * v.y - c * v.z, c * v.y - s * v.z); }
fn drot_y(c: f32, s: f32, v: vec3<f32>) -> vec3<f32> { return vec3<f32>(-s * v.x + c * v.z, 0.0, -c * v.x - s * v.z); }
fn drot_z(c: f32, s: f32, v: vec3<f32>) -> vec3<f32> { return vec3<f32>(-s * v.x - c * v.y, c * v.x - s * v.y, 0.0); }

// Chain rule from the world endpoints to the pose: a = R a_c + iso + t, b = R b_c + iso + t, so
// dP/dθ_j = ga·(∂R/∂θ_j a_c) + gb·(∂R/∂θ_j b_c) and dP/dt = ga + gb. Writes g_pix × that.
fn write_pose_grad(o: u32, q: PoseCS, r: WorldRay, ga: vec3<f32>, gb: vec3<f32>, g_pix: f32) {
    let ya = rot_y(q.c.y, q.s.y, r.ac);
    let yb = rot_y(q.c.y, q.s.y, r.bc);
    let xa = rot_x(q.c.x, q.s.x, ya);
    let xb = rot_x(q.c.x, q.s.x, yb);
    let d_rx = dot(ga, rot_z(q.c.z, q.s.z, drot_x(q.c.x, q.s.x, ya))) + dot(gb, rot_z(q.c.z, q.s.z, drot_x(q.c.x, q.s.x, yb)));
    let d_ry = dot(ga, rot_z(q.c.z, q.s.z, rot_x(q.c.x, q.s.x, drot_y(q.c.y, q.s.y, r.ac))))
             + dot(gb, rot_z(q.c.z, q.s.z, rot_x(q.c.x, q.s.x, drot_y(q.c.y, q.s.y, r.bc))));
    let d_rz = dot(ga, drot_z(q.c.z, q.s.z, xa)) + dot(gb, drot_z(q.c.z, q.s.z, xb));
    let d_t = ga + gb;
    var vals = array<f32, 6>(d_rx, d_ry, d_rz, d_t.x, d_t.y, d_t.z);
    let acc = (p.flags & FLAG_ACCUMULATE) != 0u;
    for (var j = 0u; j < 6u; j += 1u) {
        var v = g_pix * vals[j];
        if (acc) { v += pose_grad[o * 6u + j]; }
        pose_grad[o * 6u + j] = v;
    }
}
