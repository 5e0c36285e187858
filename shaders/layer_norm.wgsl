// LayerNorm over the last axis of a row-major [R, C] view (R = rows, C = cols):
//
//   μ_r    = (1/C) Σ_c x[r, c]
//   σ²_r   = (1/C) Σ_c (x[r, c] − μ_r)²            (biased, as torch; two passes, no E[x²]−μ²)
//   rstd_r = 1 / sqrt(σ²_r + eps)
//   y[r, c] = (x[r, c] − μ_r)·rstd_r·γ[c] + β[c]    (γ = 1, β = 0 when affine = 0)
//   stats[2r] = μ_r, stats[2r + 1] = rstd_r          (saved for the backward pass)
//
// Bindings: 0 params (LayerNormParams), 1 x [R·C] (read), 2 gamma [C] (read), 3 beta [C] (read),
//           4 y [R·C] (read_write), 5 stats [2R] (read_write). Without affine the launcher binds
//           x in place of gamma/beta; they are never read.
// Dispatch: layer_norm_wg — one workgroup of 64 per row (folded 1-D grid), strided loads and
//           shared-memory trees; layer_norm_thread — one invocation per row (Grid::cover(R, 64)),
//           for the short rows of PVT (C = 64..512) where barriers cost more than they save.
// The variant is chosen by src/ops/softmax.rs (thread_per_row): per-invocation rows on CPU
// adapters (lavapipe, where they were faster at every measured shape), by row length elsewhere.
// Launched by src/ops/norm.rs (layer_norm_raw).

struct LayerNormParams {
    rows: u32,
    cols: u32,
    eps: f32,
    affine: u32,
    block_rows: u32,   // used by the backward parameter kernel only
    n_blocks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: LayerNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

var<workgroup> red: array<f32, 64>;

// Sum of v over the 64 invocations; every invocation gets the total.
fn tree_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var width = 32u; width > 0u; width = width / 2u) {
        if (lid < width) {
            red[lid] += red[lid + width];
        }
        workgroupBarrier();
    }
    let total = red[0];
    // Everyone has read red[0] before the next call overwrites it.
    workgroupBarrier();
    return total;
}

fn write_out(r: u32, c: u32, mean: f32, rstd: f32) {
    let i = r * p.cols + c;
    var v = (x[i] - mean) * rstd;
    if (p.affine != 0u) {
        v = v * gamma[c] + beta[c];
    }
    y[i] = v;
}

@compute @workgroup_size(64)
fn layer_norm_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup; precedes every barrier.
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var acc = 0.0;
    for (var c = lid; c < p.cols; c += 64u) {
        acc += x[base + c];
    }
    let mean = tree_sum(acc, lid) / f32(p.cols);
    var sq = 0.0;
    for (var c = lid; c < p.cols; c += 64u) {
        let d = x[base + c] - mean;
        sq += d * d;
    }
    let rstd = inverseSqrt(tree_sum(sq, lid) / f32(p.cols) + p.eps);
    for (var c = lid; c < p.cols; c += 64u) {
        write_out(r, c, mean, rstd);
    }
    if (lid == 0u) {
        stats[2u * r] = mean;
        stats[2u * r + 1u] = rstd;
    }
}

@compute @workgroup_size(64)
fn layer_norm_thread(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var acc = 0.0;
    for (var c = 0u; c < p.cols; c += 1u) {
        acc += x[base + c];
    }
    let mean = acc / f32(p.cols);
    var sq = 0.0;
    for (var c = 0u; c < p.cols; c += 1u) {
        let d = x[base + c] - mean;
        sq += d * d;
    }
    let rstd = inverseSqrt(sq / f32(p.cols) + p.eps);
    for (var c = 0u; c < p.cols; c += 1u) {
        write_out(r, c, mean, rstd);
    }
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
}
