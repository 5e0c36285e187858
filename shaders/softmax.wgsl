// Softmax and log-softmax over the last axis of a row-major [R, K] view (R = rows, K = cols).
//
//   m_r = max_k x[r, k]                      (subtracted for stability)
//   s_r = Σ_k exp(x[r, k] − m_r)
//   softmax:     y[r, k] = exp(x[r, k] − m_r) / s_r
//   log_softmax: y[r, k] = x[r, k] − m_r − log(s_r)
//
// (m, s) are accumulated "online" in one pass over the row: a new maximum rescales the running
// sum by exp(m_old − m_new). Two partial states combine as
//   m = max(m1, m2),  s = s1·exp(m1 − m) + s2·exp(m2 − m),
// where a state with s = 0 (no elements seen) is the identity (no −∞ sentinel needed).
//
// Layout: contiguous f32, row r occupies [r·K, (r+1)·K).
// Bindings: 0 params (SoftmaxParams), 1 x [R·K] (read), 2 y [R·K] (read_write).
// Dispatch:
//   softmax_rows_wg:     one workgroup of 64 per row (folded 1-D grid, wid = wg.x + wg.y·nwg.x);
//                        the 64 invocations stride over k and merge states in shared memory.
//                        For long rows (the DINO head has K = 60000).
//   softmax_rows_thread: one invocation per row (Grid::cover(R, 64)); no barriers. For short rows
//                        (attention over 1–49 keys), where a 64-wide tree would mostly idle.
// The variant is chosen by src/ops/softmax.rs (thread_per_row): per-invocation rows on CPU
// adapters (lavapipe, where they were faster at every measured shape), by row length elsewhere.
// Launched by src/ops/softmax.rs (softmax_raw).

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    log_mode: u32,   // 0 = softmax, 1 = log_softmax
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> shared_m: array<f32, 64>;
var<workgroup> shared_s: array<f32, 64>;

// Merge two online states (m, s); s == 0 marks an empty state.
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    if (b.y == 0.0) { return a; }
    if (a.y == 0.0) { return b; }
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Fold one value v into the state (m, s).
fn push(st: vec2<f32>, v: f32) -> vec2<f32> {
    if (st.y == 0.0) { return vec2<f32>(v, 1.0); }
    if (v > st.x) { return vec2<f32>(v, st.y * exp(st.x - v) + 1.0); }
    return vec2<f32>(st.x, st.y + exp(v - st.x));
}

fn write_row(base: u32, k: u32, st: vec2<f32>) {
    let v = x[base + k] - st.x;
    if (p.log_mode == 1u) {
        y[base + k] = v - log(st.y);
    } else {
        y[base + k] = exp(v) / st.y;
    }
}

@compute @workgroup_size(64)
fn softmax_rows_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * nwg.x;
    // The whole workgroup shares r, so this exit is uniform and precedes every barrier.
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var st = vec2<f32>(0.0, 0.0);
    for (var k = lid; k < p.cols; k += 64u) {
        st = push(st, x[base + k]);
    }
    shared_m[lid] = st.x;
    shared_s[lid] = st.y;
    workgroupBarrier();
    for (var width = 32u; width > 0u; width = width / 2u) {
        if (lid < width) {
            let merged = merge(vec2<f32>(shared_m[lid], shared_s[lid]),
                               vec2<f32>(shared_m[lid + width], shared_s[lid + width]));
            shared_m[lid] = merged.x;
            shared_s[lid] = merged.y;
        }
        workgroupBarrier();
    }
    let total = vec2<f32>(shared_m[0], shared_s[0]);
    for (var k = lid; k < p.cols; k += 64u) {
        write_row(base, k, total);
    }
}

@compute @workgroup_size(64)
fn softmax_rows_thread(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var st = vec2<f32>(0.0, 0.0);
    for (var k = 0u; k < p.cols; k += 1u) {
        st = push(st, x[base + k]);
    }
    for (var k = 0u; k < p.cols; k += 1u) {
        write_row(base, k, st);
    }
}
