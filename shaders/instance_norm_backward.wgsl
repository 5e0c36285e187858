// Backward of InstanceNorm ([N, S, C] view), from x, the saved stats (μ, rstd per (n, c)) and
// the upstream gradient g (or from the output of InstanceNorm + LeakyReLU without affine, see
// `normalized_and_grad`):
//
//   x̂[n, s, c]  = (x[n, s, c] − μ[n, c])·rstd[n, c]
//   A[n, c]     = Σ_s g[n, s, c]·x̂[n, s, c],   B[n, c] = Σ_s g[n, s, c]
//   gx[n, s, c] = rstd[n, c]·γ[c]·(g[n, s, c] − B[n, c]/S − x̂[n, s, c]·A[n, c]/S)
//   gγ[c] = Σ_n A[n, c],   gβ[c] = Σ_n B[n, c]                  (γ = 1 without affine)
//
// Two-level reduction without atomics: instance_norm_backward_partial writes, per block b of
// block_rows spatial rows, partial[n, b, 0, c] = Σ_{s in b} g·x̂ and partial[n, b, 1, c] = Σ g
// (from the output also partial[n, b, 2, c] = Σ x̂: R = 3 rows, else R = 2);
// the launcher sums over b (and over n for γ, β) with the reduce kernel, giving
// sums[n, 0, c] = A, sums[n, 1, c] = B; instance_norm_backward_input then writes each gx once.
//
// Bindings (partial): 0 params, 1 x [N·S·C], 2 stats [N·2·C], 3 g [N·S·C] (read),
//   4 partial [N·n_blocks·R·C] (read_write).
// Bindings (input):   0 params, 1 x, 2 stats, 3 g, 4 sums [N·R·C], 5 gamma [C] (read; x is bound
//   in place of gamma without affine), 6 gx [N·S·C] (read_write).
// Dispatch: partial Grid::cover(N·n_blocks·C, 64); input Grid::cover(N·S·C, 256) (folded 1-D).
// Launched by src/ops/norm.rs (instance_norm_backward_raw).

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
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;
// The input-gradient entry's bindings (unique per entry point, as WGSL requires).
@group(0) @binding(4) var<storage, read> sums: array<f32>;
@group(0) @binding(5) var<storage, read> gamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(64)
fn instance_norm_backward_partial(@builtin(workgroup_id) wg: vec3<u32>,
                                  @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (id >= p.batch * p.n_blocks * p.channels) { return; }
    let c = id % p.channels;
    let nb = id / p.channels;          // n·n_blocks + b
    let b = nb % p.n_blocks;
    let n = nb / p.n_blocks;
    let s0 = b * p.block_rows;
    let count = min(p.block_rows, p.spatial - s0);
    let mean = stats[(2u * n) * p.channels + c];
    let rstd = stats[(2u * n + 1u) * p.channels + c];
    let base = (n * p.spatial + s0) * p.channels + c;
    var sgx = 0.0;
    var sg = 0.0;
    var sx = 0.0;
    for (var s = 0u; s < count; s += 1u) {
        let i = base + s * p.channels;
        let v = normalized_and_grad(i, mean, rstd);
        sgx += v.y * v.x;
        sg += v.y;
        sx += v.x;
    }
    let rows = sum_rows();
    partial[(rows * nb) * p.channels + c] = sgx;
    partial[(rows * nb + 1u) * p.channels + c] = sg;
    if (rows == 3u) {
        partial[(rows * nb + 2u) * p.channels + c] = sx;
    }
}

// Rows of the partial sums and sums per (n, c): A and B, and from the output also X = Σ_s x̂.
fn sum_rows() -> u32 {
    return select(2u, 3u, p.act_slope > 0.0);
}

@compute @workgroup_size(256)
fn instance_norm_backward_input(@builtin(workgroup_id) wg: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.batch * p.spatial * p.channels) { return; }
    let c = i % p.channels;
    let n = i / (p.spatial * p.channels);
    let mean = stats[(2u * n) * p.channels + c];
    let rstd = stats[(2u * n + 1u) * p.channels + c];
    let inv_s = 1.0 / f32(p.spatial);
    let rows = sum_rows();
    let a = sums[(rows * n) * p.channels + c] * inv_s;
    let b = sums[(rows * n + 1u) * p.channels + c] * inv_s;
    var scale = rstd;
    if (p.affine != 0u) {
        scale = scale * gamma[c];
    }
    let v = normalized_and_grad(i, mean, rstd);
    if (rows == 3u) {
        // x̂ from the output is off by its rounding, so Σ_s x̂ is not exactly 0: centre it
        // (m = X/S; Σ_s g·(x̂ − m) = A − m·B) so that Σ_s gx is 0 as in exact arithmetic — a
        // bias ahead of the norm gets a zero gradient up to f32 noise, not the rounding's.
        let m = sums[(rows * n + 2u) * p.channels + c] * inv_s;
        gx[i] = scale * (v.y - b - (v.x - m) * (a - m * b));
    } else {
        gx[i] = scale * (v.y - b - v.x * a);
    }
}

// (x̂, ∂L/∂x̂) at element i. act_slope = 0: binding 1 holds x and g is ∂L/∂x̂. act_slope > 0 (the
// backward of InstanceNorm + LeakyReLU without affine, which keeps its output): binding 1 holds
// z = LeakyReLU(x̂) and g is ∂L/∂z; z > 0 exactly where x̂ > 0, so x̂ = z there and z / slope
// elsewhere, and ∂L/∂x̂ = g·1 or g·slope.
fn normalized_and_grad(i: u32, mean: f32, rstd: f32) -> vec2<f32> {
    if (p.act_slope > 0.0) {
        let z = x[i];
        let pos = z > 0.0;
        return vec2<f32>(select(z / p.act_slope, z, pos), g[i] * select(p.act_slope, 1.0, pos));
    }
    return vec2<f32>((x[i] - mean) * rstd, g[i]);
}
