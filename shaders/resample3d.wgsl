// Separable resampling of channels-last volumes to an arbitrary size: nearest or trilinear
// (align-corners on or off), forward and input gradient.
//
// Per axis the host builds small tables (src/ops/resample.rs):
//   forward, per output index o: (i0, i1, λ) — the output reads (1−λ)·x[i0] + λ·x[i1];
//   backward, per input index i: the list of (o, weight) with weight = Σ of the forward weights
//   that output o gives to input i (CSR: start[i]..start[i+1] into a pair list).
// forward:  y[n,od,oh,ow,c] = Σ_{a,b,e ∈ {0,1}} wd_a(od)·wh_b(oh)·ww_e(ow) · x[n, id_a, ih_b, iw_e, c]
// backward: gx[n,d,h,w,c] = Σ_{(od,u)∈B_d(d)} Σ_{(oh,v)∈B_h(h)} Σ_{(ow,t)∈B_w(w)} u·v·t · g[n,od,oh,ow,c]
// The backward is a gather (one invocation per input-gradient element), no atomics.
//
// Layout: x [N, D, H, W, C], y [N, Do, Ho, Wo, C]; tables: one f32 buffer, integers stored as
// f32 (exact below 2^24), at the offsets in params.
// Bindings: 0 params; 1 source (x or g), 2 tables (read); 3 destination (read_write).
// Dispatch: 1-D over destination elements, 256 per workgroup, folded grid.
// Launched by src/ops/resample.rs.

struct ResampleParams {
    n: u32, c: u32, total: u32, _pad0: u32,
    d: u32, h: u32, w: u32, _pad1: u32,
    dout: u32, hout: u32, wout: u32, _pad2: u32,
    fwd_d: u32, fwd_h: u32, fwd_w: u32, _pad3: u32,
    start_d: u32, start_h: u32, start_w: u32, _pad4: u32,
    pairs_d: u32, pairs_h: u32, pairs_w: u32, _pad5: u32,
}

@group(0) @binding(0) var<uniform> p: ResampleParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> tables: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn lin(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn resample_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = lin(wg, nwg, lid);
    if (i >= p.total) { return; }
    let c = i % p.c;
    var r = i / p.c;
    let ow = r % p.wout; r = r / p.wout;
    let oh = r % p.hout; r = r / p.hout;
    let od = r % p.dout;
    let n = r / p.dout;
    let td = p.fwd_d + 3u * od;
    let th = p.fwd_h + 3u * oh;
    let tw = p.fwd_w + 3u * ow;
    let d_idx = vec2<u32>(u32(tables[td]), u32(tables[td + 1u]));
    let h_idx = vec2<u32>(u32(tables[th]), u32(tables[th + 1u]));
    let w_idx = vec2<u32>(u32(tables[tw]), u32(tables[tw + 1u]));
    let d_wt = vec2<f32>(1.0 - tables[td + 2u], tables[td + 2u]);
    let h_wt = vec2<f32>(1.0 - tables[th + 2u], tables[th + 2u]);
    let w_wt = vec2<f32>(1.0 - tables[tw + 2u], tables[tw + 2u]);
    var acc = 0.0;
    for (var a = 0u; a < 2u; a++) {
        for (var b = 0u; b < 2u; b++) {
            let row = ((n * p.d + d_idx[a]) * p.h + h_idx[b]) * p.w;
            let wdh = d_wt[a] * h_wt[b];
            acc += wdh * (w_wt[0] * src[(row + w_idx[0]) * p.c + c] + w_wt[1] * src[(row + w_idx[1]) * p.c + c]);
        }
    }
    dst[i] = acc;
}

@compute @workgroup_size(256)
fn resample_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = lin(wg, nwg, lid);
    if (i >= p.total) { return; }
    let c = i % p.c;
    var r = i / p.c;
    let w = r % p.w; r = r / p.w;
    let h = r % p.h; r = r / p.h;
    let d = r % p.d;
    let n = r / p.d;
    var acc = 0.0;
    for (var kd = u32(tables[p.start_d + d]); kd < u32(tables[p.start_d + d + 1u]); kd++) {
        let od = u32(tables[p.pairs_d + 2u * kd]);
        let ud = tables[p.pairs_d + 2u * kd + 1u];
        for (var kh = u32(tables[p.start_h + h]); kh < u32(tables[p.start_h + h + 1u]); kh++) {
            let oh = u32(tables[p.pairs_h + 2u * kh]);
            let udh = ud * tables[p.pairs_h + 2u * kh + 1u];
            let row = ((n * p.dout + od) * p.hout + oh) * p.wout;
            for (var kw = u32(tables[p.start_w + w]); kw < u32(tables[p.start_w + w + 1u]); kw++) {
                let ow = u32(tables[p.pairs_w + 2u * kw]);
                acc += udh * tables[p.pairs_w + 2u * kw + 1u] * src[(row + ow) * p.c + c];
            }
        }
    }
    dst[i] = acc;
}
