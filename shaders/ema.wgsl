// Exponential moving average of one tensor into another, fused and in place (the DINO / CADS
// teacher update; `param_k.mul_(m).add_((1 - m) * param_q)` in the authors' code):
//
//   dst[i] = momentum * dst[i] + one_minus_momentum * src[i]       for i < n   (dst = target)
//
// `momentum` and `one_minus_momentum` are both computed on the host in f64 and rounded to f32
// (as torch rounds the Python scalar `1 - m`), so momentum = 1 leaves the target bit-identical
// (1·t + 0·s = t) and momentum = 0 writes the source exactly (0·t + 1·s = s) for finite values.
// One read of each element and one write: nothing is allocated, no tape node is recorded.
// Layouts: contiguous f32, any shape, flattened; target and source have the same shape and
// never share a buffer (checked by the launcher).
// Bindings: 0 params (uniform EmaParams); 1 src, the source (read, n); 2 dst, the target
// (read_write, n; `target` is a WGSL reserved word).
// Dispatch: 1-D over elements, 64 per workgroup, folded into (x, y) past 65,535 workgroups:
// i = (wg.x + wg.y * nwg.x) * 64 + local index.
// ema_update_4: the same update on four elements per invocation (n % 4 == 0; vec4 views of the
// same bindings, i < n / 4), each component's arithmetic the scalar entry's: a quarter of the
// invocations and of the per-lane loads, which is what costs on a CPU adapter (as the optimizers'
// `_4` entries).
// Launched by src/ops/ema.rs (ema_update_), one launch per tensor pair.

struct EmaParams {
    n: u32, _pad0: u32, momentum: f32, one_minus_momentum: f32,
}

@group(0) @binding(0) var<uniform> p: EmaParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn ema_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.n) { return; }
    dst[i] = p.momentum * dst[i] + p.one_minus_momentum * src[i];
}

@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn ema_update_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.n / 4u) { return; }
    dst4[i] = p.momentum * dst4[i] + p.one_minus_momentum * src4[i];
}
