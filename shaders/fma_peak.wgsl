// FMA peak microkernel: measures the adapter's f32 fused multiply-add throughput.
//
//   c_j <- fma(c_j, mul, add)  for 8 independent vec4 chains j, 8 times per chain per loop
//   iteration, `iterations` loop iterations;  out[i] = Σ_j Σ_lane c_j  (keeps the work alive).
//   FLOPs = n · iterations · 8 chains · 8 deep · 4 lanes · 2.
//
// Independent chains hide FMA latency; 8-deep unrolling amortises the loop branch (one FMA per
// chain per iteration measures loop overhead, not the FMA units, on lavapipe). `mul` and `add`
// come from params so nothing folds at compile time.
//
// Bindings: 0 params (uniform), 1 out[n] (read_write).
// Dispatch: 1-D over n invocations, 64 per workgroup, folded: i = (wg.x + wg.y·nwg.x)·64 + local.
// Launched by src/bench/core.rs (fma_peak case).

struct FmaParams {
    n: u32,
    iterations: u32,
    mul: f32,
    add: f32,
}

@group(0) @binding(0) var<uniform> p: FmaParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn fma_peak(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.n) { return; }
    let m = vec4<f32>(p.mul);
    let a = vec4<f32>(p.add);
    let x = vec4<f32>(f32(i & 1023u) * 1e-4, 0.1, 0.2, 0.3);
    var c0 = x;
    var c1 = x + 1.0;
    var c2 = x + 2.0;
    var c3 = x + 3.0;
    var c4 = x + 4.0;
    var c5 = x + 5.0;
    var c6 = x + 6.0;
    var c7 = x + 7.0;
    for (var it = 0u; it < p.iterations; it++) {
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
    }
    let s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7));
    out[i] = s.x + s.y + s.z + s.w;
}
