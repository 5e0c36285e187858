// 3D max and average pooling over channels-last volumes, forward and input gradient.
//
// x: [N, D, H, W, C], y: [N, Do, Ho, Wo, C], Do = (D + 2·pd − kd) / sd + 1 (floor), same for H, W.
// Window of output (od, oh, ow): input d = od·sd − pd + a, a ∈ [0, kd) (likewise h, w); padded
// positions are skipped (max) or count as zeros (avg, divisor kd·kh·kw when count_include_pad,
// else the number of in-bounds positions).
//
// max_pool_forward:  y = max over the window; argmax = local window index a·kh·kw + b·kw + c of
//                    the first maximum, stored as f32 (exact below 2^24).
// max_pool_backward: gx[n,d,h,w,c] = Σ_{windows o ∋ (d,h,w), argmax(o) = this position} g[o]
// avg_pool_forward:  y = Σ window / divisor
// avg_pool_backward: gx[n,d,h,w,c] = Σ_{windows o ∋ (d,h,w)} g[o] / divisor(o)
// The backward passes are gathers (one invocation per input-gradient element): the windows that
// contain d are od ∈ [ceil((d + pd − kd + 1)/sd), floor((d + pd)/sd)] ∩ [0, Do).
//
// Bindings: 0 params; forward: 1 x (read), 2 y, 3 argmax (max only) (read_write);
// backward: 1 g (read), 2 argmax (max only, read), last gx (read_write).
// Dispatch: 1-D over output (forward) or input (backward) elements, 256 per workgroup, folded.
// Launched by src/ops/pool.rs.

struct PoolParams {
    n: u32, d: u32, h: u32, w: u32,
    c: u32, dout: u32, hout: u32, wout: u32,
    kd: i32, kh: i32, kw: i32, sd: i32,
    sh: i32, sw: i32, pd: i32, ph: i32,
    pw: i32, count_include_pad: u32, total: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;

fn lin(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// Divisor of the average over the window starting at (d0, h0, w0).
fn avg_divisor(d0: i32, h0: i32, w0: i32) -> f32 {
    if (p.count_include_pad == 1u) {
        // PyTorch counts padding but not positions past the padded extent.
        let d1 = min(d0 + p.kd, i32(p.d) + p.pd);
        let h1 = min(h0 + p.kh, i32(p.h) + p.ph);
        let w1 = min(w0 + p.kw, i32(p.w) + p.pw);
        return f32((d1 - d0) * (h1 - h0) * (w1 - w0));
    }
    let dn = min(d0 + p.kd, i32(p.d)) - max(d0, 0);
    let hn = min(h0 + p.kh, i32(p.h)) - max(h0, 0);
    let wn = min(w0 + p.kw, i32(p.w)) - max(w0, 0);
    return f32(max(dn * hn * wn, 1));
}

@group(0) @binding(1) var<storage, read> mf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mf_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> mf_arg: array<f32>;

@compute @workgroup_size(256)
fn max_pool_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = lin(wg, nwg, lid);
    if (i >= p.total) { return; }
    let c = i % p.c;
    var r = i / p.c;
    let ow = i32(r % p.wout); r = r / p.wout;
    let oh = i32(r % p.hout); r = r / p.hout;
    let od = i32(r % p.dout);
    let n = r / p.dout;
    let d0 = od * p.sd - p.pd;
    let h0 = oh * p.sh - p.ph;
    let w0 = ow * p.sw - p.pw;
    var best = 0.0;
    var best_idx = -1;
    for (var a = 0; a < p.kd; a++) {
        let d = d0 + a;
        if (d < 0 || d >= i32(p.d)) { continue; }
        for (var b = 0; b < p.kh; b++) {
            let h = h0 + b;
            if (h < 0 || h >= i32(p.h)) { continue; }
            for (var e = 0; e < p.kw; e++) {
                let w = w0 + e;
                if (w < 0 || w >= i32(p.w)) { continue; }
                let v = mf_x[(((n * p.d + u32(d)) * p.h + u32(h)) * p.w + u32(w)) * p.c + c];
                if (best_idx < 0 || v > best) {
                    best = v;
                    best_idx = (a * p.kh + b) * p.kw + e;
                }
            }
        }
    }
    mf_y[i] = best;
    mf_arg[i] = f32(max(best_idx, 0));
}

@group(0) @binding(1) var<storage, read> mb_g: array<f32>;
@group(0) @binding(2) var<storage, read> mb_arg: array<f32>;
@group(0) @binding(3) var<storage, read_write> mb_gx: array<f32>;

@compute @workgroup_size(256)
fn max_pool_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = lin(wg, nwg, lid);
    if (i >= p.total) { return; }
    let c = i % p.c;
    var r = i / p.c;
    let w = i32(r % p.w); r = r / p.w;
    let h = i32(r % p.h); r = r / p.h;
    let d = i32(r % p.d);
    let n = r / p.d;
    // Ranges of windows containing (d, h, w); (x + s·k) keeps the division on non-negatives.
    let od_lo = max((d + p.pd - p.kd + 1 + p.sd * p.kd + p.sd - 1) / p.sd - p.kd, 0);
    let od_hi = min((d + p.pd) / p.sd, i32(p.dout) - 1);
    let oh_lo = max((h + p.ph - p.kh + 1 + p.sh * p.kh + p.sh - 1) / p.sh - p.kh, 0);
    let oh_hi = min((h + p.ph) / p.sh, i32(p.hout) - 1);
    let ow_lo = max((w + p.pw - p.kw + 1 + p.sw * p.kw + p.sw - 1) / p.sw - p.kw, 0);
    let ow_hi = min((w + p.pw) / p.sw, i32(p.wout) - 1);
    var acc = 0.0;
    for (var od = od_lo; od <= od_hi; od++) {
        for (var oh = oh_lo; oh <= oh_hi; oh++) {
            for (var ow = ow_lo; ow <= ow_hi; ow++) {
                let local = ((d - (od * p.sd - p.pd)) * p.kh + (h - (oh * p.sh - p.ph))) * p.kw + (w - (ow * p.sw - p.pw));
                let o = (((n * p.dout + u32(od)) * p.hout + u32(oh)) * p.wout + u32(ow)) * p.c + c;
                if (i32(mb_arg[o]) == local) {
                    acc += mb_g[o];
                }
            }
        }
    }
    mb_gx[i] = acc;
}

@group(0) @binding(1) var<storage, read> af_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> af_y: array<f32>;

@compute @workgroup_size(256)
fn avg_pool_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = lin(wg, nwg, lid);
    if (i >= p.total) { return; }
    let c = i % p.c;
    var r = i / p.c;
    let ow = i32(r % p.wout); r = r / p.wout;
    let oh = i32(r % p.hout); r = r / p.hout;
    let od = i32(r % p.dout);
    let n = r / p.dout;
    let d0 = od * p.sd - p.pd;
    let h0 = oh * p.sh - p.ph;
    let w0 = ow * p.sw - p.pw;
    var acc = 0.0;
    for (var d = max(d0, 0); d < min(d0 + p.kd, i32(p.d)); d++) {
        for (var h = max(h0, 0); h < min(h0 + p.kh, i32(p.h)); h++) {
            for (var w = max(w0, 0); w < min(w0 + p.kw, i32(p.w)); w++) {
                acc += af_x[(((n * p.d + u32(d)) * p.h + u32(h)) * p.w + u32(w)) * p.c + c];
            }
        }
    }
    af_y[i] = acc / avg_divisor(d0, h0, w0);
}

@group(0) @binding(1) var<storage, read> ab_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> ab_gx: array<f32>;

@compute @workgroup_size(256)
fn avg_pool_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = lin(wg, nwg, lid);
    if (i >= p.total) { return; }
    let c = i % p.c;
    var r = i / p.c;
    let w = i32(r % p.w); r = r / p.w;
    let h = i32(r % p.h); r = r / p.h;
    let d = i32(r % p.d);
    let n = r / p.d;
    let od_lo = max((d + p.pd - p.kd + 1 + p.sd * p.kd + p.sd - 1) / p.sd - p.kd, 0);
    let od_hi = min((d + p.pd) / p.sd, i32(p.dout) - 1);
    let oh_lo = max((h + p.ph - p.kh + 1 + p.sh * p.kh + p.sh - 1) / p.sh - p.kh, 0);
    let oh_hi = min((h + p.ph) / p.sh, i32(p.hout) - 1);
    let ow_lo = max((w + p.pw - p.kw + 1 + p.sw * p.kw + p.sw - 1) / p.sw - p.kw, 0);
    let ow_hi = min((w + p.pw) / p.sw, i32(p.wout) - 1);
    var acc = 0.0;
    for (var od = od_lo; od <= od_hi; od++) {
        for (var oh = oh_lo; oh <= oh_hi; oh++) {
            for (var ow = ow_lo; ow <= ow_hi; ow++) {
                let o = (((n * p.dout + u32(od)) * p.hout + u32(oh)) * p.wout + u32(ow)) * p.c + c;
                acc += ab_g[o] / avg_divisor(od * p.sd - p.pd, oh * p.sh - p.ph, ow * p.sw - p.pw);
            }
        }
    }
    ab_gx[i] = acc;
}
