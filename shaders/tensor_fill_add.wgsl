// The tensor layer's own unrecorded arithmetic: a fill (Tensor::full, the seed gradient of
// backward) and a same-shape sum (gradient accumulation in autograd's Gradients store). They live
// below `ops` so that tensor and autograd never import ops; nothing here is recorded on the tape.
//
// fill:  out[i] = p.value                 for i < p.n
// add:   out[i] = a[i] + b[i]             for i < p.n (same shapes, no broadcasting)
//
// fill4, add4: the same four elements per invocation when p.n % 4 == 0 (vec4 loads and stores:
//        on lavapipe each per-invocation access is a per-lane sequence). Dispatch over p.n / 4.
//
// Layouts: contiguous f32 buffers of p.n elements. Bindings: 0 params (uniform), then the inputs
// (read: a, b for add; none for fill), then the output (read_write). Dispatch: 1-D over elements,
// 256 per workgroup, folded into (x, y) past 65,535 workgroups:
// i = (wg.x + wg.y * nwg.x) * 256 + local index.
// Launched by src/tensor/arith.rs (fill, add_unrecorded).

struct FillAddParams {
    n: u32, value: f32, _pad0: u32, _pad1: u32,
}

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

@group(0) @binding(0) var<uniform> fp: FillAddParams;
@group(0) @binding(1) var<storage, read_write> fill_out: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= fp.n) { return; }
    fill_out[i] = fp.value;
}

@group(0) @binding(0) var<uniform> ap: FillAddParams;
@group(0) @binding(1) var<storage, read> add_a: array<f32>;
@group(0) @binding(2) var<storage, read> add_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> add_out: array<f32>;

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= ap.n) { return; }
    add_out[i] = add_a[i] + add_b[i];
}

@group(0) @binding(1) var<storage, read_write> fill4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn fill4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= fp.n / 4u) { return; }
    fill4_out[i] = vec4<f32>(fp.value);
}

@group(0) @binding(1) var<storage, read> add4_a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> add4_b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> add4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn add4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= ap.n / 4u) { return; }
    add4_out[i] = add4_a[i] + add4_b[i];
}
