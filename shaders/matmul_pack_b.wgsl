// B of a matmul copied into column panels, the layout the vec4 tiles' `pb_` forms read
// (shaders/matmul_vec4.wgsl, scripts/gen_matmul_wgsl.py).
//
// For each of B's matrices (stored [mat, K, N], N % 4 == 0), panel j of P = 4·panel4 columns is
// K rows of P values:
//
//   packed[mat, j, k, q] = B[mat, k, j·P + q]   for j·P + q < N, else 0,
//
// mat-major, then panel, then k, then q, so a workgroup that owns panel j reads one contiguous
// block of K·P values through its whole k loop instead of K segments N values apart. (A
// transposed B is not packed: the `_tb` forms read it per column, and packed it measured no
// faster.)
//
// One invocation per packed vec4, on a grid with no division in it (an integer division is a
// scalar loop over the lanes on a CPU adapter): x·64 + local index = the vec4 column group
// c < panels · panel4 (past N/4: padding), y = k, z = the matrix. Its slot is
// ((mat · panels + c >> shift) · K + k) · panel4 + (c & (panel4 − 1)), with panel4 = 2^shift.
//
// Bindings: 0 params (uniform PackParams), 1 B (read), 2 packed (read_write).
// Launched by src/ops/matmul_pack_b.rs.

struct PackParams {
    k: u32, n: u32, panels: u32, shift: u32,
}

@group(0) @binding(0) var<uniform> p: PackParams;
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> packed: array<vec4<f32>>;

// The packed vec4 slot of column group `col4` of row `k` of matrix `mat`.
fn slot(mat: u32, k: u32, col4: u32) -> u32 {
    let panel4 = 1u << p.shift;
    return ((mat * p.panels + (col4 >> p.shift)) * p.k + k) * panel4 + (col4 & (panel4 - 1u));
}

@compute @workgroup_size(64)
fn pack_b_panels(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let col4 = wg.x * 64u + lid;
    if (col4 >= p.panels << p.shift) { return; }
    let n4 = p.n / 4u;
    var v = vec4<f32>(0.0);
    if (col4 < n4) {
        v = src4[(wg.z * p.k + wg.y) * n4 + col4];
    }
    packed[slot(wg.z, wg.y, col4)] = v;
}
