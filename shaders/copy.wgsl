// Strided region copy: the one data-movement kernel behind permute, slice, concat and the
// backward of slice (copy into a zeroed gradient).
//
//   out[out_offset + Σ_d c_d * out_stride_d] = in[in_offset + Σ_d c_d * in_stride_d]
//
// for every coordinate c of the region `shape0..shape5` (rank 6, right-aligned, leading 1s).
// Strides are in elements. Layout: f32 buffers. Bindings: 0 params, 1 input (read),
// 2 output (read_write).
// copy_region: 1-D over region elements, 256 per workgroup, folded grid; each lane splits its
//   index into six coordinates (five divisions).
// copy_region_rows: lanes along the last axis (64 per workgroup, x = ceil(shape5 / 64) blocks),
//   the workgroup's folded (y, z) is the row (c0 .. c4), so the divisions are workgroup-uniform
//   (a per-lane division is a scalarised sequence on CPU adapters). For regions whose last axis
//   fills most of a workgroup.
// copy_region_rows4: copy_region_rows moving a vec4 per lane (x = ceil(shape5 / 256) blocks),
//   when both sides are contiguous along the last axis (stride 1), shape5 % 4 == 0 and every
//   other stride and both offsets are multiples of 4 (the host checks), so each vec4 starts on
//   a vec4 boundary on both sides.
// Launched by src/tensor/layout.rs (copy_region).

struct CopyParams {
    n: u32, in_offset: u32, out_offset: u32, _pad0: u32,
    shape0: u32, shape1: u32, shape2: u32, shape3: u32, shape4: u32, shape5: u32,
    in_stride0: u32, in_stride1: u32, in_stride2: u32, in_stride3: u32, in_stride4: u32, in_stride5: u32,
    out_stride0: u32, out_stride1: u32, out_stride2: u32, out_stride3: u32, out_stride4: u32, out_stride5: u32,
    _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn copy_region(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.n) { return; }
    var r = i;
    var si = p.in_offset;
    var di = p.out_offset;
    var c = r % p.shape5; r = r / p.shape5; si += c * p.in_stride5; di += c * p.out_stride5;
    c = r % p.shape4; r = r / p.shape4; si += c * p.in_stride4; di += c * p.out_stride4;
    c = r % p.shape3; r = r / p.shape3; si += c * p.in_stride3; di += c * p.out_stride3;
    c = r % p.shape2; r = r / p.shape2; si += c * p.in_stride2; di += c * p.out_stride2;
    c = r % p.shape1; r = r / p.shape1; si += c * p.in_stride1; di += c * p.out_stride1;
    si += r * p.in_stride0; di += r * p.out_stride0;
    dst[di] = src[si];
}

@compute @workgroup_size(64)
fn copy_region_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let row = wg.y + wg.z * nwg.y;
    let c5 = wg.x * 64u + lid;
    if (row >= p.n / p.shape5 || c5 >= p.shape5) { return; }
    var r = row;
    var si = p.in_offset + c5 * p.in_stride5;
    var di = p.out_offset + c5 * p.out_stride5;
    var c = r % p.shape4; r = r / p.shape4; si += c * p.in_stride4; di += c * p.out_stride4;
    c = r % p.shape3; r = r / p.shape3; si += c * p.in_stride3; di += c * p.out_stride3;
    c = r % p.shape2; r = r / p.shape2; si += c * p.in_stride2; di += c * p.out_stride2;
    c = r % p.shape1; r = r / p.shape1; si += c * p.in_stride1; di += c * p.out_stride1;
    si += r * p.in_stride0; di += r * p.out_stride0;
    dst[di] = src[si];
}

@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn copy_region_rows4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let row = wg.y + wg.z * nwg.y;
    let c5 = (wg.x * 64u + lid) * 4u;
    if (row >= p.n / p.shape5 || c5 >= p.shape5) { return; }
    var r = row;
    var si = p.in_offset + c5;
    var di = p.out_offset + c5;
    var c = r % p.shape4; r = r / p.shape4; si += c * p.in_stride4; di += c * p.out_stride4;
    c = r % p.shape3; r = r / p.shape3; si += c * p.in_stride3; di += c * p.out_stride3;
    c = r % p.shape2; r = r / p.shape2; si += c * p.in_stride2; di += c * p.out_stride2;
    c = r % p.shape1; r = r / p.shape1; si += c * p.in_stride1; di += c * p.out_stride1;
    si += r * p.in_stride0; di += r * p.out_stride0;
    dst4[di / 4u] = src4[si / 4u];
}
