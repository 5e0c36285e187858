// Cross-entropy with soft targets, per row of [B, K] (B = rows, K = classes):
//
//   lse_b  = log Σ_k exp(s[b, k])                  (online max-shifted logsumexp, as softmax.wgsl)
//   loss_b = −Σ_k p[b, k]·log_softmax(s)[b, k] = lse_b·Σ_k p[b, k] − Σ_k p[b, k]·s[b, k]
//   rowstats[2b] = lse_b, rowstats[2b + 1] = Σ_k p[b, k]     (saved for the backward pass)
//
// Backward (cross_entropy_backward, one invocation per element, gather form), with the
// upstream gradient gl[b] of loss_b:
//   mode 0 (logits):  gs[b, k] = gl[b]·(exp(s[b, k] − lse_b)·Σ_k p[b, k] − p[b, k])
//   mode 1 (targets): gp[b, k] = −gl[b]·(s[b, k] − lse_b)
//
// Bindings (forward): 0 params, 1 p [B·K], 2 s [B·K] (read), 3 loss [B], 4 rowstats [2B]
//   (read_write).
// Bindings (backward): 0 params, 1 p, 2 s, 3 rowstats [2B], 4 gl [B] (read),
//   5 grad [B·K] (read_write).
// Dispatch: cross_entropy_rows_wg — one 64-workgroup per row (folded 1-D; DINO has K = 60000);
//   cross_entropy_rows_thread — one invocation per row (Grid::cover(B, 64); few classes);
//   cross_entropy_backward — Grid::cover(B·K, 256).
// The variant is chosen by src/ops/softmax.rs (thread_per_row): per-invocation rows on CPU
// adapters (lavapipe, where they were faster at every measured shape), by row length elsewhere.
// Launched by src/ops/loss.rs (soft_cross_entropy_rows).

struct LossParams {
    rows: u32,
    cols: u32,
    mode: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> target_p: array<f32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> rowstats: array<f32>;
// Backward bindings (WGSL requires bindings to be unique per entry point only).
@group(0) @binding(3) var<storage, read> saved: array<f32>;
@group(0) @binding(4) var<storage, read> grad_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;

// Running state: (max m, Σ exp(s − m), Σ p, Σ p·s); an empty state has .y == 0.
fn push(st: vec4<f32>, s: f32, t: f32) -> vec4<f32> {
    var r = st;
    if (st.y == 0.0) {
        r.x = s;
        r.y = 1.0;
    } else if (s > st.x) {
        r.y = st.y * exp(st.x - s) + 1.0;
        r.x = s;
    } else {
        r.y = st.y + exp(s - st.x);
    }
    r.z = st.z + t;
    r.w = st.w + t * s;
    return r;
}

fn merge(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    var r = vec4<f32>(a.x, a.y, a.z + b.z, a.w + b.w);
    if (a.y == 0.0) {
        r.x = b.x;
        r.y = b.y;
    } else if (b.y != 0.0) {
        let m = max(a.x, b.x);
        r.x = m;
        r.y = a.y * exp(a.x - m) + b.y * exp(b.x - m);
    }
    return r;
}

fn finish(r: u32, st: vec4<f32>) {
    let lse = st.x + log(st.y);
    loss[r] = lse * st.z - st.w;
    rowstats[2u * r] = lse;
    rowstats[2u * r + 1u] = st.z;
}

var<workgroup> red: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn cross_entropy_rows_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup; precedes every barrier.
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var st = vec4<f32>(0.0);
    for (var k = lid; k < p.cols; k += 64u) {
        st = push(st, logits[base + k], target_p[base + k]);
    }
    red[lid] = st;
    workgroupBarrier();
    for (var width = 32u; width > 0u; width = width / 2u) {
        if (lid < width) {
            red[lid] = merge(red[lid], red[lid + width]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        finish(r, red[0]);
    }
}

@compute @workgroup_size(64)
fn cross_entropy_rows_thread(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var st = vec4<f32>(0.0);
    for (var k = 0u; k < p.cols; k += 1u) {
        st = push(st, logits[base + k], target_p[base + k]);
    }
    finish(r, st);
}

@compute @workgroup_size(256)
fn cross_entropy_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let log_q = logits[i] - saved[2u * r];
    if (p.mode == 0u) {
        grad[i] = grad_loss[r] * (exp(log_q) * saved[2u * r + 1u] - target_p[i]);
    } else {
        grad[i] = -grad_loss[r] * log_q;
    }
}
