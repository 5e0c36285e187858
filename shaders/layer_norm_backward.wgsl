// Backward of LayerNorm over the last axis ([R, C] view), from x, the saved stats (μ_r, rstd_r)
// and the upstream gradient g:
//
//   x̂[r, c]  = (x[r, c] − μ_r)·rstd_r
//   ĝ[r, c]  = g[r, c]·γ[c]                                   (γ = 1 without affine)
//   gx[r, c] = rstd_r·(ĝ[r, c] − (1/C)Σ_c' ĝ[r, c'] − x̂[r, c]·(1/C)Σ_c' ĝ[r, c']·x̂[r, c'])
//
//   gγ[c] = Σ_r g[r, c]·x̂[r, c],   gβ[c] = Σ_r g[r, c]
//
// The parameter gradients reduce over every row; without atomics they are computed in two
// levels: layer_norm_backward_params writes, per block b of `block_rows` rows and channel c,
//   partial[b, 0, c] = Σ_{r in b} g·x̂,   partial[b, 1, c] = Σ_{r in b} g
// (one invocation per (b, c): loads are coalesced along c), and the launcher sums the blocks
// straight into gγ and gβ with the reduce kernel's sum_rows_halves (src/ops/reduce.rs). Everything is gather form: each output is written
// by exactly one invocation.
//
// Bindings (layer_norm_backward_input_*): 0 params, 1 x [R·C], 2 stats [2R], 3 g [R·C],
//   4 gamma [C] (read; x is bound instead when affine = 0), 5 gx [R·C] (read_write).
// Bindings (layer_norm_backward_params): 0 params, 1 x, 2 stats, 3 g (read),
//   4 partial [n_blocks·2·C] (read_write).
// Dispatch: _input_wg — one 64-workgroup per row (folded 1-D); _input_thread — one invocation
//   per row (Grid::cover(R, 64)); _params — one invocation per (b, c) (Grid::cover(n_blocks·C, 64)).
// The variant is chosen by src/ops/softmax.rs (thread_per_row): per-invocation rows on CPU
// adapters (lavapipe, where they were faster at every measured shape), by row length elsewhere.
// Launched by src/ops/norm.rs (layer_norm_backward_raw).

struct LayerNormParams {
    rows: u32,
    cols: u32,
    eps: f32,
    affine: u32,
    block_rows: u32,
    n_blocks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: LayerNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> gx: array<f32>;
// Same slot as gamma, used only by layer_norm_backward_params (WGSL allows this: bindings must
// be unique per entry point).
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;

var<workgroup> red: array<vec2<f32>, 64>;

// Returns (ĝ, ĝ·x̂) for element (r, c).
fn terms(r: u32, c: u32) -> vec2<f32> {
    let i = r * p.cols + c;
    var gh = g[i];
    if (p.affine != 0u) {
        gh = gh * gamma[c];
    }
    let xh = (x[i] - stats[2u * r]) * stats[2u * r + 1u];
    return vec2<f32>(gh, gh * xh);
}

fn write_grad(r: u32, c: u32, means: vec2<f32>) {
    let t = terms(r, c);
    let i = r * p.cols + c;
    let xh = (x[i] - stats[2u * r]) * stats[2u * r + 1u];
    gx[i] = stats[2u * r + 1u] * (t.x - means.x - xh * means.y);
}

@compute @workgroup_size(64)
fn layer_norm_backward_input_wg(@builtin(workgroup_id) wg: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup; precedes every barrier.
    if (r >= p.rows) { return; }
    var acc = vec2<f32>(0.0, 0.0);
    for (var c = lid; c < p.cols; c += 64u) {
        acc += terms(r, c);
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var width = 32u; width > 0u; width = width / 2u) {
        if (lid < width) {
            red[lid] += red[lid + width];
        }
        workgroupBarrier();
    }
    let means = red[0] / f32(p.cols);
    for (var c = lid; c < p.cols; c += 64u) {
        write_grad(r, c, means);
    }
}

@compute @workgroup_size(64)
fn layer_norm_backward_input_thread(@builtin(workgroup_id) wg: vec3<u32>,
                                    @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.rows) { return; }
    var acc = vec2<f32>(0.0, 0.0);
    for (var c = 0u; c < p.cols; c += 1u) {
        acc += terms(r, c);
    }
    let means = acc / f32(p.cols);
    for (var c = 0u; c < p.cols; c += 1u) {
        write_grad(r, c, means);
    }
}

@compute @workgroup_size(64)
fn layer_norm_backward_params(@builtin(workgroup_id) wg: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (id >= p.n_blocks * p.cols) { return; }
    let b = id / p.cols;
    let c = id % p.cols;
    let r0 = b * p.block_rows;
    let r1 = min(r0 + p.block_rows, p.rows);
    var sgx = 0.0;
    var sg = 0.0;
    for (var r = r0; r < r1; r += 1u) {
        let i = r * p.cols + c;
        let xh = (x[i] - stats[2u * r]) * stats[2u * r + 1u];
        sgx += g[i] * xh;
        sg += g[i];
    }
    partial[(2u * b) * p.cols + c] = sgx;
    partial[(2u * b + 1u) * p.cols + c] = sg;
}
