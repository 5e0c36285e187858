// Transposed 3D convolution, kernel 2 stride 2 padding 0 (the U-Net up-sampling): each output
// parity class (a, b, e) ∈ {0,1}³ is a plain GEMM, no zero-stuffing:
//   y[n, 2i+a, 2j+b, 2l+e, co] = Σ_ci x[n,i,j,l,ci] · w[a,b,e,ci,co]
// With v = flattened input voxel (M = N·D·H·W of them) and q = parity index 4a + 2b + e:
//   forward:         Y_q = X · W_q          ([M, Ci] · [Ci, Co])
//   backward_input:  gX  = Σ_q G_q · W_qᵀ   (contraction over co and q)
//   backward_weight: gW_q = Xᵀ · G_q        (reduction over M, split into chunks of CHUNK
//                    voxels written as partials [chunks, 8, Ci, Co]; the wrapper sums them)
// Requires Ci % 4 == 0 and Co % 8 == 0 (vec4 loads); other sizes take the general path.
//
// Register tiles (lavapipe runs one invocation per SIMD lane, so accumulators are registers):
//   forward: 2 voxels × 8 parities × 4 co = 16 vec4 accumulators; per ci step 2 scalar loads,
//            8 vec4 weight loads, 16 vec4 FMAs.
//   backward_input: 4 voxels × 4 ci = 16 scalar accumulators fed by vec4 dot products over co.
//   backward_weight: 4 ci × 8 co per (chunk, parity) = 8 vec4 accumulators (outer products).
//
// Layouts: x [N, D, H, W, Ci] as vec4 over ci; w [8, Ci, Co] as vec4 over co;
// y/g [N, 2D, 2H, 2W, Co] as vec4 over co.
// Bindings: 0 params; forward 1 x, 2 w, 3 y; backward_input 1 g, 2 w, 3 gx;
// backward_weight 1 x, 2 g, 3 partial (read_write last).
// Dispatch: 1-D over tiles, 64 per workgroup, folded grid. Launched by src/ops/conv_transpose3d.rs.

struct UpParams {
    n: u32, d: u32, h: u32, w: u32,
    ci: u32, co: u32, voxels: u32, tiles: u32,
    chunk: u32, chunks: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: UpParams;

fn lin(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 64u + lid;
}

// Flat index (in vec4 units of co) of output voxel for input voxel v and parity q, channel 0.
fn out_base4(v: u32, q: u32) -> u32 {
    let l = v % p.w;
    var r = v / p.w;
    let j = r % p.h; r = r / p.h;
    let i = r % p.d;
    let n = r / p.d;
    let a = q >> 2u;
    let b = (q >> 1u) & 1u;
    let e = q & 1u;
    let od = 2u * i + a;
    let oh = 2u * j + b;
    let ow = 2u * l + e;
    return (((n * 2u * p.d + od) * 2u * p.h + oh) * 2u * p.w + ow) * (p.co / 4u);
}

@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> f_y: array<vec4<f32>>;

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = lin(wg, nwg, lid);
    if (t >= p.tiles) { return; }
    let co4 = p.co / 4u;
    let c4 = t % co4;          // which vec4 of output channels
    let v0 = (t / co4) * 2u;   // first of two input voxels
    let v1 = min(v0 + 1u, p.voxels - 1u);
    let x0 = v0 * p.ci;
    let x1 = v1 * p.ci;
    let wq = p.ci * co4;       // vec4 stride between parities in w
    var a00 = vec4<f32>(0.0);
    var a01 = vec4<f32>(0.0);
    var a02 = vec4<f32>(0.0);
    var a03 = vec4<f32>(0.0);
    var a04 = vec4<f32>(0.0);
    var a05 = vec4<f32>(0.0);
    var a06 = vec4<f32>(0.0);
    var a07 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0);
    var a15 = vec4<f32>(0.0);
    var a16 = vec4<f32>(0.0);
    var a17 = vec4<f32>(0.0);
    for (var c = 0u; c < p.ci; c++) {
        let xa = f_x[x0 + c];
        let xb = f_x[x1 + c];
        let wb = c * co4 + c4;
        let w0 = f_w[wb + 0u * wq];
        let w1 = f_w[wb + 1u * wq];
        let w2 = f_w[wb + 2u * wq];
        let w3 = f_w[wb + 3u * wq];
        let w4 = f_w[wb + 4u * wq];
        let w5 = f_w[wb + 5u * wq];
        let w6 = f_w[wb + 6u * wq];
        let w7 = f_w[wb + 7u * wq];
        a00 = fma(vec4<f32>(xa), w0, a00);
        a10 = fma(vec4<f32>(xb), w0, a10);
        a01 = fma(vec4<f32>(xa), w1, a01);
        a11 = fma(vec4<f32>(xb), w1, a11);
        a02 = fma(vec4<f32>(xa), w2, a02);
        a12 = fma(vec4<f32>(xb), w2, a12);
        a03 = fma(vec4<f32>(xa), w3, a03);
        a13 = fma(vec4<f32>(xb), w3, a13);
        a04 = fma(vec4<f32>(xa), w4, a04);
        a14 = fma(vec4<f32>(xb), w4, a14);
        a05 = fma(vec4<f32>(xa), w5, a05);
        a15 = fma(vec4<f32>(xb), w5, a15);
        a06 = fma(vec4<f32>(xa), w6, a06);
        a16 = fma(vec4<f32>(xb), w6, a16);
        a07 = fma(vec4<f32>(xa), w7, a07);
        a17 = fma(vec4<f32>(xb), w7, a17);
    }
    f_y[out_base4(v0, 0u) + c4] = a00;
    f_y[out_base4(v0, 1u) + c4] = a01;
    f_y[out_base4(v0, 2u) + c4] = a02;
    f_y[out_base4(v0, 3u) + c4] = a03;
    f_y[out_base4(v0, 4u) + c4] = a04;
    f_y[out_base4(v0, 5u) + c4] = a05;
    f_y[out_base4(v0, 6u) + c4] = a06;
    f_y[out_base4(v0, 7u) + c4] = a07;
    if (v0 + 1u < p.voxels) {
        f_y[out_base4(v1, 0u) + c4] = a10;
        f_y[out_base4(v1, 1u) + c4] = a11;
        f_y[out_base4(v1, 2u) + c4] = a12;
        f_y[out_base4(v1, 3u) + c4] = a13;
        f_y[out_base4(v1, 4u) + c4] = a14;
        f_y[out_base4(v1, 5u) + c4] = a15;
        f_y[out_base4(v1, 6u) + c4] = a16;
        f_y[out_base4(v1, 7u) + c4] = a17;
    }
}

@group(0) @binding(1) var<storage, read> bi_g: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bi_w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> bi_gx: array<vec4<f32>>;

@compute @workgroup_size(64)
fn backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = lin(wg, nwg, lid);
    if (t >= p.tiles) { return; }
    let ci4 = p.ci / 4u;
    let co4 = p.co / 4u;
    let c4 = t % ci4;          // which 4 input channels
    let vbase = (t / ci4) * 4u;   // first of four input voxels
    let v0 = min(vbase + 0u, p.voxels - 1u);
    let v1 = min(vbase + 1u, p.voxels - 1u);
    let v2 = min(vbase + 2u, p.voxels - 1u);
    let v3 = min(vbase + 3u, p.voxels - 1u);
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var q = 0u; q < 8u; q++) {
        let g0 = out_base4(v0, q);
        let g1 = out_base4(v1, q);
        let g2 = out_base4(v2, q);
        let g3 = out_base4(v3, q);
        let wb = q * p.ci * co4 + (4u * c4) * co4;
        for (var k = 0u; k < co4; k++) {
            let w0 = bi_w[wb + k];
            let w1 = bi_w[wb + co4 + k];
            let w2 = bi_w[wb + 2u * co4 + k];
            let w3 = bi_w[wb + 3u * co4 + k];
            let gv0 = bi_g[g0 + k];
            s0 += vec4<f32>(dot(gv0, w0), dot(gv0, w1), dot(gv0, w2), dot(gv0, w3));
            let gv1 = bi_g[g1 + k];
            s1 += vec4<f32>(dot(gv1, w0), dot(gv1, w1), dot(gv1, w2), dot(gv1, w3));
            let gv2 = bi_g[g2 + k];
            s2 += vec4<f32>(dot(gv2, w0), dot(gv2, w1), dot(gv2, w2), dot(gv2, w3));
            let gv3 = bi_g[g3 + k];
            s3 += vec4<f32>(dot(gv3, w0), dot(gv3, w1), dot(gv3, w2), dot(gv3, w3));
        }
    }
    { bi_gx[v0 * ci4 + c4] = s0; }
    if (vbase + 1u < p.voxels) { bi_gx[v1 * ci4 + c4] = s1; }
    if (vbase + 2u < p.voxels) { bi_gx[v2 * ci4 + c4] = s2; }
    if (vbase + 3u < p.voxels) { bi_gx[v3 * ci4 + c4] = s3; }
}

@group(0) @binding(1) var<storage, read> bw_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bw_g: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> bw_part: array<vec4<f32>>;

@compute @workgroup_size(64)
fn backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let t = lin(wg, nwg, lid);
    if (t >= p.tiles) { return; }
    let ci4 = p.ci / 4u;
    let co4 = p.co / 4u;
    let co8 = p.co / 8u;
    let o8 = t % co8;
    var r = t / co8;
    let c4 = r % ci4; r = r / ci4;
    let q = r % 8u;
    let chunk = r / 8u;
    let v_start = chunk * p.chunk;
    let v_end = min(v_start + p.chunk, p.voxels);
    var acc00 = vec4<f32>(0.0);
    var acc01 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0);
    var acc21 = vec4<f32>(0.0);
    var acc30 = vec4<f32>(0.0);
    var acc31 = vec4<f32>(0.0);
    for (var v = v_start; v < v_end; v++) {
        let xv = bw_x[v * ci4 + c4];
        let gb = out_base4(v, q) + 2u * o8;
        let g0 = bw_g[gb];
        let g1 = bw_g[gb + 1u];
        acc00 = fma(vec4<f32>(xv.x), g0, acc00);
        acc01 = fma(vec4<f32>(xv.x), g1, acc01);
        acc10 = fma(vec4<f32>(xv.y), g0, acc10);
        acc11 = fma(vec4<f32>(xv.y), g1, acc11);
        acc20 = fma(vec4<f32>(xv.z), g0, acc20);
        acc21 = fma(vec4<f32>(xv.z), g1, acc21);
        acc30 = fma(vec4<f32>(xv.w), g0, acc30);
        acc31 = fma(vec4<f32>(xv.w), g1, acc31);
    }
    // partial[chunk, q, ci, co] in vec4 units of co.
    let base = ((chunk * 8u + q) * p.ci + 4u * c4) * co4 + 2u * o8;
    bw_part[base + 0u * co4 + 0u] = acc00;
    bw_part[base + 0u * co4 + 1u] = acc01;
    bw_part[base + 1u * co4 + 0u] = acc10;
    bw_part[base + 1u * co4 + 1u] = acc11;
    bw_part[base + 2u * co4 + 0u] = acc20;
    bw_part[base + 2u * co4 + 1u] = acc21;
    bw_part[base + 3u * co4 + 0u] = acc30;
    bw_part[base + 3u * co4 + 1u] = acc31;
}
