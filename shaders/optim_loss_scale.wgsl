// Dynamic loss scaling: unscale one gradient in place and flag non-finite values, in one pass
// (torch `_amp_foreach_non_finite_check_and_unscale_`).
//
// unscale_check:  g = grad[i];  grad[i] = g * inv_scale;
//                 found_inf[0] = 1.0 if g or g * inv_scale is inf or NaN (else left as it is).
//
// inv_scale = 1 / scale is computed on the host in f64 and rounded to f32, as torch does ("FP32
// division can be imprecise"), so a power-of-two scale unscales exactly. torch flags only a
// non-finite input; the product is checked too, so an unscaled gradient that overflows (a scale
// below 1 after many backoffs) skips the step instead of reaching the weights as inf.
//
// Non-finite is tested on the bits (exponent all ones): WGSL lets implementations assume that no
// NaN or inf occurs in float arithmetic, so `x != x` may be folded away; a bit test may not.
// The flag is written with `atomicOr` of the bits of 1.0f (0x3f800000): concurrent writers all
// leave the same value, a race-free store of 1.0, and readers (the optimizer kernels, the host)
// see the f32 1.0. The flag is a fresh zeroed buffer per step (src/optim/loss_scale.rs).
//
// Layouts: grad contiguous f32, flattened; found_inf one f32 word. Bindings: 0 params (uniform);
// 1 grad (read_write, in place); 2 found_inf (read_write, atomic). Dispatch: 1-D over elements,
// 256 per workgroup, folded into (x, y): i = (wg.x + wg.y * nwg.x) * 256 + local index.
// Launched by src/optim/loss_scale.rs (LossScaler::unscale_and_check).

struct UnscaleParams {
    n: u32, inv_scale: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: UnscaleParams;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> found_inf: array<atomic<u32>>;

const EXPONENT: u32 = 0x7f800000u;
const ONE_BITS: u32 = 0x3f800000u;

fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & EXPONENT) == EXPONENT;
}

@compute @workgroup_size(256)
fn unscale_check(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.n) { return; }
    let g = grad[i];
    let u = g * p.inv_scale;
    grad[i] = u;
    if (non_finite(g) || non_finite(u)) {
        atomicOr(&found_inf[0], ONE_BITS);
    }
}
