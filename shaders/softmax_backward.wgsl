// Backward of softmax / log-softmax over the last axis, from the forward OUTPUT y and the
// upstream gradient g (both row-major [R, K]):
//
//   softmax:     gx[r, k] = y[r, k] · (g[r, k] − Σ_j g[r, j]·y[r, j])
//   log_softmax: gx[r, k] = g[r, k] − exp(y[r, k]) · Σ_j g[r, j]
//
// Gather form: each row's dot product is reduced by the invocations that own the row, then every
// gx element is written once (no atomics).
//
// Bindings: 0 params (SoftmaxParams), 1 y [R·K] (read), 2 g [R·K] (read), 3 gx [R·K] (read_write).
// Dispatch: softmax_backward_wg — one workgroup of 64 per row (folded 1-D grid);
//           softmax_backward_thread — one invocation per row (Grid::cover(R, 64)).
// The variant is chosen by src/ops/softmax.rs (thread_per_row): per-invocation rows on CPU
// adapters (lavapipe, where they were faster at every measured shape), by row length elsewhere.
// Launched by src/ops/softmax.rs (softmax_backward_raw).

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    log_mode: u32,   // 0 = softmax, 1 = log_softmax
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;

var<workgroup> partial: array<f32, 64>;

// The per-element term of the row reduction: g·y (softmax) or g (log_softmax).
fn term(i: u32) -> f32 {
    if (p.log_mode == 1u) { return g[i]; }
    return g[i] * y[i];
}

fn write_grad(i: u32, dot: f32) {
    if (p.log_mode == 1u) {
        gx[i] = g[i] - exp(y[i]) * dot;
    } else {
        gx[i] = y[i] * (g[i] - dot);
    }
}

@compute @workgroup_size(64)
fn softmax_backward_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup; precedes every barrier.
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var acc = 0.0;
    for (var k = lid; k < p.cols; k += 64u) {
        acc += term(base + k);
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var width = 32u; width > 0u; width = width / 2u) {
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
    }
    let dot = partial[0];
    for (var k = lid; k < p.cols; k += 64u) {
        write_grad(base + k, dot);
    }
}

@compute @workgroup_size(64)
fn softmax_backward_thread(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var acc = 0.0;
    for (var k = 0u; k < p.cols; k += 1u) {
        acc += term(base + k);
    }
    for (var k = 0u; k < p.cols; k += 1u) {
        write_grad(base + k, acc);
    }
}
