// Multi-head attention without a materialised score matrix, forward and backward.
//
// q: [N, L, C], k, v: [N, M, C], C = heads · hd; head h owns channels h·hd .. (h+1)·hd.
//   s_ij = scale · q_i · k_j,  P_ij = softmax_j(s_ij),  o_i = Σ_j P_ij v_j,
//   lse_i = log Σ_j exp(s_ij)  (saved for backward, [N, heads, L]).
// Backward (FlashAttention-2 form, scores recomputed from q, k and lse):
//   D_i = dO_i · o_i,  dP_ij = dO_i · v_j,  dS_ij = P_ij (dP_ij − D_i),
//   dq_i = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dO_i.
//
// Entry points (one invocation per (n, head, query) unless said):
//   forward_direct: M ≤ 64 keys; the scores stay in a private array (two passes over them).
//   forward_online: any M; online softmax (running max and sum, rescaled accumulator).
//   backward_query: dq and D.
//   backward_key:   one invocation per (n, head, key, chunk of CHUNK queries); writes partial
//                   dk, dv [chunks, N, M, C] that the wrapper sums (no float atomics).
// HD4 = hd / 4 is a pipeline-overridable constant so the head loops unroll into registers.
//
// Bindings: 0 params; forward: 1 q, 2 k, 3 v (read), 4 out, 5 lse (read_write);
// backward_query: 1 q, 2 k, 3 v, 4 out, 5 dout, 6 lse (read), 7 dq, 8 delta (read_write);
// backward_key: 1 q, 2 k, 3 v, 4 dout, 5 lse, 6 delta (read), 7 dk_part, 8 dv_part.
// Storage is vec4 over channels (C % 4 == 0). Dispatch: 1-D, 64 per workgroup, folded.
// Launched by src/ops/attention.rs.

override HD4: u32 = 16u;
const MAX_HD4: u32 = 16u;
const MAX_DIRECT_KEYS: u32 = 64u;

struct AttnParams {
    n: u32, l: u32, m: u32, heads: u32,
    c4: u32, scale: f32, chunk: u32, chunks: u32,
    total: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: AttnParams;

fn lin(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 64u + lid;
}

@group(0) @binding(1) var<storage, read> f_q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> f_k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> f_v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> f_out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> f_lse: array<f32>;

@compute @workgroup_size(64)
fn forward_direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = lin(wg, nwg, lid);
    if (t >= p.total) { return; }
    let i = t % p.l;
    let h = (t / p.l) % p.heads;
    let n = t / (p.l * p.heads);
    let qb = (n * p.l + i) * p.c4 + h * HD4;
    var q: array<vec4<f32>, MAX_HD4>;
    for (var d = 0u; d < HD4; d++) { q[d] = f_q[qb + d] * p.scale; }
    var s: array<f32, MAX_DIRECT_KEYS>;
    var mx = -3.0e38;
    for (var j = 0u; j < p.m; j++) {
        let kb = (n * p.m + j) * p.c4 + h * HD4;
        var dot4 = vec4<f32>(0.0);
        for (var d = 0u; d < HD4; d++) { dot4 = fma(q[d], f_k[kb + d], dot4); }
        let sj = dot4.x + dot4.y + dot4.z + dot4.w;
        s[j] = sj;
        mx = max(mx, sj);
    }
    var acc: array<vec4<f32>, MAX_HD4>;
    for (var d = 0u; d < HD4; d++) { acc[d] = vec4<f32>(0.0); }
    var sum = 0.0;
    for (var j = 0u; j < p.m; j++) {
        let e = exp(s[j] - mx);
        sum += e;
        let vb = (n * p.m + j) * p.c4 + h * HD4;
        for (var d = 0u; d < HD4; d++) { acc[d] = fma(vec4<f32>(e), f_v[vb + d], acc[d]); }
    }
    let inv = 1.0 / sum;
    for (var d = 0u; d < HD4; d++) { f_out[qb + d] = acc[d] * inv; }
    f_lse[(n * p.heads + h) * p.l + i] = mx + log(sum);
}

@compute @workgroup_size(64)
fn forward_online(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = lin(wg, nwg, lid);
    if (t >= p.total) { return; }
    let i = t % p.l;
    let h = (t / p.l) % p.heads;
    let n = t / (p.l * p.heads);
    let qb = (n * p.l + i) * p.c4 + h * HD4;
    var q: array<vec4<f32>, MAX_HD4>;
    var acc: array<vec4<f32>, MAX_HD4>;
    for (var d = 0u; d < HD4; d++) { q[d] = f_q[qb + d] * p.scale; acc[d] = vec4<f32>(0.0); }
    var mx = -3.0e38;
    var sum = 0.0;
    for (var j = 0u; j < p.m; j++) {
        let kb = (n * p.m + j) * p.c4 + h * HD4;
        var dot4 = vec4<f32>(0.0);
        for (var d = 0u; d < HD4; d++) { dot4 = fma(q[d], f_k[kb + d], dot4); }
        let sj = dot4.x + dot4.y + dot4.z + dot4.w;
        // Rescale only when the running max moves (exp(0) = 1 otherwise).
        if (sj > mx) {
            let corr = exp(mx - sj);
            sum *= corr;
            for (var d = 0u; d < HD4; d++) { acc[d] *= corr; }
            mx = sj;
        }
        let e = exp(sj - mx);
        sum += e;
        for (var d = 0u; d < HD4; d++) { acc[d] = fma(vec4<f32>(e), f_v[kb + d], acc[d]); }
    }
    let inv = 1.0 / sum;
    for (var d = 0u; d < HD4; d++) { f_out[qb + d] = acc[d] * inv; }
    f_lse[(n * p.heads + h) * p.l + i] = mx + log(sum);
}

@group(0) @binding(1) var<storage, read> bq_q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bq_k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bq_v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bq_out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bq_dout: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> bq_lse: array<f32>;
@group(0) @binding(7) var<storage, read_write> bq_dq: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> bq_delta: array<f32>;

@compute @workgroup_size(64)
fn backward_query(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = lin(wg, nwg, lid);
    if (t >= p.total) { return; }
    let i = t % p.l;
    let h = (t / p.l) % p.heads;
    let n = t / (p.l * p.heads);
    let qb = (n * p.l + i) * p.c4 + h * HD4;
    var q: array<vec4<f32>, MAX_HD4>;
    var go: array<vec4<f32>, MAX_HD4>;
    var dq: array<vec4<f32>, MAX_HD4>;
    var delta4 = vec4<f32>(0.0);
    for (var d = 0u; d < HD4; d++) {
        q[d] = bq_q[qb + d] * p.scale;
        go[d] = bq_dout[qb + d];
        delta4 = fma(go[d], bq_out[qb + d], delta4);
        dq[d] = vec4<f32>(0.0);
    }
    let delta = delta4.x + delta4.y + delta4.z + delta4.w;
    let row = (n * p.heads + h) * p.l + i;
    let lse = bq_lse[row];
    for (var j = 0u; j < p.m; j++) {
        let kb = (n * p.m + j) * p.c4 + h * HD4;
        var s4 = vec4<f32>(0.0);
        var dp4 = vec4<f32>(0.0);
        for (var d = 0u; d < HD4; d++) {
            s4 = fma(q[d], bq_k[kb + d], s4);
            dp4 = fma(go[d], bq_v[kb + d], dp4);
        }
        let prob = exp(s4.x + s4.y + s4.z + s4.w - lse);
        let ds = prob * (dp4.x + dp4.y + dp4.z + dp4.w - delta);
        for (var d = 0u; d < HD4; d++) { dq[d] = fma(vec4<f32>(ds), bq_k[kb + d], dq[d]); }
    }
    for (var d = 0u; d < HD4; d++) { bq_dq[qb + d] = dq[d] * p.scale; }
    bq_delta[row] = delta;
}

@group(0) @binding(1) var<storage, read> bk_q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bk_k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bk_v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bk_dout: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bk_lse: array<f32>;
@group(0) @binding(6) var<storage, read> bk_delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> bk_dk: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> bk_dv: array<vec4<f32>>;

@compute @workgroup_size(64)
fn backward_key(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = lin(wg, nwg, lid);
    if (t >= p.total) { return; }
    let j = t % p.m;
    var r = t / p.m;
    let h = r % p.heads; r = r / p.heads;
    let n = r % p.n;
    let chunk = r / p.n;
    let kb = (n * p.m + j) * p.c4 + h * HD4;
    var k: array<vec4<f32>, MAX_HD4>;
    var v: array<vec4<f32>, MAX_HD4>;
    var dk: array<vec4<f32>, MAX_HD4>;
    var dv: array<vec4<f32>, MAX_HD4>;
    for (var d = 0u; d < HD4; d++) {
        k[d] = bk_k[kb + d] * p.scale;
        v[d] = bk_v[kb + d];
        dk[d] = vec4<f32>(0.0);
        dv[d] = vec4<f32>(0.0);
    }
    let i_end = min((chunk + 1u) * p.chunk, p.l);
    for (var i = chunk * p.chunk; i < i_end; i++) {
        let qb = (n * p.l + i) * p.c4 + h * HD4;
        let row = (n * p.heads + h) * p.l + i;
        var s4 = vec4<f32>(0.0);
        var dp4 = vec4<f32>(0.0);
        for (var d = 0u; d < HD4; d++) {
            s4 = fma(bk_q[qb + d], k[d], s4);
            dp4 = fma(bk_dout[qb + d], v[d], dp4);
        }
        let prob = exp(s4.x + s4.y + s4.z + s4.w - bk_lse[row]);
        let ds = prob * (dp4.x + dp4.y + dp4.z + dp4.w - bk_delta[row]);
        for (var d = 0u; d < HD4; d++) {
            dv[d] = fma(vec4<f32>(prob), bk_dout[qb + d], dv[d]);
            dk[d] = fma(vec4<f32>(ds), bk_q[qb + d], dk[d]);
        }
    }
    let ob = ((chunk * p.n + n) * p.m + j) * p.c4 + h * HD4;
    for (var d = 0u; d < HD4; d++) {
        bk_dk[ob + d] = dk[d] * p.scale;
        bk_dv[ob + d] = dv[d];
    }
}
