// Batched matmul of f16 operands with f32 accumulation and an f32 result (mixed precision):
//
//   C[b, m, n] = Σ_k A(b, m, k) · B(b, k, n)      A, B f16; products and sums f32; C f32
//
// Each f16 operand is widened to f32 as it is loaded and multiplied in f32: a product of two
// f16 values (11-bit significands) needs 22 bits and is exact in f32's 24, so this is the
// arithmetic of f16 tensor-core MMA with f32 accumulation — the only rounding is the f32
// accumulation itself, as in the f32 kernels. What mixed precision saves is memory and load
// bandwidth: the operands are half the bytes.
//
// Operands as stored (element strides; batch offset b·a_sb, b·b_sb, 0 = shared operand):
//   A(b, m, k) = a[b·a_sb + m·a_sm + k·a_sk],  B(b, k, n) = b[b·b_sb + k·b_sk + n·b_sn].
// The tiled kernels read vec4<f16> along the contiguous axis of each operand, one kernel per
// transpose pattern (the launcher picks it, src/ops/matmul_f16.rs):
//   matmul_f16_nn_4x4: A [M, K], B [K, N] row-major (forward of a linear); K % 4 = N % 4 = 0
//   matmul_f16_nt_4x4: A [M, K], B stored [N, K]  (C = A·Bᵀ: the input gradient G·Wᵀ); K % 4 = 0
//   matmul_f16_tn_4x4: A stored [K, M], B [K, N]  (C = Aᵀ·B: the weight gradient Xᵀ·G);
//                      M % 4 = N % 4 = 0
// Each invocation owns a 4 × 4 tile of C (rows m0..m0+3, columns n0..n0+3), accumulated in four
// vec4<f32> registers; edge tiles clamp their loads and mask their stores. With M, N, K
// multiples of 4 as required, every vec4 load is aligned (batch offsets are multiples of M·K
// or K·N, hence of 4).
//   matmul_f16_naive: one output element per invocation, scalar loads with any strides: the
//                     oracle of the tiled kernels and the path for other shapes.
//
// Split-K (tiled kernels): workgroup z is the split s; split s sums k-steps
// [s·k_chunk, (s+1)·k_chunk) (k-steps are 4 values of k for nn/nt, one for tn) and writes its
// partial C at offset s·batch·M·N; the launcher sums the splits. Unsplit: z = 1.
//
// Bindings: 0 params (uniform MatmulF16Params), 1 a (read, f16), 2 b (read, f16),
// 3 c (read_write, f32). Dispatch: tiled, invocation t = (wg.x + wg.y·nwg.x)·64 + local index
// over batch × tiles_m × tiles_n (column tiles fastest, so neighbouring invocations read
// neighbouring B columns); naive, t over batch·M·N. Needs SHADER_F16.
// Launched by src/ops/matmul_f16.rs (matmul_f16_launch).

enable f16;

struct MatmulF16Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_sb: u32, b_sb: u32, a_sm: u32, a_sk: u32,
    b_sk: u32, b_sn: u32, tiles_m: u32, tiles_n: u32,
    k_chunk: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: MatmulF16Params;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 64u + lid;
}

// Store the tile rows m0..m0+3 × columns n0..n0+3 of split `split`, masked at the edges.
fn store_tile(split: u32, bat: u32, m0: u32, n0: u32, tile: array<vec4<f32>, 4>) {
    let base = (split * p.batch + bat) * p.m * p.n;
    var rows = tile;
    for (var r = 0u; r < 4u; r++) {
        if (m0 + r >= p.m) { break; }
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < p.n) { c[base + (m0 + r) * p.n + n0 + j] = rows[r][j]; }
        }
    }
}

// ---- naive: scalar loads, any strides --------------------------------------------------------

@group(0) @binding(1) var<storage, read> an: array<f16>;
@group(0) @binding(2) var<storage, read> bn: array<f16>;

@compute @workgroup_size(64)
fn matmul_f16_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wg, nwg, lid);
    if (t >= p.batch * p.m * p.n) { return; }
    let bat = t / (p.m * p.n);
    let m = (t / p.n) % p.m;
    let n = t % p.n;
    let ab = bat * p.a_sb + m * p.a_sm;
    let bb = bat * p.b_sb + n * p.b_sn;
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc = fma(f32(an[ab + k * p.a_sk]), f32(bn[bb + k * p.b_sk]), acc);
    }
    c[t] = acc;
}

// ---- tiled: vec4<f16> loads, 4 × 4 register tile ---------------------------------------------

@group(0) @binding(1) var<storage, read> a4: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f16>>;

struct Tile { valid: bool, bat: u32, m0: u32, n0: u32, k_begin: u32, k_end: u32 }

// The tile of invocation t and its k-step range in split wg.z (k_steps in all).
fn tile_of(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, k_steps: u32) -> Tile {
    let t = linear_id(wg, nwg, lid);
    let per_batch = p.tiles_m * p.tiles_n;
    let bat = t / per_batch;
    let r = t % per_batch;
    let k_begin = wg.z * p.k_chunk;
    return Tile(bat < p.batch, bat, (r / p.tiles_n) * 4u, (r % p.tiles_n) * 4u, k_begin,
                min(k_steps, k_begin + p.k_chunk));
}

@compute @workgroup_size(64)
fn matmul_f16_nn_4x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k4 = p.k / 4u;
    let tile = tile_of(wg, nwg, lid, k4);
    if (!tile.valid) { return; }
    let n4 = p.n / 4u;
    // A row m, k-step kk: a4[(b·a_sb)/4 + m·k4 + kk]; B row k, column group g: b4[(b·b_sb)/4 + k·n4 + g].
    let ab = tile.bat * p.a_sb / 4u;
    let ar0 = ab + min(tile.m0, p.m - 1u) * k4;
    let ar1 = ab + min(tile.m0 + 1u, p.m - 1u) * k4;
    let ar2 = ab + min(tile.m0 + 2u, p.m - 1u) * k4;
    let ar3 = ab + min(tile.m0 + 3u, p.m - 1u) * k4;
    let bc = tile.bat * p.b_sb / 4u + tile.n0 / 4u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var kk = tile.k_begin; kk < tile.k_end; kk++) {
        // B rows 4kk .. 4kk+3 at this tile's four columns.
        let row = bc + 4u * kk * n4;
        let b0 = vec4<f32>(b4[row]);
        let b1 = vec4<f32>(b4[row + n4]);
        let b2 = vec4<f32>(b4[row + 2u * n4]);
        let b3 = vec4<f32>(b4[row + 3u * n4]);
        let a0 = vec4<f32>(a4[ar0 + kk]);
        c0 = fma(vec4<f32>(a0.x), b0, fma(vec4<f32>(a0.y), b1, fma(vec4<f32>(a0.z), b2, fma(vec4<f32>(a0.w), b3, c0))));
        let a1 = vec4<f32>(a4[ar1 + kk]);
        c1 = fma(vec4<f32>(a1.x), b0, fma(vec4<f32>(a1.y), b1, fma(vec4<f32>(a1.z), b2, fma(vec4<f32>(a1.w), b3, c1))));
        let a2 = vec4<f32>(a4[ar2 + kk]);
        c2 = fma(vec4<f32>(a2.x), b0, fma(vec4<f32>(a2.y), b1, fma(vec4<f32>(a2.z), b2, fma(vec4<f32>(a2.w), b3, c2))));
        let a3 = vec4<f32>(a4[ar3 + kk]);
        c3 = fma(vec4<f32>(a3.x), b0, fma(vec4<f32>(a3.y), b1, fma(vec4<f32>(a3.z), b2, fma(vec4<f32>(a3.w), b3, c3))));
    }
    store_tile(wg.z, tile.bat, tile.m0, tile.n0, array<vec4<f32>, 4>(c0, c1, c2, c3));
}

@compute @workgroup_size(64)
fn matmul_f16_nt_4x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k4 = p.k / 4u;
    let tile = tile_of(wg, nwg, lid, k4);
    if (!tile.valid) { return; }
    // A row m and B row n (B stored [N, K]) both run along k: 16 dot products of vec4 per step.
    let ab = tile.bat * p.a_sb / 4u;
    let ar0 = ab + min(tile.m0, p.m - 1u) * k4;
    let ar1 = ab + min(tile.m0 + 1u, p.m - 1u) * k4;
    let ar2 = ab + min(tile.m0 + 2u, p.m - 1u) * k4;
    let ar3 = ab + min(tile.m0 + 3u, p.m - 1u) * k4;
    let bb = tile.bat * p.b_sb / 4u;
    let br0 = bb + min(tile.n0, p.n - 1u) * k4;
    let br1 = bb + min(tile.n0 + 1u, p.n - 1u) * k4;
    let br2 = bb + min(tile.n0 + 2u, p.n - 1u) * k4;
    let br3 = bb + min(tile.n0 + 3u, p.n - 1u) * k4;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var kk = tile.k_begin; kk < tile.k_end; kk++) {
        let b0 = vec4<f32>(b4[br0 + kk]);
        let b1 = vec4<f32>(b4[br1 + kk]);
        let b2 = vec4<f32>(b4[br2 + kk]);
        let b3 = vec4<f32>(b4[br3 + kk]);
        let a0 = vec4<f32>(a4[ar0 + kk]);
        c0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        let a1 = vec4<f32>(a4[ar1 + kk]);
        c1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        let a2 = vec4<f32>(a4[ar2 + kk]);
        c2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        let a3 = vec4<f32>(a4[ar3 + kk]);
        c3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    store_tile(wg.z, tile.bat, tile.m0, tile.n0, array<vec4<f32>, 4>(c0, c1, c2, c3));
}

@compute @workgroup_size(64)
fn matmul_f16_tn_4x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let tile = tile_of(wg, nwg, lid, p.k);
    if (!tile.valid) { return; }
    // A stored [K, M]: row k holds the four rows' values of this tile as one vec4, B row k its
    // four columns: one outer product per k.
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    let ac = tile.bat * p.a_sb / 4u + tile.m0 / 4u;
    let bc = tile.bat * p.b_sb / 4u + tile.n0 / 4u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k = tile.k_begin; k < tile.k_end; k++) {
        let av = vec4<f32>(a4[ac + k * m4]);
        let bv = vec4<f32>(b4[bc + k * n4]);
        c0 = fma(vec4<f32>(av.x), bv, c0);
        c1 = fma(vec4<f32>(av.y), bv, c1);
        c2 = fma(vec4<f32>(av.z), bv, c2);
        c3 = fma(vec4<f32>(av.w), bv, c3);
    }
    store_tile(wg.z, tile.bat, tile.m0, tile.n0, array<vec4<f32>, 4>(c0, c1, c2, c3));
}
