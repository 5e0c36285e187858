// Element-type conversion between f32 and IEEE binary16 (f16), and the sum of two f16 tensors,
// on bit patterns.
//
// f16 layout: two elements per u32 word, element 2w in the low 16 bits of word w and element
// 2w + 1 in the high 16 bits (the memory of array<f16> on a little-endian device, which is what
// the f16 matmul reads); when the count is odd the last word's high half is 0.
//
// Why bits and not pack2x16float / f16(x): WGSL leaves the result of those undefined outside the
// f16 range, lets the implementation pick either neighbour when rounding, and a device may flush
// subnormals. Here f32 → f16 is round to nearest, ties to even, exactly:
//   |x| ≥ 65520 (= 65504 + half an ulp) → ±inf;  NaN → NaN (quiet, top payload bits kept);
//   2^-25 < |x| < 2^-14 → the f16 subnormal m·2^-24 with m rounded;  |x| ≤ 2^-25 → ±0,
// the algorithm of the CPU twin (the `half` crate's f16::from_f32, src/reference/cast.rs), so a
// cast gives the same bits on every device. f16 → f32 is exact (every f16 is an f32). No
// `enable f16`: the words are u32, so these kernels run on every adapter, with or without
// SHADER_F16.
//
// cast_f32_to_f16: dst[w] = h(src[2w]) | h(src[2w+1]) << 16            w < ⌈n/2⌉
// cast_f16_to_f32: dst[2w] = f(lo(src[w])), dst[2w+1] = f(hi(src[w]))  (2w+1 < n)
// add_f16:         dst = h(f(a) + f(b)) per element: the sum of two f16 gradients computed in
//                  f32 and rounded once (autograd's Gradients store, fan-out of an f16 tensor).
//
// Bindings: 0 params (uniform CastParams: n = element count), then the inputs (read), then the
// output (read_write), all viewed as array<u32>. Dispatch: 1-D over WORDS (⌈n/2⌉; two elements
// per invocation, so no two invocations write one word), 256 per workgroup, folded into (x, y):
// w = (wg.x + wg.y * nwg.x) * 256 + local index.
// Launched by src/tensor/cast.rs.

struct CastParams {
    n: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// f32_to_f16_bits and f16_to_f32_bits: shaders/f16_bits.wgsl (appended by the launcher).

@group(0) @binding(0) var<uniform> p: CastParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn cast_f32_to_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = linear_id(wg, nwg, lid);
    if (w >= (p.n + 1u) / 2u) { return; }
    let lo = f32_to_f16_bits(src[2u * w]);
    var hi = 0u;
    if (2u * w + 1u < p.n) { hi = f32_to_f16_bits(src[2u * w + 1u]); }
    dst[w] = lo | (hi << 16u);
}

@compute @workgroup_size(256)
fn cast_f16_to_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = linear_id(wg, nwg, lid);
    if (w >= (p.n + 1u) / 2u) { return; }
    let word = src[w];
    dst[2u * w] = f16_to_f32_bits(word & 0xffffu);
    if (2u * w + 1u < p.n) { dst[2u * w + 1u] = f16_to_f32_bits(word >> 16u); }
}

// The *_4 entries: four elements per invocation when n % 4 == 0, one vec4 load of f32 bits and
// one vec2 store of f16 words (or the reverse): on lavapipe each per-invocation load or store is
// a per-lane sequence, so fewer, wider ones are what count. Dispatch over n/4.
@group(0) @binding(1) var<storage, read> src_f32x4: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst_f16x4: array<vec2<u32>>;

@compute @workgroup_size(256)
fn cast_f32_to_f16_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let q = linear_id(wg, nwg, lid);
    if (q >= p.n / 4u) { return; }
    let x = src_f32x4[q];
    dst_f16x4[q] = vec2<u32>(f32_to_f16_bits(x.x) | (f32_to_f16_bits(x.y) << 16u),
                             f32_to_f16_bits(x.z) | (f32_to_f16_bits(x.w) << 16u));
}

@group(0) @binding(1) var<storage, read> src_f16x4: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> dst_f32x4: array<vec4<u32>>;

@compute @workgroup_size(256)
fn cast_f16_to_f32_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let q = linear_id(wg, nwg, lid);
    if (q >= p.n / 4u) { return; }
    let w = src_f16x4[q];
    dst_f32x4[q] = vec4<u32>(f16_to_f32_bits(w.x & 0xffffu), f16_to_f32_bits(w.x >> 16u),
                             f16_to_f32_bits(w.y & 0xffffu), f16_to_f32_bits(w.y >> 16u));
}

@group(0) @binding(0) var<uniform> ap: CastParams;
@group(0) @binding(1) var<storage, read> add_a: array<u32>;
@group(0) @binding(2) var<storage, read> add_b: array<u32>;
@group(0) @binding(3) var<storage, read_write> add_out: array<u32>;

// One f16 element of each operand (half = 0 low, 16 high), summed in f32, rounded once.
fn add_half(wa: u32, wb: u32, half: u32) -> u32 {
    let x = bitcast<f32>(f16_to_f32_bits((wa >> half) & 0xffffu));
    let y = bitcast<f32>(f16_to_f32_bits((wb >> half) & 0xffffu));
    return f32_to_f16_bits(bitcast<u32>(x + y));
}

@compute @workgroup_size(256)
fn add_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = linear_id(wg, nwg, lid);
    if (w >= (ap.n + 1u) / 2u) { return; }
    let wa = add_a[w];
    let wb = add_b[w];
    var hi = 0u;
    if (2u * w + 1u < ap.n) { hi = add_half(wa, wb, 16u); }
    add_out[w] = add_half(wa, wb, 0u) | (hi << 16u);
}

// The *_8 entries: eight elements per invocation when n % 8 == 0, two vec4 loads of f32 bits
// and one vec4 store of f16 words (or the reverse). On lavapipe the four-element cast (a vec2
// store or load per invocation) ran as long as `add4`, which moves twice the bytes; eight
// elements per invocation took 0.6× its time for the same count (docs/kernel-tuning.md).
// Dispatch over n/8.
@group(0) @binding(1) var<storage, read> src_f32x8: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst_f16x8: array<vec4<u32>>;

@compute @workgroup_size(256)
fn cast_f32_to_f16_8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let q = linear_id(wg, nwg, lid);
    if (q >= p.n / 8u) { return; }
    let x = src_f32x8[2u * q];
    let y = src_f32x8[2u * q + 1u];
    dst_f16x8[q] = vec4<u32>(f32_to_f16_bits(x.x) | (f32_to_f16_bits(x.y) << 16u),
                             f32_to_f16_bits(x.z) | (f32_to_f16_bits(x.w) << 16u),
                             f32_to_f16_bits(y.x) | (f32_to_f16_bits(y.y) << 16u),
                             f32_to_f16_bits(y.z) | (f32_to_f16_bits(y.w) << 16u));
}

@group(0) @binding(1) var<storage, read> src_f16x8: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst_f32x8: array<vec4<u32>>;

@compute @workgroup_size(256)
fn cast_f16_to_f32_8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let q = linear_id(wg, nwg, lid);
    if (q >= p.n / 8u) { return; }
    let w = src_f16x8[q];
    dst_f32x8[2u * q] = vec4<u32>(f16_to_f32_bits(w.x & 0xffffu), f16_to_f32_bits(w.x >> 16u),
                                  f16_to_f32_bits(w.y & 0xffffu), f16_to_f32_bits(w.y >> 16u));
    dst_f32x8[2u * q + 1u] = vec4<u32>(f16_to_f32_bits(w.z & 0xffffu), f16_to_f32_bits(w.z >> 16u),
                                       f16_to_f32_bits(w.w & 0xffffu), f16_to_f32_bits(w.w >> 16u));
}
