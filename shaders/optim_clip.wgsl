// Gradient-norm reduction and clipping (two passes of partial sums, no atomics).
//
// sum_squares:  out[out_offset + w] = post( Σ_{k in chunk w} pre(x[k]) )
//               chunk w = [w * chunk, min(n, (w + 1) * chunk)),
//               pre(x) = x² if square_input = 1 else x,  post(s) = sqrt(s) if sqrt_output = 1 else s.
//   Pass 1 (per tensor): squares of one gradient -> partial sums, chunk = 4096 elements.
//   Pass 2: one workgroup sums the partials and writes the norm ‖g‖₂ into norms[tensor index].
//   Global norm: one workgroup over the norms with squaring: sqrt(Σ_t ‖g_t‖²).
// clip_scale:   out[i] = x[i] * min(1, max_norm / (norms[norm_index] + eps))
//               (DINO `clip_gradients` and torch `clip_grad_norm_`, eps = 1e-6), written fresh.
//
// Layouts: flat f32 buffers. Bindings, sum_squares: 0 params; 1 x (read); 2 out (read_write).
// clip_scale: 0 params; 1 x (read); 2 norms (read); 3 out (read_write).
// Dispatch: sum_squares one workgroup of 256 per chunk (folded 1-D grid, the workgroup's
// invocations stride over the chunk and combine with a shared-memory tree); clip_scale 1-D over
// elements, 256 per workgroup, folded: i = (wg.x + wg.y * nwg.x) * 256 + local index.
// sum_squares4: pass 1 on vec4 loads where n % 4 == 0, in chunks of 16384 elements (a quarter of
// the workgroups, so a quarter of the trees).
// clip_scale_4: the same on four elements per invocation (n % 4 == 0; vec4 views of x and out,
// i < n / 4), each component's arithmetic clip_scale's.
// Launched by src/optim/clip.rs (tensor_norms, clip_grad_norm_per_tensor, clip_grad_norm).

struct SumSquaresParams {
    n: u32, chunk: u32, groups: u32, out_offset: u32,
    square_input: u32, sqrt_output: u32, _pad0: u32, _pad1: u32,
}

struct ClipParams {
    n: u32, norm_index: u32, max_norm: f32, eps: f32,
}

@group(0) @binding(0) var<uniform> sp: SumSquaresParams;
@group(0) @binding(1) var<storage, read> ss_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ss_out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_squares(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let w = wg.x + wg.y * nwg.x;
    // Whole workgroups share `w`, so this early exit never splits a barrier.
    if (w >= sp.groups) { return; }
    let start = w * sp.chunk;
    let end = start + min(sp.chunk, sp.n - start); // start <= n by construction
    // Two independent accumulators so consecutive adds do not serialise.
    var acc0 = 0.0;
    var acc1 = 0.0;
    var k = start + lid;
    loop {
        if (k + 256u >= end) { break; }
        let a = ss_x[k];
        let b = ss_x[k + 256u];
        if (sp.square_input != 0u) {
            acc0 += a * a;
            acc1 += b * b;
        } else {
            acc0 += a;
            acc1 += b;
        }
        k += 512u;
    }
    if (k < end) {
        let a = ss_x[k];
        if (sp.square_input != 0u) { acc0 += a * a; } else { acc0 += a; }
    }
    finish_sum(lid, w, acc0 + acc1);
}

// The workgroup's 256 lane sums combined in a shared-memory tree; lane 0 writes the result
// (square-rooted when asked) as output w. Called by every lane of the workgroup.
fn finish_sum(lid: u32, w: u32, lane_sum: f32) {
    partial[lid] = lane_sum;
    workgroupBarrier();
    var width = 128u;
    loop {
        if (width == 0u) { break; }
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
        width = width / 2u;
    }
    if (lid == 0u) {
        var s = partial[0];
        if (sp.sqrt_output != 0u) { s = sqrt(s); }
        ss_out[sp.out_offset + w] = s;
    }
}

@group(0) @binding(1) var<storage, read> ss_x4: array<vec4<f32>>;

// sum_squares on vec4 loads (n and chunk multiples of 4; squares always): each lane's vec4
// partial sums are added component-wise, then across components, then in the tree.
@compute @workgroup_size(256)
fn sum_squares4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let w = wg.x + wg.y * nwg.x;
    if (w >= sp.groups) { return; }
    let start = w * (sp.chunk / 4u);
    let end = start + min(sp.chunk / 4u, sp.n / 4u - start);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var k = start + lid;
    loop {
        if (k + 256u >= end) { break; }
        let a = ss_x4[k];
        let b = ss_x4[k + 256u];
        acc0 += a * a;
        acc1 += b * b;
        k += 512u;
    }
    if (k < end) {
        let a = ss_x4[k];
        acc0 += a * a;
    }
    let s = acc0 + acc1;
    finish_sum(lid, w, (s.x + s.y) + (s.z + s.w));
}

@group(0) @binding(0) var<uniform> cp: ClipParams;
@group(0) @binding(1) var<storage, read> cl_x: array<f32>;
@group(0) @binding(2) var<storage, read> cl_norms: array<f32>;
@group(0) @binding(3) var<storage, read_write> cl_out: array<f32>;

@compute @workgroup_size(256)
fn clip_scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= cp.n) { return; }
    let coef = min(1.0, cp.max_norm / (cl_norms[cp.norm_index] + cp.eps));
    cl_out[i] = cl_x[i] * coef;
}

@group(0) @binding(1) var<storage, read> cl_x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> cl_out4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn clip_scale_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= cp.n / 4u) { return; }
    let coef = min(1.0, cp.max_norm / (cl_norms[cp.norm_index] + cp.eps));
    cl_out4[i] = cl_x4[i] * coef;
}
