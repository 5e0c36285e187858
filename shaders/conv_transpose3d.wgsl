// Transposed 3D convolution (groups = 1), channels-last, general geometry: forward, input
// gradient and weight gradient, all as gathers (one invocation per output element, no atomics).
//
// x: [N, D, H, W, Ci], w: [kD, kH, kW, Ci, Co], y: [N, Do, Ho, Wo, Co] with
// Do = (D − 1)·sd − 2·pd + dd·(kd − 1) + opd + 1 (likewise H, W).
// An input voxel i and tap k feed the output o = i·s − p + k·dil (per axis). So
//   forward:         y[n,o,co]  = b[co] + Σ_k Σ_ci x[n, (o + p − k·dil)/s, ci] · w[k,ci,co]
//                                 over taps where (o + p − k·dil) is a non-negative multiple of s
//                                 and the quotient is inside the input;
//   backward_input:  gx[n,i,ci] = Σ_k Σ_co g[n, i·s − p + k·dil, co] · w[k,ci,co]  (o inside);
//   backward_weight: gw[k,ci,co] = Σ_n Σ_i x[n,i,ci] · g[n, i·s − p + k·dil, co]  (o inside).
// The bias is added by the Rust wrapper (broadcast add); its gradient is a sum of g.
//
// Bindings: 0 params; forward 1 x, 2 w (read), 3 y; backward_input 1 g, 2 w, 3 gx;
// backward_weight 1 x, 2 g, 3 gw (read_write last).
// Dispatch: 1-D over the written elements, 64 per workgroup, folded grid.
// Launched by src/ops/conv_transpose3d.rs (general path; k2 s2 uses conv_transpose3d_k2s2.wgsl).

struct ConvTParams {
    n: u32, d: u32, h: u32, w: u32,
    ci: u32, dout: u32, hout: u32, wout: u32,
    co: u32, total: u32, _pad0: u32, _pad1: u32,
    kd: i32, kh: i32, kw: i32, _pad2: i32,
    sd: i32, sh: i32, sw: i32, _pad3: i32,
    pd: i32, ph: i32, pw: i32, _pad4: i32,
    dd: i32, dh: i32, dw: i32, _pad5: i32,
}

@group(0) @binding(0) var<uniform> p: ConvTParams;

fn lin(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 64u + lid;
}

// Input index feeding output `o` through tap `k` on one axis, or −1.
fn source_index(o: i32, k: i32, s: i32, pad: i32, dil: i32, extent: u32) -> i32 {
    let num = o + pad - k * dil;
    if (num < 0 || num % s != 0) { return -1; }
    let i = num / s;
    if (i >= i32(extent)) { return -1; }
    return i;
}

@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let idx = lin(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let co = idx % p.co;
    var r = idx / p.co;
    let ow = i32(r % p.wout); r = r / p.wout;
    let oh = i32(r % p.hout); r = r / p.hout;
    let od = i32(r % p.dout);
    let n = r / p.dout;
    var acc = 0.0;
    for (var a = 0; a < p.kd; a++) {
        let id = source_index(od, a, p.sd, p.pd, p.dd, p.d);
        if (id < 0) { continue; }
        for (var b = 0; b < p.kh; b++) {
            let ih = source_index(oh, b, p.sh, p.ph, p.dh, p.h);
            if (ih < 0) { continue; }
            for (var e = 0; e < p.kw; e++) {
                let iw = source_index(ow, e, p.sw, p.pw, p.dw, p.w);
                if (iw < 0) { continue; }
                let xb = (((n * p.d + u32(id)) * p.h + u32(ih)) * p.w + u32(iw)) * p.ci;
                let wb = u32((a * p.kh + b) * p.kw + e) * p.ci * p.co + co;
                for (var c = 0u; c < p.ci; c++) {
                    acc += f_x[xb + c] * f_w[wb + c * p.co];
                }
            }
        }
    }
    f_y[idx] = acc;
}

@group(0) @binding(1) var<storage, read> bi_g: array<f32>;
@group(0) @binding(2) var<storage, read> bi_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> bi_gx: array<f32>;

@compute @workgroup_size(64)
fn backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let idx = lin(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let ci = idx % p.ci;
    var r = idx / p.ci;
    let iw = i32(r % p.w); r = r / p.w;
    let ih = i32(r % p.h); r = r / p.h;
    let id = i32(r % p.d);
    let n = r / p.d;
    var acc = 0.0;
    for (var a = 0; a < p.kd; a++) {
        let od = id * p.sd - p.pd + a * p.dd;
        if (od < 0 || od >= i32(p.dout)) { continue; }
        for (var b = 0; b < p.kh; b++) {
            let oh = ih * p.sh - p.ph + b * p.dh;
            if (oh < 0 || oh >= i32(p.hout)) { continue; }
            for (var e = 0; e < p.kw; e++) {
                let ow = iw * p.sw - p.pw + e * p.dw;
                if (ow < 0 || ow >= i32(p.wout)) { continue; }
                let gb = (((n * p.dout + u32(od)) * p.hout + u32(oh)) * p.wout + u32(ow)) * p.co;
                let wb = (u32((a * p.kh + b) * p.kw + e) * p.ci + ci) * p.co;
                for (var c = 0u; c < p.co; c++) {
                    acc += bi_g[gb + c] * bi_w[wb + c];
                }
            }
        }
    }
    bi_gx[idx] = acc;
}

@group(0) @binding(1) var<storage, read> bw_x: array<f32>;
@group(0) @binding(2) var<storage, read> bw_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_gw: array<f32>;

@compute @workgroup_size(64)
fn backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let idx = lin(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let co = idx % p.co;
    var r = idx / p.co;
    let ci = r % p.ci; r = r / p.ci;
    let e = i32(r % u32(p.kw)); r = r / u32(p.kw);
    let b = i32(r % u32(p.kh));
    let a = i32(r / u32(p.kh));
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        for (var id = 0; id < i32(p.d); id++) {
            let od = id * p.sd - p.pd + a * p.dd;
            if (od < 0 || od >= i32(p.dout)) { continue; }
            for (var ih = 0; ih < i32(p.h); ih++) {
                let oh = ih * p.sh - p.ph + b * p.dh;
                if (oh < 0 || oh >= i32(p.hout)) { continue; }
                for (var iw = 0; iw < i32(p.w); iw++) {
                    let ow = iw * p.sw - p.pw + e * p.dw;
                    if (ow < 0 || ow >= i32(p.wout)) { continue; }
                    let xv = bw_x[(((n * p.d + u32(id)) * p.h + u32(ih)) * p.w + u32(iw)) * p.ci + ci];
                    let gv = bw_g[(((n * p.dout + u32(od)) * p.hout + u32(oh)) * p.wout + u32(ow)) * p.co + co];
                    acc += xv * gv;
                }
            }
        }
    }
    bw_gw[idx] = acc;
}
