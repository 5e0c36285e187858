enable f16;

// Unary ops on f16 storage (mixed precision), the math in f32 (shaders/unary_math.wgsl, appended
// to this file's source by the launcher, src/ops/unary_f16.rs):
//
// unary_x16:           out[i] = f16(u(f32(x[i]); alpha))    x, out f16
// unary_backward_x16:  gx[i] = g[i] * u'(f32(x[i]); alpha)   x f16 (an activation kept in f16
//                      for backward), g and gx f32: the backward reads the kept copy as it is,
//                      without an f32 widening of it in memory.
// *4 entries: the same on four consecutive elements per invocation (n % 4 == 0).
//
// f16 → f32 is exact; f32 → f16 rounds to nearest (the device's conversion; a result beyond
// f16's range is left to the device by WGSL, where shaders/cast.wgsl gives ±inf — GELU, the op
// the library runs here, never exceeds its f16 input). Op codes at
// `apply_unary`. Bindings: 0 params (uniform UnaryParams), then the inputs (read), then the
// output (read_write). Dispatch: 1-D, 256 per workgroup, folded into (x, y) as in
// shaders/elementwise.wgsl.

@group(0) @binding(0) var<uniform> hp: UnaryParams;
@group(0) @binding(1) var<storage, read> h_x: array<f16>;
@group(0) @binding(2) var<storage, read_write> h_out: array<f16>;

@compute @workgroup_size(256)
fn unary_x16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n) { return; }
    h_out[i] = f16(apply_unary(f32(h_x[i]), hp.op, hp.alpha));
}

@group(0) @binding(1) var<storage, read> h4_x: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read_write> h4_out: array<vec4<f16>>;

@compute @workgroup_size(256)
fn unary_x16_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n / 4u) { return; }
    let x = vec4<f32>(h4_x[i]);
    h4_out[i] = vec4<f16>(vec4<f32>(apply_unary(x.x, hp.op, hp.alpha),
                                    apply_unary(x.y, hp.op, hp.alpha),
                                    apply_unary(x.z, hp.op, hp.alpha),
                                    apply_unary(x.w, hp.op, hp.alpha)));
}

@group(0) @binding(1) var<storage, read> hb_x: array<f16>;
@group(0) @binding(2) var<storage, read> hb_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> hb_out: array<f32>;

@compute @workgroup_size(256)
fn unary_backward_x16(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n) { return; }
    hb_out[i] = hb_g[i] * unary_derivative(f32(hb_x[i]), hp.op, hp.alpha);
}

@group(0) @binding(1) var<storage, read> hb4_x: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> hb4_g: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> hb4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn unary_backward_x16_4(@builtin(workgroup_id) wg: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n / 4u) { return; }
    let x = vec4<f32>(hb4_x[i]);
    let d = vec4<f32>(unary_derivative(x.x, hp.op, hp.alpha), unary_derivative(x.y, hp.op, hp.alpha),
                      unary_derivative(x.z, hp.op, hp.alpha), unary_derivative(x.w, hp.op, hp.alpha));
    hb4_out[i] = hb4_g[i] * d;
}

// unary_backward_x16_in_place(4): the same with the gradient overwritten by the result
// (g read_write at binding 2): for a caller that owns g and needs it no longer.
@group(0) @binding(1) var<storage, read> hi_x: array<f16>;
@group(0) @binding(2) var<storage, read_write> hi_g: array<f32>;

@compute @workgroup_size(256)
fn unary_backward_x16_in_place(@builtin(workgroup_id) wg: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n) { return; }
    hi_g[i] = hi_g[i] * unary_derivative(f32(hi_x[i]), hp.op, hp.alpha);
}

@group(0) @binding(1) var<storage, read> hi4_x: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read_write> hi4_g: array<vec4<f32>>;

@compute @workgroup_size(256)
fn unary_backward_x16_in_place4(@builtin(workgroup_id) wg: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n / 4u) { return; }
    let x = vec4<f32>(hi4_x[i]);
    let d = vec4<f32>(unary_derivative(x.x, hp.op, hp.alpha), unary_derivative(x.y, hp.op, hp.alpha),
                      unary_derivative(x.z, hp.op, hp.alpha), unary_derivative(x.w, hp.op, hp.alpha));
    hi4_g[i] = hi4_g[i] * d;
}

// unary_x16_in_place(4): unary_x16(_4) with x overwritten by the result (x read_write at binding
// 1): for a caller that owns x and needs it no longer (the f16 MLP's GELU output made from its
// input, src/ops/dw_mlp_mixed.rs).
@group(0) @binding(1) var<storage, read_write> hf_x: array<f16>;

@compute @workgroup_size(256)
fn unary_x16_in_place(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n) { return; }
    hf_x[i] = f16(apply_unary(f32(hf_x[i]), hp.op, hp.alpha));
}

@group(0) @binding(1) var<storage, read_write> hf4_x: array<vec4<f16>>;

@compute @workgroup_size(256)
fn unary_x16_in_place4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= hp.n / 4u) { return; }
    let x = vec4<f32>(hf4_x[i]);
    hf4_x[i] = vec4<f16>(vec4<f32>(apply_unary(x.x, hp.op, hp.alpha),
                                   apply_unary(x.y, hp.op, hp.alpha),
                                   apply_unary(x.z, hp.op, hp.alpha),
                                   apply_unary(x.w, hp.op, hp.alpha)));
}
