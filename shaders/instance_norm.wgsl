// InstanceNorm for channels-last activations viewed as [N, S, C] (S = D·H·W or H·W):
//
//   μ[n, c]    = (1/S) Σ_s x[n, s, c]
//   σ²[n, c]   = (1/S) Σ_s (x[n, s, c] − μ[n, c])²        (biased, as torch)
//   rstd[n, c] = 1 / sqrt(σ²[n, c] + eps)
//   y[n, s, c] = (x[n, s, c] − μ[n, c])·rstd[n, c]·γ[c] + β[c]   (γ = 1, β = 0 without affine)
//
// S can be large (16·48·48 = 36864), so the statistics are a two-level reduction, no atomics:
//   instance_norm_partial:  per (n, b, c), over the rows s of block b (block_rows of them):
//                           partial[n, b, 0, c] = block mean m_b,
//                           partial[n, b, 1, c] = M2_b = Σ_{s in b} (x − m_b)²
//   instance_norm_finalize: per (n, c), merges the blocks with Chan's parallel update
//                           (n_ab = n_a + n_b, δ = m_b − m_a, m = m_a + δ·n_b/n_ab,
//                            M2 = M2_a + M2_b + δ²·n_a·n_b/n_ab), stable where E[x²]−μ² is not;
//                           stats[n, 0, c] = μ, stats[n, 1, c] = rstd.
//   instance_norm_apply:    per element, y from x and stats.
//   instance_norm_apply_leaky: the same, then LeakyReLU with slope act_slope (≥ 0):
//                           z = y where y > 0, else act_slope·y (the formula of elementwise.wgsl's
//                           leaky_relu, so z is bit for bit the two ops run one after the other).
// Loads are coalesced along c in every kernel (one invocation per channel, adjacent c adjacent).
//
// Bindings: partial / finalize: 0 params, 1 src (read: x, resp. partial), 2 dst (read_write:
//   partial [N·n_blocks·2·C], resp. stats [N·2·C]).
//   apply (and apply_leaky): 0 params, 1 x [N·S·C], 2 stats [N·2·C], 3 gamma [C], 4 beta [C]
//   (read; x is bound in place of gamma/beta without affine), 5 y [N·S·C] (read_write).
// Dispatch: partial Grid::cover(N·n_blocks·C, 64); finalize Grid::cover(N·C, 64);
//   apply Grid::cover(N·S·C, 256) (folded 1-D).
// Launched by src/ops/norm.rs (instance_norm_raw, instance_norm_leaky_relu).

struct InstanceNormParams {
    batch: u32,
    spatial: u32,
    channels: u32,
    eps: f32,
    affine: u32,
    block_rows: u32,
    n_blocks: u32,
    act_slope: f32,
}

@group(0) @binding(0) var<uniform> p: InstanceNormParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// apply's bindings (WGSL requires bindings to be unique per entry point only).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn block_count(b: u32) -> u32 {
    return min(p.block_rows, p.spatial - b * p.block_rows);
}

@compute @workgroup_size(64)
fn instance_norm_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (id >= p.batch * p.n_blocks * p.channels) { return; }
    let c = id % p.channels;
    let nb = id / p.channels;          // n·n_blocks + b
    let b = nb % p.n_blocks;
    let n = nb / p.n_blocks;
    let s0 = b * p.block_rows;
    let count = block_count(b);
    let base = (n * p.spatial + s0) * p.channels + c;
    var acc = 0.0;
    for (var s = 0u; s < count; s += 1u) {
        acc += src[base + s * p.channels];
    }
    let mean = acc / f32(count);
    var m2 = 0.0;
    for (var s = 0u; s < count; s += 1u) {
        let d = src[base + s * p.channels] - mean;
        m2 += d * d;
    }
    dst[(2u * nb) * p.channels + c] = mean;
    dst[(2u * nb + 1u) * p.channels + c] = m2;
}

@compute @workgroup_size(64)
fn instance_norm_finalize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (id >= p.batch * p.channels) { return; }
    let c = id % p.channels;
    let n = id / p.channels;
    var count = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var b = 0u; b < p.n_blocks; b += 1u) {
        let nb = n * p.n_blocks + b;
        let cb = f32(block_count(b));
        let mb = src[(2u * nb) * p.channels + c];
        let m2b = src[(2u * nb + 1u) * p.channels + c];
        let total = count + cb;
        let delta = mb - mean;
        mean = mean + delta * (cb / total);
        m2 = m2 + m2b + delta * delta * (count * cb / total);
        count = total;
    }
    dst[(2u * n) * p.channels + c] = mean;
    dst[(2u * n + 1u) * p.channels + c] = inverseSqrt(m2 / f32(p.spatial) + p.eps);
}

// Element i of y (after γ, β with affine): what both apply entries write, the same arithmetic.
fn normalized(i: u32) -> f32 {
    let c = i % p.channels;
    let n = i / (p.spatial * p.channels);
    var v = (x[i] - stats[(2u * n) * p.channels + c]) * stats[(2u * n + 1u) * p.channels + c];
    if (p.affine != 0u) {
        v = v * gamma[c] + beta[c];
    }
    return v;
}

@compute @workgroup_size(256)
fn instance_norm_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.batch * p.spatial * p.channels) { return; }
    y[i] = normalized(i);
}

@compute @workgroup_size(256)
fn instance_norm_apply_leaky(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.batch * p.spatial * p.channels) { return; }
    let v = normalized(i);
    y[i] = select(p.act_slope * v, v, v > 0.0);
}
