// The input gradient of y = u(h)·W + b through the activation u, on f16 activations: the MLP
// tail's backward under mixed precision (src/ops/dw_mlp_mixed.rs), one pass writing one f16
// tensor over h, where the f32 path makes ∂a = g·Wᵀ and then ∂h = ∂a ⊙ u'(h), both f32:
//
//   h[r, j] ← f16( (Σ_k g[r, k] · wt[k, j]) · u'(h[r, j]) )      (f32 sums over k ascending)
//
// g [rows, K] f16 (the rounded upstream gradient), wt [K, N] f16 (f16(W)ᵀ, W [N, K] the master
// weight), h [rows, N] f16 (the pre-activation, which the caller gives up): four f16 per
// vec2<u32> (g as u32 pairs along k), widened exactly (unpack2x16float), the result rounded to
// the nearest even f16 (shaders/f16_bits.wgsl). u and u' by op code (shaders/unary_math.wgsl).
// Both files are appended by the launcher. No `enable f16`.
//
// linear_unary_backward_x16_in_place: a workgroup of 64 invocations owns 8 rows r0 .. r0 + 7 and
//   64 column groups of 4 (invocation = column group j): per pair of k it loads one u32 of g per
//   row (the same for every invocation: a uniform load) and two vec2 of wt per invocation, for
//   16 vec4 FMAs. Each invocation reads the h it overwrites and no other. 64 rather than 16
//   invocations fill a GPU's warp; on lavapipe both took the same time (171.3 and 172.7 ms over
//   32 launches of the PVT encoder step). Grid: x = ceil(N / 256),
//   (y, z) = the row blocks ceil(rows / 8), folded. Rows past the end clamp their loads and skip
//   their stores. Host-checked: K % 2 == 0, N % 4 == 0.
// Bindings: 0 params (LinearUnaryParams), 1 g, 2 wt, 3 h (read_write).
// Launched by src/ops/linear_unary_backward_x16.rs.

struct LinearUnaryParams {
    rows: u32, k: u32, n: u32, op: u32,
    alpha: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> q: LinearUnaryParams;
@group(0) @binding(1) var<storage, read> g_words: array<u32>;
@group(0) @binding(2) var<storage, read> wt_words: array<vec2<u32>>;

// Row i's pair of g at k, k + 1 (one u32 word), widened.
fn g_pair(row: u32, kp: u32) -> vec2<f32> {
    return unpack2x16float(g_words[row * (q.k / 2u) + kp]);
}

fn derivative4(h: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unary_derivative(h.x, q.op, q.alpha), unary_derivative(h.y, q.op, q.alpha),
                     unary_derivative(h.z, q.op, q.alpha), unary_derivative(h.w, q.op, q.alpha));
}

// The 8 rows' products Σ_k g[r, k] · wt[k, 4j .. 4j + 3] of the workgroup at row r0, column
// group jc (clamped; rows past the end clamp to the last).
fn products(r0: u32, jc: u32, n4: u32) -> array<vec4<f32>, 8> {
    let last = q.rows - 1u;
    let m0 = min(r0, last); let m1 = min(r0 + 1u, last); let m2 = min(r0 + 2u, last);
    let m3 = min(r0 + 3u, last); let m4 = min(r0 + 4u, last); let m5 = min(r0 + 5u, last);
    let m6 = min(r0 + 6u, last); let m7 = min(r0 + 7u, last);
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0); var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    for (var kp = 0u; kp < q.k / 2u; kp++) {
        let w0 = f32x4_from_f16(wt_words[(2u * kp) * n4 + jc]);
        let w1 = f32x4_from_f16(wt_words[(2u * kp + 1u) * n4 + jc]);
        var g = g_pair(m0, kp); a0 = fma(vec4<f32>(g.x), w0, a0); a0 = fma(vec4<f32>(g.y), w1, a0);
        g = g_pair(m1, kp); a1 = fma(vec4<f32>(g.x), w0, a1); a1 = fma(vec4<f32>(g.y), w1, a1);
        g = g_pair(m2, kp); a2 = fma(vec4<f32>(g.x), w0, a2); a2 = fma(vec4<f32>(g.y), w1, a2);
        g = g_pair(m3, kp); a3 = fma(vec4<f32>(g.x), w0, a3); a3 = fma(vec4<f32>(g.y), w1, a3);
        g = g_pair(m4, kp); a4 = fma(vec4<f32>(g.x), w0, a4); a4 = fma(vec4<f32>(g.y), w1, a4);
        g = g_pair(m5, kp); a5 = fma(vec4<f32>(g.x), w0, a5); a5 = fma(vec4<f32>(g.y), w1, a5);
        g = g_pair(m6, kp); a6 = fma(vec4<f32>(g.x), w0, a6); a6 = fma(vec4<f32>(g.y), w1, a6);
        g = g_pair(m7, kp); a7 = fma(vec4<f32>(g.x), w0, a7); a7 = fma(vec4<f32>(g.y), w1, a7);
    }
    return array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
}

@group(0) @binding(3) var<storage, read_write> hd_words: array<vec2<u32>>;

@compute @workgroup_size(64)
fn linear_unary_backward_x16_in_place(@builtin(workgroup_id) wg: vec3<u32>,
                                      @builtin(num_workgroups) nwg: vec3<u32>,
                                      @builtin(local_invocation_index) lid: u32) {
    let n4 = q.n / 4u;
    let j = wg.x * 64u + lid;
    let r0 = (wg.y + wg.z * nwg.y) * 8u;
    if (r0 >= q.rows) { return; }
    var t = products(r0, min(j, n4 - 1u), n4);
    for (var i = 0u; i < 8u; i++) {
        let at = (r0 + i) * n4 + j;
        if (r0 + i < q.rows && j < n4) {
            hd_words[at] = f16x4_from_f32(t[i] * derivative4(f32x4_from_f16(hd_words[at])));
        }
    }
}
