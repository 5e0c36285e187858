// conv3d backward to the input (gather form: one invocation per input-gradient element, no atomics).
//
//   gx[n,i0,i1,i2,ci] = Σ_{kd,kh,kw} Σ_{co in group(ci)} g[n,o0,o1,o2,co] · w[kd,kh,kw,ci mod cin_g,co]
//   where o_a = (i_a + p_a − k_a·dil_a) / s_a when that division is exact and 0 ≤ o_a < O_a.
//
// Layouts: g [N, Do, Ho, Wo, Cout], w [kD, kH, kW, Cin/groups, Cout], gx [N, D, H, W, Cin].
// conv3d_backward_input_naive bindings: 0 params, 1 g, 2 w, 3 gx. One invocation per gx element,
//   64 per workgroup, folded 1-D grid. Any stride; the oracle and the path for stride > 1.
// conv3d_flip_weight bindings: 0 params, 1 w, 2 wf. For stride 1 the input gradient is a plain
//   conv of g with the flipped, transposed kernel, run by the fast forward kernels:
//   wf[kD−1−kd, kH−1−kh, kW−1−kw, col, grp·cin_g + cil] = w[kd,kh,kw,cil,grp·cout_g + col],
//   wf layout [kD, kH, kW, Cout/groups, Cin]; padding becomes dil·(k−1) − p. One invocation per
//   weight element: x = ceil(Cout / 64) blocks of output channels, (y, z) folded over the
//   kD·kH·kW·Cin_g rows (tap, cil) of w, so each lane reads consecutive weights and divides once
//   (its channel into group and column); the row's divisions are workgroup-uniform. A per-lane
//   integer division is a scalarised sequence on CPU adapters: the per-element form (five of
//   them) took 48 ms for the 3³ 320 → 512 weight on lavapipe.
// Launched by src/ops/conv3d.rs (backward_input_raw).
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
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(64)
fn conv3d_backward_input_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.total) { return; }
    let ci = i % p.cin;
    var r = i / p.cin;
    let iw = r % p.w; r = r / p.w;
    let ih = r % p.h; r = r / p.h;
    let id = r % p.d;
    let b = r / p.d;
    let grp = ci / p.cin_g;
    let cil = ci % p.cin_g;
    var acc = 0.0;
    for (var kd = 0u; kd < p.kd; kd++) {
        let td = i32(id + p.pd) - i32(kd * p.dd);
        if (td < 0 || u32(td) % p.sd != 0u || u32(td) / p.sd >= p.od) { continue; }
        let od = u32(td) / p.sd;
        for (var kh = 0u; kh < p.kh; kh++) {
            let th = i32(ih + p.ph) - i32(kh * p.dh);
            if (th < 0 || u32(th) % p.sh != 0u || u32(th) / p.sh >= p.oh) { continue; }
            let oh = u32(th) / p.sh;
            for (var kw = 0u; kw < p.kw; kw++) {
                let tw = i32(iw + p.pw) - i32(kw * p.dw);
                if (tw < 0 || u32(tw) % p.sw != 0u || u32(tw) / p.sw >= p.ow) { continue; }
                let ow = u32(tw) / p.sw;
                let gb = (((b * p.od + od) * p.oh + oh) * p.ow + ow) * p.cout + grp * p.cout_g;
                let wb = (((kd * p.kh + kh) * p.kw + kw) * p.cin_g + cil) * p.cout + grp * p.cout_g;
                for (var c = 0u; c < p.cout_g; c++) {
                    acc += g[gb + c] * wt[wb + c];
                }
            }
        }
    }
    gx[i] = acc;
}

@group(0) @binding(2) var<storage, read_write> wf: array<f32>;

@compute @workgroup_size(64)
fn conv3d_flip_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    // Lanes over the output channels co; the workgroup's folded (y, z) names the weight row
    // r = t·cin_g + cil of tap t = (kd·kH + kh)·kW + kw.
    let r = wg.y + wg.z * nwg.y;
    let co = wg.x * 64u + lid;
    if (r >= p.kd * p.kh * p.kw * p.cin_g || co >= p.cout) { return; }
    let cil = r % p.cin_g;
    let t = r / p.cin_g;
    let kw = t % p.kw;
    let kh = (t / p.kw) % p.kh;
    let kd = t / (p.kw * p.kh);
    let tap = ((p.kd - 1u - kd) * p.kh + (p.kh - 1u - kh)) * p.kw + (p.kw - 1u - kw);
    let grp = co / p.cout_g;
    let col = co - grp * p.cout_g;
    wf[(tap * p.cout_g + col) * p.cin + grp * p.cin_g + cil] = g[r * p.cout + co];
}

// conv3d_flip_weight4: the same flip on 4 × 4 blocks, when Cin/groups and Cout/groups are
//   multiples of 4 (bindings 0 params, 1 w as vec4, 2 wf as vec4). Lanes over vec4 groups of
//   output channels (x), the folded (y, z) over blocks of 4 weight rows (tap, 4 input channels of
//   a group). Each lane loads its 4 rows' vec4 (4 channels co..co+3, contiguous across lanes),
//   transposes the 4 × 4 block in registers and stores 4 vec4 along the input channels of wf's
//   rows (tap', co + j): 4 per-lane stores for 16 values where the scalar form has 16 scattered
//   ones, which is what a store at a per-lane address costs on a CPU adapter. The 4 channels of
//   a group of 4 lie in one conv group (Cout/groups % 4 = 0), so they share grp.
@group(0) @binding(1) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> wf4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn conv3d_flip_weight4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let cin_g4 = p.cin_g / 4u;
    let cout4 = p.cout / 4u;
    let r4 = wg.y + wg.z * nwg.y;
    let c4 = wg.x * 64u + lid;
    if (r4 >= p.kd * p.kh * p.kw * cin_g4 || c4 >= cout4) { return; }
    let cil = (r4 % cin_g4) * 4u;
    let t = r4 / cin_g4;
    let kw = t % p.kw;
    let kh = (t / p.kw) % p.kh;
    let kd = t / (p.kw * p.kh);
    let tap = ((p.kd - 1u - kd) * p.kh + (p.kh - 1u - kh)) * p.kw + (p.kw - 1u - kw);
    // w rows (t, cil + i), i < 4: vec4 of channels 4·c4 .. 4·c4 + 3.
    let src = (t * p.cin_g + cil) * cout4 + c4;
    let v0 = w4[src];
    let v1 = w4[src + cout4];
    let v2 = w4[src + 2u * cout4];
    let v3 = w4[src + 3u * cout4];
    let co = c4 * 4u;
    let grp = co / p.cout_g;
    let col = co - grp * p.cout_g;
    let cin4 = p.cin / 4u;
    // wf rows (tap, col + j), j < 4: vec4 of input channels grp·cin_g + cil .. + 3.
    let dst = ((tap * p.cout_g + col) * p.cin + grp * p.cin_g + cil) / 4u;
    wf4[dst] = vec4<f32>(v0.x, v1.x, v2.x, v3.x);
    wf4[dst + cin4] = vec4<f32>(v0.y, v1.y, v2.y, v3.y);
    wf4[dst + 2u * cin4] = vec4<f32>(v0.z, v1.z, v2.z, v3.z);
    wf4[dst + 3u * cin4] = vec4<f32>(v0.w, v1.w, v2.w, v3.w);
}
