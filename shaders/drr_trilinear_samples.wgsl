// The trilinear sample set, written once and appended to the forward (drr_trilinear.wgsl) and
// to the scatter adjoint (drr_scatter_walks.wgsl), so both take exactly the same samples:
// sample k sits at t_k = k·dt, dt = step_mm / L (L = |b_w − a_w|, so samples are step_mm apart
// in world mm, anchored at the source), for every k with t_k ∈ [0, 1] inside the padded box
// [−1, n] of the bound slab (where the zero-padded interpolant can be non-zero).
// Not a kernel on its own (WGSL has no include; src/ops/drr.rs concatenates the sources).

// Sample index range [k0, k1] of the ray inside the padded box; k1 < k0 when it misses.
struct Samples { k0: i32, k1: i32, dt: f32 }

fn sample_range(a: vec3<f32>, d: vec3<f32>, len: f32) -> Samples {
    let dt = p.step_mm / len;
    let sp = clip_box(a, d, vec3<f32>(-1.0), vec3<f32>(f32(p.nx), f32(p.ny), f32(p.nz)));
    var s = Samples(0, -1, dt);
    if (sp.t0 < sp.t1) {
        s.k0 = i32(ceil(sp.t0 / dt));
        s.k1 = i32(floor(sp.t1 / dt));
    }
    return s;
}

// Sample k of the ray a + t·d (index space).
fn sample_point(a: vec3<f32>, d: vec3<f32>, s: Samples, k: i32) -> vec3<f32> {
    return a + d * (f32(k) * s.dt);
}

// i32 of whole-numbered floats (floor() results) with |x| < 2^22, by the float-bias trick: adding
// 1.5·2^23 puts the integer in the low mantissa bits. WGSL's i32(f32) saturates and maps NaN, which
// lavapipe compiles to a scalar per-lane conversion with NaN and range tests (24 vcvttss2si plus
// compares and cmovs per sample for 8 lanes); this is two vector instructions. Samples lie in the
// padded box, so |x| <= n + 1; any other input gives some i32 (callers clamp or bounds-check).
fn whole_to_i32(x: vec3<f32>) -> vec3<i32> {
    return bitcast<vec3<i32>>(x + 12582912.0) - vec3<i32>(0x4B400000);
}
