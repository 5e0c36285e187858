// Sum over a set of axes (the reduced axes keep extent 1 in the output).
//
//   out[o] = scale * Σ_k in[ Σ_d o_d * kept_stride_d + Σ_d k_d * red_stride_d ]
//
// where o ranges over the kept shape (kept_shape*, reduced axes size 1) and k over the reduced
// shape (red_shape*, kept axes size 1), both rank 6 after right-aligning. `scale` is 1 for a sum
// and 1/R for a mean. Used for `sum`, `mean` and for reducing broadcast gradients back to an
// operand's shape.
//
// Split reductions: when there are few outputs and a long reduction (a loss's sum over all
// elements), one workgroup per output would leave the device idle, so the k range is cut into
// S chunks of `chunk` and the kernel writes partial sums dst[s · n_out + o] over
// k ∈ [s·chunk, min((s+1)·chunk, n_red)); the launcher then sums the S partials with the same
// kernel (two passes, deterministic, no atomics). Unsplit, chunk = n_red and S = 1.
//
// sum_axes_serial: one invocation per output, a plain loop over its n_red elements, for short
// reductions into many outputs (summing split partials, broadcast-gradient reductions over a
// small axis), where a 64-lane workgroup with a barrier tree per output would mostly idle.
// Dispatch: 1-D over outputs, 64 per workgroup, folded grid.
//
// Layout: contiguous row-major f32. Bindings: 0 params, 1 input (read), 2 output (read_write);
// sum_rows_halves also 3 (its second output).
// Dispatch: one workgroup of 64 invocations per (output element, chunk) (folded 1-D grid over
// n_out · S, outputs fastest); the invocations stride over k and combine with a shared-memory
// tree.
// Launched by src/ops/reduce.rs (sum_axes).

struct ReduceParams {
    n_out: u32, n_red: u32, scale: f32, chunk: u32,
    kept_shape0: u32, kept_shape1: u32, kept_shape2: u32, kept_shape3: u32, kept_shape4: u32, kept_shape5: u32,
    kept_stride0: u32, kept_stride1: u32, kept_stride2: u32, kept_stride3: u32, kept_stride4: u32, kept_stride5: u32,
    red_shape0: u32, red_shape1: u32, red_shape2: u32, red_shape3: u32, red_shape4: u32, red_shape5: u32,
    red_stride0: u32, red_stride1: u32, red_stride2: u32, red_stride3: u32, red_stride4: u32, red_stride5: u32,
}

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn reduced_offset(k: u32) -> u32 {
    var r = k;
    var off = 0u;
    var c = r % p.red_shape5; r = r / p.red_shape5; off += c * p.red_stride5;
    c = r % p.red_shape4; r = r / p.red_shape4; off += c * p.red_stride4;
    c = r % p.red_shape3; r = r / p.red_shape3; off += c * p.red_stride3;
    c = r % p.red_shape2; r = r / p.red_shape2; off += c * p.red_stride2;
    c = r % p.red_shape1; r = r / p.red_shape1; off += c * p.red_stride1;
    off += r * p.red_stride0;
    return off;
}

fn kept_offset(o: u32) -> u32 {
    var r = o;
    var off = 0u;
    var c = r % p.kept_shape5; r = r / p.kept_shape5; off += c * p.kept_stride5;
    c = r % p.kept_shape4; r = r / p.kept_shape4; off += c * p.kept_stride4;
    c = r % p.kept_shape3; r = r / p.kept_shape3; off += c * p.kept_stride3;
    c = r % p.kept_shape2; r = r / p.kept_shape2; off += c * p.kept_stride2;
    c = r % p.kept_shape1; r = r / p.kept_shape1; off += c * p.kept_stride1;
    off += r * p.kept_stride0;
    return off;
}

@compute @workgroup_size(64)
fn sum_axes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let lin = wg.x + wg.y * nwg.x;
    let o = lin % p.n_out;
    let s = lin / p.n_out;
    let k0 = s * p.chunk;
    // Whole workgroups share `o` and `s`, so this early exit never splits a barrier.
    if (k0 >= p.n_red) { return; }
    let k_end = min(k0 + p.chunk, p.n_red);
    let base = kept_offset(o);
    // Four independent accumulators keep the adds from serialising on one register.
    var acc0 = 0.0;
    var acc1 = 0.0;
    var acc2 = 0.0;
    var acc3 = 0.0;
    var k = k0 + lid;
    loop {
        if (k + 192u >= k_end) { break; }
        acc0 += src[base + reduced_offset(k)];
        acc1 += src[base + reduced_offset(k + 64u)];
        acc2 += src[base + reduced_offset(k + 128u)];
        acc3 += src[base + reduced_offset(k + 192u)];
        k += 256u;
    }
    loop {
        if (k >= k_end) { break; }
        acc0 += src[base + reduced_offset(k)];
        k += 64u;
    }
    partial[lid] = (acc0 + acc1) + (acc2 + acc3);
    workgroupBarrier();
    var width = 32u;
    loop {
        if (width == 0u) { break; }
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
        width = width / 2u;
    }
    if (lid == 0u) {
        dst[s * p.n_out + o] = partial[0] * p.scale;
    }
}

// sum_rows: src viewed as [R = n_red, C = n_out] (the reduced axes lead and the kept ones trail):
// lanes over columns c (consecutive addresses, no per-element index arithmetic), workgroup y =
// split s of `chunk` rows summed in order: dst[s·C + c] = scale · Σ_{r in split s} src[r·C + c].
// Grid (ceil(C / 64), splits, 1). Launched by src/ops/reduce.rs (sum_rows).
@compute @workgroup_size(64)
fn sum_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.x * 64u + lid;
    if (c >= p.n_out) { return; }
    let r0 = wg.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.n_red);
    var acc = 0.0;
    for (var r = r0; r < r1; r++) {
        acc += src[r * p.n_out + c];
    }
    dst[wg.y * p.n_out + c] = acc * p.scale;
}

// sum_rows4, sum_rows_halves4: sum_rows and sum_rows_halves on vec4s of columns (n_out % 4 == 0,
// and n_out / 2 % 4 == 0 for the halves; the host checks): a lane sums four columns, one vec4
// load per row in place of four (each a per-lane sequence on lavapipe). x = ceil(n_out / 256).
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst4_hi: array<vec4<f32>>;

@compute @workgroup_size(64)
fn sum_rows4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c4 = wg.x * 64u + lid;
    let cols4 = p.n_out / 4u;
    if (c4 >= cols4) { return; }
    let r0 = wg.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.n_red);
    var acc = vec4<f32>(0.0);
    for (var r = r0; r < r1; r++) {
        acc += src4[r * cols4 + c4];
    }
    dst4[wg.y * cols4 + c4] = acc * p.scale;
}

@compute @workgroup_size(64)
fn sum_rows_halves4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c4 = wg.x * 64u + lid;
    let cols4 = p.n_out / 4u;
    if (c4 >= cols4) { return; }
    var acc = vec4<f32>(0.0);
    for (var r = 0u; r < p.n_red; r++) {
        acc += src4[r * cols4 + c4];
    }
    let half4 = cols4 / 2u;
    if (c4 < half4) {
        dst4[c4] = acc * p.scale;
    } else {
        dst4_hi[c4 - half4] = acc * p.scale;
    }
}

// sum_rows_x16_4: sum_rows4 over f16 values (four per lane as two u32 words, widened exactly),
// summed in f32 and written as f32: the bias gradients of f16 activation gradients
// (src/ops/dw_mlp_mixed.rs). No `enable f16`.
@group(0) @binding(1) var<storage, read> src_x16: array<vec2<u32>>;

@compute @workgroup_size(64)
fn sum_rows_x16_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c4 = wg.x * 64u + lid;
    let cols4 = p.n_out / 4u;
    if (c4 >= cols4) { return; }
    let r0 = wg.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.n_red);
    var acc = vec4<f32>(0.0);
    for (var r = r0; r < r1; r++) {
        let w = src_x16[r * cols4 + c4];
        acc += vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    dst4[wg.y * cols4 + c4] = acc * p.scale;
}

// sum_rows_halves: sum_rows unsplit (chunk = n_red, wg.y = 0) whose columns [0, n_out/2) land in
// dst and [n_out/2, n_out) in dst_hi (binding 3): a norm's [blocks, 2, C] parameter-gradient
// partials become gγ and gβ in one launch.
@group(0) @binding(3) var<storage, read_write> dst_hi: array<f32>;

@compute @workgroup_size(64)
fn sum_rows_halves(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.x * 64u + lid;
    if (c >= p.n_out) { return; }
    var acc = 0.0;
    for (var r = 0u; r < p.n_red; r++) {
        acc += src[r * p.n_out + c];
    }
    let half = p.n_out / 2u;
    if (c < half) {
        dst[c] = acc * p.scale;
    } else {
        dst_hi[c - half] = acc * p.scale;
    }
}

@compute @workgroup_size(64)
fn sum_axes_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let o = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (o >= p.n_out) { return; }
    let base = kept_offset(o);
    var acc = 0.0;
    for (var k = 0u; k < p.n_red; k++) {
        acc += src[base + reduced_offset(k)];
    }
    dst[o] = acc * p.scale;
}
