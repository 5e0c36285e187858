// conv3d backward to the weight: a GEMM reducing over the M = N·Do·Ho·Wo output voxels, split
// into `splits` chunks of `chunk` voxels whose partial sums a second pass adds (no float atomics,
// deterministic).
//
//   gw[kd,kh,kw,cig,co] = Σ_{n,od,oh,ow} g[n,od,oh,ow,co] ·
//                         x[n, od·sd−pd+kd·dd, oh·sh−ph+kh·dh, ow·sw−pw+kw·dw, grp·cin_g + cig]
//
// Layouts: x [N, D, H, W, Cin], g [N, Do, Ho, Wo, Cout], gw [kD, kH, kW, Cin/groups, Cout],
// partial [splits, kD·kH·kW·Cin_g·Cout].
// conv3d_backward_weight_naive bindings: 0 params, 1 x, 2 g, 3 partial. One invocation per
//   (split, weight element), total = splits·|gw|, 64 per workgroup, folded 1-D grid.
// conv3d_backward_weight_sum bindings: 0 params, 1 partial, 2 gw. One invocation per weight
//   element (total = |gw|), summing the `splits` partials in order.
// Launched by src/ops/conv3d.rs (backward_weight_raw).
struct ConvParams {
    n: u32, d: u32, h: u32, w: u32,
    cin: u32, cout: u32, cin_g: u32, cout_g: u32,
    od: u32, oh: u32, ow: u32, has_bias: u32,
    kd: u32, kh: u32, kw: u32, total: u32,
    sd: u32, sh: u32, sw: u32, splits: u32,
    pd: u32, ph: u32, pw: u32, chunk: u32,
    dd: u32, dh: u32, dw: u32, m_total: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(64)
fn conv3d_backward_weight_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.total) { return; }
    let wn = p.kd * p.kh * p.kw * p.cin_g * p.cout;
    let e = i % wn;
    let split = i / wn;
    let co = e % p.cout;
    var r = e / p.cout;
    let cil = r % p.cin_g; r = r / p.cin_g;
    let kw = r % p.kw; r = r / p.kw;
    let kh = r % p.kh;
    let kd = r / p.kh;
    let ci = (co / p.cout_g) * p.cin_g + cil;
    let m0 = split * p.chunk;
    let m1 = min(m0 + p.chunk, p.m_total);
    var acc = 0.0;
    for (var m = m0; m < m1; m++) {
        var q = m;
        let ow = q % p.ow; q = q / p.ow;
        let oh = q % p.oh; q = q / p.oh;
        let od = q % p.od;
        let b = q / p.od;
        let id = i32(od * p.sd + kd * p.dd) - i32(p.pd);
        let ih = i32(oh * p.sh + kh * p.dh) - i32(p.ph);
        let iw = i32(ow * p.sw + kw * p.dw) - i32(p.pw);
        if (id < 0 || id >= i32(p.d) || ih < 0 || ih >= i32(p.h) || iw < 0 || iw >= i32(p.w)) { continue; }
        let xi = (((b * p.d + u32(id)) * p.h + u32(ih)) * p.w + u32(iw)) * p.cin + ci;
        acc += g[m * p.cout + co] * x[xi];
    }
    partial[i] = acc;
}

@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> gw: array<f32>;

@compute @workgroup_size(64)
fn conv3d_backward_weight_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.total) { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += partial_in[s * p.total + i];
    }
    gw[i] = acc;
}
