// normalized_linear with few rows (src/ops/normalized_linear.rs): x [R, B] times v [B, K] with
// each column of v scaled to unit length, R ≤ 8, K a multiple of 4:
//
//   n_k = ‖v[:, k]‖,  P = x·v,  y = P · s_k,  s_k = 1/max(n_k, eps)
//
// nl_forward_few: one pass over v computes the column norms and the product together (each
// lane owns two vec4 columns, 64 apart, for all R rows), then writes y, P (the backward's κ
// reads it) and n. The rows past R compute clamped copies of row R − 1 and are not written.
// nl_weight_grad_few: ∂v[b, k] = (Σ_r x[r, b]·G[r, k])·inv_k − v[b, k]·κ_k in one pass
// (inv = 1/n where n > eps, else 1/eps; κ from l2_column_dots4 over P and G, 0 where n ≤ eps),
// the xᵀG product never written: each workgroup is V_ROWS rows of v and 128 vec4 columns, each
// lane holding its column of G in registers for all of them.
//
// Bindings, forward: 0 params; 1 x [R·B] (read); 2 v [B·K] (read); 3 y [R·K]; 4 P [R·K];
// 5 norms [K] (read_write). Weight gradient: 0 params; 1 x; 2 g [R·K]; 3 v; 4 norms; 5 κ [K]
// (read); 6 ∂v [B·K] (read_write).
// Grids: forward (⌈K/4/128⌉, 1, 1); weight gradient (⌈K/4/128⌉, ⌈B/V_ROWS⌉, 1).

struct NlParams {
    rows: u32,
    depth: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: NlParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> fw_v4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> fw_y4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> fw_p4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> fw_norms4: array<vec4<f32>>;

// Column c of lane `lid` in block `wgx`, t ∈ {0, 1}: 64 apart, so each load of a SIMD row of
// lanes is one contiguous run.
fn nl_column(wgx: u32, lid: u32, t: u32) -> u32 {
    return wgx * 128u + t * 64u + lid;
}

fn nl_inv(n: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(1.0 / p.eps), 1.0 / n, n > vec4<f32>(p.eps));
}

@compute @workgroup_size(64)
fn nl_forward_few(@builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let k4 = p.cols / 4u;
    let c0 = nl_column(wg.x, lid, 0u);
    let c1 = nl_column(wg.x, lid, 1u);
    // Out-of-range lanes read the last column (kept in bounds) and write nothing.
    let r0 = min(c0, k4 - 1u);
    let r1 = min(c1, k4 - 1u);
    let last = p.rows - 1u;
    var n0 = vec4<f32>(0.0);
    var n1 = vec4<f32>(0.0);
    var a00 = vec4<f32>(0.0); var a01 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0); var a21 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0); var a31 = vec4<f32>(0.0);
    var a40 = vec4<f32>(0.0); var a41 = vec4<f32>(0.0);
    var a50 = vec4<f32>(0.0); var a51 = vec4<f32>(0.0);
    var a60 = vec4<f32>(0.0); var a61 = vec4<f32>(0.0);
    var a70 = vec4<f32>(0.0); var a71 = vec4<f32>(0.0);
    for (var b = 0u; b < p.depth; b += 1u) {
        let v0 = fw_v4[b * k4 + r0];
        let v1 = fw_v4[b * k4 + r1];
        n0 += v0 * v0;
        n1 += v1 * v1;
        let x0 = x[b];
        let x1 = x[min(1u, last) * p.depth + b];
        let x2 = x[min(2u, last) * p.depth + b];
        let x3 = x[min(3u, last) * p.depth + b];
        let x4 = x[min(4u, last) * p.depth + b];
        let x5 = x[min(5u, last) * p.depth + b];
        let x6 = x[min(6u, last) * p.depth + b];
        let x7 = x[min(7u, last) * p.depth + b];
        a00 += x0 * v0; a01 += x0 * v1;
        a10 += x1 * v0; a11 += x1 * v1;
        a20 += x2 * v0; a21 += x2 * v1;
        a30 += x3 * v0; a31 += x3 * v1;
        a40 += x4 * v0; a41 += x4 * v1;
        a50 += x5 * v0; a51 += x5 * v1;
        a60 += x6 * v0; a61 += x6 * v1;
        a70 += x7 * v0; a71 += x7 * v1;
    }
    let acc0 = array<vec4<f32>, 8>(a00, a10, a20, a30, a40, a50, a60, a70);
    let acc1 = array<vec4<f32>, 8>(a01, a11, a21, a31, a41, a51, a61, a71);
    let nn0 = sqrt(n0);
    let nn1 = sqrt(n1);
    let s0 = 1.0 / max(nn0, vec4<f32>(p.eps));
    let s1 = 1.0 / max(nn1, vec4<f32>(p.eps));
    for (var r = 0u; r < 8u; r += 1u) {
        if (r < p.rows) {
            if (c0 < k4) {
                fw_p4[r * k4 + c0] = acc0[r];
                fw_y4[r * k4 + c0] = acc0[r] * s0;
            }
            if (c1 < k4) {
                fw_p4[r * k4 + c1] = acc1[r];
                fw_y4[r * k4 + c1] = acc1[r] * s1;
            }
        }
    }
    if (c0 < k4) { fw_norms4[c0] = nn0; }
    if (c1 < k4) { fw_norms4[c1] = nn1; }
}

@group(0) @binding(2) var<storage, read> wg_g4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> wg_v4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> wg_norms4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> wg_kappa4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> wg_gv4: array<vec4<f32>>;

// Rows of v per workgroup of nl_weight_grad_few (src/ops/normalized_linear_few.rs: V_ROWS).
const V_ROWS: u32 = 32u;

// x[r, b] for row r of the (at most 8) rows, 0 past the last row so the clamped G rows add
// nothing.
fn nl_x(r: u32, b: u32) -> f32 {
    return select(0.0, x[min(r, p.rows - 1u) * p.depth + b], r < p.rows);
}

@compute @workgroup_size(64)
fn nl_weight_grad_few(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let k4 = p.cols / 4u;
    let last = p.rows - 1u;
    for (var t = 0u; t < 2u; t += 1u) {
        let c = nl_column(wg.x, lid, t);
        if (c < k4) {
            // This lane's column of G for every row, loaded once for the workgroup's V_ROWS
            // rows of v (rows past the last are clamped copies, weighted 0 by nl_x).
            let g0 = wg_g4[c];
            let g1 = wg_g4[min(1u, last) * k4 + c];
            let g2 = wg_g4[min(2u, last) * k4 + c];
            let g3 = wg_g4[min(3u, last) * k4 + c];
            let g4 = wg_g4[min(4u, last) * k4 + c];
            let g5 = wg_g4[min(5u, last) * k4 + c];
            let g6 = wg_g4[min(6u, last) * k4 + c];
            let g7 = wg_g4[min(7u, last) * k4 + c];
            let inv = nl_inv(wg_norms4[c]);
            let kappa = wg_kappa4[c];
            let b_end = min(p.depth, (wg.y + 1u) * V_ROWS);
            for (var b = wg.y * V_ROWS; b < b_end; b += 1u) {
                let acc = ((nl_x(0u, b) * g0 + nl_x(1u, b) * g1)
                        + (nl_x(2u, b) * g2 + nl_x(3u, b) * g3))
                        + ((nl_x(4u, b) * g4 + nl_x(5u, b) * g5)
                        + (nl_x(6u, b) * g6 + nl_x(7u, b) * g7));
                let j = b * k4 + c;
                wg_gv4[j] = acc * inv - wg_v4[j] * kappa;
            }
        }
    }
}
