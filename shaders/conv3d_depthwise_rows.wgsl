// Depthwise conv3d (groups = C, channel multiplier 1) of kernel width 3 with stride 1 and
// dilation 1 along W, for CPU adapters: lanes over channels, a sliding window along W.
//
//   y[n, od, oh, ow, c] = b[c] + Σ_{kd, kh, kw} x[n, od·sd−pd+kd·dd, oh·sh−ph+kh·dh, ow−pw+kw, c]
//                                             · w[kd, kh, kw, 0, c]
//   gw[kd, kh, kw, 0, c] = Σ_{n, od, oh, ow} x[n, od·sd−pd+kd·dd, oh·sh−ph+kh·dh, ow−pw+kw, c]
//                                          · g[n, od, oh, ow, c]
// (taps in the zero padding contribute nothing). Layouts: x [N, D, H, W, C], w / gw
// [kD, kH, 3, 1, C], y / g [N, Do, Ho, Wo, C], contiguous f32 viewed as vec4 (C % 4 == 0).
//
// Why: the vec4 depthwise kernel (shaders/conv3d.wgsl) runs lanes over voxels, so each of its
// loads is a per-lane gather with per-lane address arithmetic, one load per FMA, and every input
// value is loaded once per tap that reads it (27 times for 3³). Here the LANES lanes of a
// workgroup (one SIMD row of lavapipe) take consecutive vec4 groups of channels and share the
// voxels, so all address arithmetic is workgroup-uniform, and the three W taps of a kernel row
// read a window of consecutive input voxels that is loaded once: forward 6 vec4 loads per 12
// vec4 FMAs per (kd, kh), weight gradient 10 loads per 12 FMAs per 4 outputs, instead of one
// load per FMA.
// Measured on conv3d_fwd/dw512 (lavapipe Mesa 26, docs/kernel-tuning.md): windows of 4
// outputs 19 ms, of 8 outputs 26–32 ms (8 vec4 accumulators and the window spill), scalar lanes
// (one channel each, windows of 8) 25 ms; the vec4 depthwise kernel 26 ms.
//
// conv3d_depthwise_rows_w3 — bindings: 0 params (ConvParams), 1 x, 2 w, 3 b (a dummy when
//   has_bias = 0), 4 y. The workgroup owns `chunk` consecutive output rows (n, od, oh) and walks
//   each in windows of 4 outputs ow0 .. ow0 + 3: x·y fold = ceil(rows / chunk), z = ceil(C / 4·LANES)
//   channel blocks.
// conv3d_backward_weight_depthwise_rows_w3 — bindings: 0 params, 1 x, 2 g, 3 partial. The
//   workgroup owns one (kd, kh) and a chunk of `chunk` output rows (n, od, oh), walked along ow
//   in windows of 4 outputs (6 inputs, 4 gradients); it writes its three taps' sums to
//   partial[chunk, (kd·kH + kh)·3 + kw, c] for conv3d_backward_weight_sum (no atomics,
//   deterministic). x·y fold = kD·kH, z = ceil(C / 4·LANES) · chunks (chunk = z / channel blocks).
// conv3d_depthwise_rows_w3_x16, conv3d_backward_weight_depthwise_rows_w3_x16 — the same on f16
//   activations (x, y, g as four f16 in two u32 words; weights, bias and partial sums f32): loads
//   widen exactly, the sums are the f32 entries' in the same order, and y is rounded once to the
//   nearest f16 (shaders/f16_bits.wgsl, appended by the launcher). For mixed precision, where the
//   PVT MLP keeps its hidden activations in f16 (src/ops/dw_mlp_mixed.rs). No `enable f16`.
// Lanes past C clamp their channel and skip the store; padding taps load a zero through a select
// (no divergent branch: lavapipe runs both sides of a divergent `if`, docs/lavapipe-loads.md).
// Host-checked conditions (src/ops/conv3d_depthwise_rows.rs): depthwise, C % 4 == 0, kW = 3,
// sW = dW = 1.
// Launched by src/ops/conv3d_depthwise_rows.rs.

struct ConvParams {
    n: u32, d: u32, h: u32, w: u32,
    cin: u32, cout: u32, cin_g: u32, cout_g: u32,
    od: u32, oh: u32, ow: u32, has_bias: u32,
    kd: u32, kh: u32, kw: u32, total: u32,
    sd: u32, sh: u32, sw: u32, splits: u32,
    pd: u32, ph: u32, pw: u32, chunk: u32,
    dd: u32, dh: u32, dw: u32, m_total: u32,
}

// Lanes per workgroup: 8 (one 256-bit SIMD row) or 16 (512-bit, the `rows_w16` family), set per
// pipeline by the launcher.
override LANES: u32 = 8u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;

// Weight-gradient bindings (another entry point, so the binding numbers are free).
@group(0) @binding(2) var<storage, read> g4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partial4: array<vec4<f32>>;

// The input row (n, id, ih) as the voxel index of its iw = 0, and whether it lies inside the
// volume (a row in the D/H padding reads zeros).
struct InputRow { base: u32, inside: bool }

fn input_row(n: u32, id: i32, ih: i32) -> InputRow {
    let inside = id >= 0 && id < i32(p.d) && ih >= 0 && ih < i32(p.h);
    let idc = u32(clamp(id, 0, i32(p.d) - 1));
    let ihc = u32(clamp(ih, 0, i32(p.h) - 1));
    return InputRow(((n * p.d + idc) * p.h + ihc) * p.w, inside);
}

// x at (row, iw, channel group cg), zero in the padding.
fn load_x(r: InputRow, iw: i32, cg: u32) -> vec4<f32> {
    let ok = r.inside && iw >= 0 && iw < i32(p.w);
    let iwc = u32(clamp(iw, 0, i32(p.w) - 1));
    return select(vec4<f32>(0.0), x4[(r.base + iwc) * (p.cin / 4u) + cg], ok);
}

@compute @workgroup_size(LANES)
fn conv3d_depthwise_rows_w3(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let c4 = p.cin / 4u;
    let rows = p.n * p.od * p.oh;
    let r0 = (wg.x + wg.y * nwg.x) * p.chunk;
    let r1 = min(r0 + p.chunk, rows);
    let cg = wg.z * LANES + lid;
    let cc = min(cg, c4 - 1u);
    let live = cg < c4;
    let b = bias4[cc] * f32(p.has_bias != 0u);
    for (var row = r0; row < r1; row++) {
        let oh = row % p.oh;
        let od = (row / p.oh) % p.od;
        let n = row / (p.oh * p.od);
        for (var ow0 = 0u; ow0 < p.ow; ow0 += 4u) {
            var a0 = b; var a1 = b; var a2 = b; var a3 = b;
            let iw0 = i32(ow0) - i32(p.pw);
            for (var kd = 0u; kd < p.kd; kd++) {
                let id = i32(od * p.sd + kd * p.dd) - i32(p.pd);
                for (var kh = 0u; kh < p.kh; kh++) {
                    let r = input_row(n, id, i32(oh * p.sh + kh * p.dh) - i32(p.ph));
                    let t = (kd * p.kh + kh) * 3u;
                    let w0 = w4[t * c4 + cc];
                    let w1 = w4[(t + 1u) * c4 + cc];
                    let w2 = w4[(t + 2u) * c4 + cc];
                    // The window: input iw0 + u feeds outputs u (tap 0), u − 1 (tap 1) and
                    // u − 2 (tap 2); each is loaded once and used at once.
                    var xv = load_x(r, iw0, cc);
                    a0 = fma(xv, w0, a0);
                    xv = load_x(r, iw0 + 1, cc);
                    a0 = fma(xv, w1, a0); a1 = fma(xv, w0, a1);
                    xv = load_x(r, iw0 + 2, cc);
                    a0 = fma(xv, w2, a0); a1 = fma(xv, w1, a1); a2 = fma(xv, w0, a2);
                    xv = load_x(r, iw0 + 3, cc);
                    a1 = fma(xv, w2, a1); a2 = fma(xv, w1, a2); a3 = fma(xv, w0, a3);
                    xv = load_x(r, iw0 + 4, cc);
                    a2 = fma(xv, w2, a2); a3 = fma(xv, w1, a3);
                    xv = load_x(r, iw0 + 5, cc);
                    a3 = fma(xv, w2, a3);
                }
            }
            let yb = (row * p.ow + ow0) * c4 + cg;
            if (live && ow0 + 0u < p.ow) { y4[yb] = a0; }
            if (live && ow0 + 1u < p.ow) { y4[yb + c4] = a1; }
            if (live && ow0 + 2u < p.ow) { y4[yb + 2u * c4] = a2; }
            if (live && ow0 + 3u < p.ow) { y4[yb + 3u * c4] = a3; }
        }
    }
}

@compute @workgroup_size(LANES)
fn conv3d_backward_weight_depthwise_rows_w3(@builtin(workgroup_id) wg: vec3<u32>,
                                            @builtin(num_workgroups) nwg: vec3<u32>,
                                            @builtin(local_invocation_index) lid: u32) {
    let pair = wg.x + wg.y * nwg.x;
    if (pair >= p.kd * p.kh) { return; }
    let kd = pair / p.kh;
    let kh = pair % p.kh;
    let c4 = p.cin / 4u;
    let cblocks = (c4 + LANES - 1u) / LANES;
    let chunk_id = wg.z / cblocks;
    let cg = (wg.z % cblocks) * LANES + lid;
    let cc = min(cg, c4 - 1u);
    let rows = p.n * p.od * p.oh;
    let r0 = chunk_id * p.chunk;
    let r1 = min(r0 + p.chunk, rows);
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    for (var row = r0; row < r1; row++) {
        let oh = row % p.oh;
        let od = (row / p.oh) % p.od;
        let n = row / (p.oh * p.od);
        let r = input_row(n, i32(od * p.sd + kd * p.dd) - i32(p.pd),
                          i32(oh * p.sh + kh * p.dh) - i32(p.ph));
        // Windows of 4 outputs ow0 .. ow0 + 3, as in the forward: inputs iw0 + u (u = 0..5)
        // feed taps 0, 1, 2 of outputs u, u − 1, u − 2. Each of s0, s1, s2 takes 4 FMAs per
        // iteration: a SIMD compiler blends every loop-carried value with the loop's execution
        // mask once per iteration, which at one output per iteration cost more than the FMAs.
        // Outputs past the row's end multiply a zero gradient.
        let gb = row * p.ow * c4 + cc;
        for (var ow0 = 0u; ow0 < p.ow; ow0 += 4u) {
            let iw0 = i32(ow0) - i32(p.pw);
            let x0 = load_x(r, iw0, cc);
            let x1 = load_x(r, iw0 + 1, cc);
            let x2 = load_x(r, iw0 + 2, cc);
            let x3 = load_x(r, iw0 + 3, cc);
            let x4v = load_x(r, iw0 + 4, cc);
            let x5 = load_x(r, iw0 + 5, cc);
            let g0 = g4[gb + ow0 * c4];
            let g1 = select(vec4<f32>(0.0), g4[gb + min(ow0 + 1u, p.ow - 1u) * c4], ow0 + 1u < p.ow);
            let g2 = select(vec4<f32>(0.0), g4[gb + min(ow0 + 2u, p.ow - 1u) * c4], ow0 + 2u < p.ow);
            let g3 = select(vec4<f32>(0.0), g4[gb + min(ow0 + 3u, p.ow - 1u) * c4], ow0 + 3u < p.ow);
            s0 = fma(x0, g0, s0); s0 = fma(x1, g1, s0); s0 = fma(x2, g2, s0); s0 = fma(x3, g3, s0);
            s1 = fma(x1, g0, s1); s1 = fma(x2, g1, s1); s1 = fma(x3, g2, s1); s1 = fma(x4v, g3, s1);
            s2 = fma(x2, g0, s2); s2 = fma(x3, g1, s2); s2 = fma(x4v, g2, s2); s2 = fma(x5, g3, s2);
        }
    }
    // partial[chunk, tap, c] in vec4 units: (chunk·|gw| + tap·C) / 4 + cg
    let base = chunk_id * (p.total / 4u) + (kd * p.kh + kh) * 3u * c4 + cg;
    if (cg < c4) {
        partial4[base] = s0;
        partial4[base + c4] = s1;
        partial4[base + 2u * c4] = s2;
    }
}

// ---- f16 activations --------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> xh: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read_write> yh: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> gh: array<vec2<u32>>;

// f16 x at (row, iw, channel group cg), widened; zero in the padding.
fn load_xh(r: InputRow, iw: i32, cg: u32) -> vec4<f32> {
    let ok = r.inside && iw >= 0 && iw < i32(p.w);
    let iwc = u32(clamp(iw, 0, i32(p.w) - 1));
    return select(vec4<f32>(0.0), f32x4_from_f16(xh[(r.base + iwc) * (p.cin / 4u) + cg]), ok);
}

@compute @workgroup_size(LANES)
fn conv3d_depthwise_rows_w3_x16(@builtin(workgroup_id) wg: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let c4 = p.cin / 4u;
    let rows = p.n * p.od * p.oh;
    let r0 = (wg.x + wg.y * nwg.x) * p.chunk;
    let r1 = min(r0 + p.chunk, rows);
    let cg = wg.z * LANES + lid;
    let cc = min(cg, c4 - 1u);
    let live = cg < c4;
    let b = bias4[cc] * f32(p.has_bias != 0u);
    for (var row = r0; row < r1; row++) {
        let oh = row % p.oh;
        let od = (row / p.oh) % p.od;
        let n = row / (p.oh * p.od);
        for (var ow0 = 0u; ow0 < p.ow; ow0 += 4u) {
            var a0 = b; var a1 = b; var a2 = b; var a3 = b;
            let iw0 = i32(ow0) - i32(p.pw);
            for (var kd = 0u; kd < p.kd; kd++) {
                let id = i32(od * p.sd + kd * p.dd) - i32(p.pd);
                for (var kh = 0u; kh < p.kh; kh++) {
                    let r = input_row(n, id, i32(oh * p.sh + kh * p.dh) - i32(p.ph));
                    let t = (kd * p.kh + kh) * 3u;
                    let w0 = w4[t * c4 + cc];
                    let w1 = w4[(t + 1u) * c4 + cc];
                    let w2 = w4[(t + 2u) * c4 + cc];
                    var xv = load_xh(r, iw0, cc);
                    a0 = fma(xv, w0, a0);
                    xv = load_xh(r, iw0 + 1, cc);
                    a0 = fma(xv, w1, a0); a1 = fma(xv, w0, a1);
                    xv = load_xh(r, iw0 + 2, cc);
                    a0 = fma(xv, w2, a0); a1 = fma(xv, w1, a1); a2 = fma(xv, w0, a2);
                    xv = load_xh(r, iw0 + 3, cc);
                    a1 = fma(xv, w2, a1); a2 = fma(xv, w1, a2); a3 = fma(xv, w0, a3);
                    xv = load_xh(r, iw0 + 4, cc);
                    a2 = fma(xv, w2, a2); a3 = fma(xv, w1, a3);
                    xv = load_xh(r, iw0 + 5, cc);
                    a3 = fma(xv, w2, a3);
                }
            }
            let yb = (row * p.ow + ow0) * c4 + cg;
            if (live && ow0 + 0u < p.ow) { yh[yb] = f16x4_from_f32(a0); }
            if (live && ow0 + 1u < p.ow) { yh[yb + c4] = f16x4_from_f32(a1); }
            if (live && ow0 + 2u < p.ow) { yh[yb + 2u * c4] = f16x4_from_f32(a2); }
            if (live && ow0 + 3u < p.ow) { yh[yb + 3u * c4] = f16x4_from_f32(a3); }
        }
    }
}

@compute @workgroup_size(LANES)
fn conv3d_backward_weight_depthwise_rows_w3_x16(@builtin(workgroup_id) wg: vec3<u32>,
                                                @builtin(num_workgroups) nwg: vec3<u32>,
                                                @builtin(local_invocation_index) lid: u32) {
    let pair = wg.x + wg.y * nwg.x;
    if (pair >= p.kd * p.kh) { return; }
    let kd = pair / p.kh;
    let kh = pair % p.kh;
    let c4 = p.cin / 4u;
    let cblocks = (c4 + LANES - 1u) / LANES;
    let chunk_id = wg.z / cblocks;
    let cg = (wg.z % cblocks) * LANES + lid;
    let cc = min(cg, c4 - 1u);
    let rows = p.n * p.od * p.oh;
    let r0 = chunk_id * p.chunk;
    let r1 = min(r0 + p.chunk, rows);
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    for (var row = r0; row < r1; row++) {
        let oh = row % p.oh;
        let od = (row / p.oh) % p.od;
        let n = row / (p.oh * p.od);
        let r = input_row(n, i32(od * p.sd + kd * p.dd) - i32(p.pd),
                          i32(oh * p.sh + kh * p.dh) - i32(p.ph));
        // As conv3d_backward_weight_depthwise_rows_w3, on widened f16 loads.
        let gb = row * p.ow * c4 + cc;
        for (var ow0 = 0u; ow0 < p.ow; ow0 += 4u) {
            let iw0 = i32(ow0) - i32(p.pw);
            let x0 = load_xh(r, iw0, cc);
            let x1 = load_xh(r, iw0 + 1, cc);
            let x2 = load_xh(r, iw0 + 2, cc);
            let x3 = load_xh(r, iw0 + 3, cc);
            let x4v = load_xh(r, iw0 + 4, cc);
            let x5 = load_xh(r, iw0 + 5, cc);
            let g0 = f32x4_from_f16(gh[gb + ow0 * c4]);
            let g1 = select(vec4<f32>(0.0), f32x4_from_f16(gh[gb + min(ow0 + 1u, p.ow - 1u) * c4]), ow0 + 1u < p.ow);
            let g2 = select(vec4<f32>(0.0), f32x4_from_f16(gh[gb + min(ow0 + 2u, p.ow - 1u) * c4]), ow0 + 2u < p.ow);
            let g3 = select(vec4<f32>(0.0), f32x4_from_f16(gh[gb + min(ow0 + 3u, p.ow - 1u) * c4]), ow0 + 3u < p.ow);
            s0 = fma(x0, g0, s0); s0 = fma(x1, g1, s0); s0 = fma(x2, g2, s0); s0 = fma(x3, g3, s0);
            s1 = fma(x1, g0, s1); s1 = fma(x2, g1, s1); s1 = fma(x3, g2, s1); s1 = fma(x4v, g3, s1);
            s2 = fma(x2, g0, s2); s2 = fma(x3, g1, s2); s2 = fma(x4v, g2, s2); s2 = fma(x5, g3, s2);
        }
    }
    let base = chunk_id * (p.total / 4u) + (kd * p.kh + kh) * 3u * c4 + cg;
    if (cg < c4) {
        partial4[base] = s0;
        partial4[base + c4] = s1;
        partial4[base + 2u * c4] = s2;
    }
}
