// Elementwise kernels: broadcast binary ops, unary ops and their input gradients.
//
// binary:          out[i] = f(a[ia(i)], b[ib(i)]),  f by `op`: 0 add, 1 sub, 2 mul, 3 div,
//                  4 max, 5 min, 6 ge, 7 lt, 8 le, 9 gt (comparisons give 1.0 or 0.0). ia/ib: i decomposed over the output shape (up to rank 6,
//                  dims right-aligned, missing leading dims = 1) dotted with each operand's
//                  strides, stride 0 on broadcast axes.
// binary_flat:     the same when the host collapsed the broadcast to one axis (same-shape
//                  operands, a scalar operand): ia = i·a_stride5, ib = i·b_stride5, no division.
// binary_rows:     the same on two axes (a bias over rows, a per-sample mask): one division.
//                  The host (src/ops/elementwise.rs) drops extent-1 axes and merges an axis into
//                  the next where both operands' strides continue across it, then picks the
//                  entry by the rank left; collapsed axes sit at the end (4, 5) of the params.
//                  On SIMD CPU drivers the integer divisions of the general entry dominate it.
// unary:           out[i] = u(x[i]; alpha), `op` codes listed at `apply_unary`
//                  (shaders/unary_math.wgsl, appended to this file's source by the launcher).
// unary_backward:  gx[i] = g[i] * u'(x[i]; alpha)  (gradient written fresh, never accumulated).
// *4 entries (binary_flat4, binary_rows4, unary4, unary_backward4): the same on vec4s, four
//                  consecutive outputs per invocation, when the host (src/ops/elementwise.rs)
//                  finds them in one row with each operand either contiguous along it (one vec4
//                  load at an element index divisible by 4) or constant along it (one element,
//                  splat): n % 4 == 0, the row extent % 4 == 0, row strides of contiguous
//                  operands % 4 == 0. On lavapipe each per-invocation load is a per-lane
//                  sequence, so one vec4 load in place of four scalar ones is the gain.
//
// Layouts: contiguous row-major f32 buffers. Bindings: 0 params (uniform), then the inputs
// (read), then the output (read_write). Dispatch: 1-D over elements (over vec4s for the *4
// entries), 256 per workgroup, folded into (x, y) when over 65,535 workgroups:
// i = (wg.x + wg.y * nwg.x) * 256 + local index.
// Launched by src/ops/elementwise.rs (binary, unary, unary_backward). The fill kernel is the
// tensor layer's (shaders/tensor_fill_add.wgsl).

struct BinaryParams {
    n: u32, op: u32, _pad0: u32, _pad1: u32,
    shape0: u32, shape1: u32, shape2: u32, shape3: u32, shape4: u32, shape5: u32,
    a_stride0: u32, a_stride1: u32, a_stride2: u32, a_stride3: u32, a_stride4: u32, a_stride5: u32,
    b_stride0: u32, b_stride1: u32, b_stride2: u32, b_stride3: u32, b_stride4: u32, b_stride5: u32,
    _pad2: u32, _pad3: u32,
}

@group(0) @binding(0) var<uniform> bp: BinaryParams;
@group(0) @binding(1) var<storage, read> bin_a: array<f32>;
@group(0) @binding(2) var<storage, read> bin_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bin_out: array<f32>;

// f by op code (see the header); `op` is uniform, so every lane takes the same case.
fn binary_apply(x: f32, y: f32) -> f32 {
    switch bp.op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: { return max(x, y); }
        case 5u: { return min(x, y); }
        case 6u: { return select(0.0, 1.0, x >= y); }
        case 7u: { return select(0.0, 1.0, x < y); }
        case 8u: { return select(0.0, 1.0, x <= y); }
        default: { return select(0.0, 1.0, x > y); }
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= bp.n) { return; }
    // Decompose i over the output shape, innermost axis (5) first.
    var r = i;
    var ia = 0u;
    var ib = 0u;
    var c = r % bp.shape5; r = r / bp.shape5; ia += c * bp.a_stride5; ib += c * bp.b_stride5;
    c = r % bp.shape4; r = r / bp.shape4; ia += c * bp.a_stride4; ib += c * bp.b_stride4;
    c = r % bp.shape3; r = r / bp.shape3; ia += c * bp.a_stride3; ib += c * bp.b_stride3;
    c = r % bp.shape2; r = r / bp.shape2; ia += c * bp.a_stride2; ib += c * bp.b_stride2;
    c = r % bp.shape1; r = r / bp.shape1; ia += c * bp.a_stride1; ib += c * bp.b_stride1;
    ia += r * bp.a_stride0; ib += r * bp.b_stride0;
    bin_out[i] = binary_apply(bin_a[ia], bin_b[ib]);
}

@compute @workgroup_size(256)
fn binary_flat(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= bp.n) { return; }
    bin_out[i] = binary_apply(bin_a[i * bp.a_stride5], bin_b[i * bp.b_stride5]);
}

@compute @workgroup_size(256)
fn binary_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= bp.n) { return; }
    let c = i % bp.shape5;
    let r = i / bp.shape5;
    let ia = r * bp.a_stride4 + c * bp.a_stride5;
    let ib = r * bp.b_stride4 + c * bp.b_stride5;
    bin_out[i] = binary_apply(bin_a[ia], bin_b[ib]);
}

@group(0) @binding(1) var<storage, read> bin4_a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bin4_b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> bin4_out: array<vec4<f32>>;

fn binary_apply4(x: vec4<f32>, y: vec4<f32>) -> vec4<f32> {
    let one = vec4<f32>(1.0);
    let zero = vec4<f32>(0.0);
    switch bp.op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: { return max(x, y); }
        case 5u: { return min(x, y); }
        case 6u: { return select(zero, one, x >= y); }
        case 7u: { return select(zero, one, x < y); }
        case 8u: { return select(zero, one, x <= y); }
        default: { return select(zero, one, x > y); }
    }
}

// Four consecutive elements from element e on of an operand whose stride along them is 1 (e is
// then a multiple of 4) or 0 (element e repeated). `stride` is uniform.
fn operand_a4(e: u32, stride: u32) -> vec4<f32> {
    if (stride == 0u) { return vec4<f32>(bin4_a[e / 4u][e % 4u]); }
    return bin4_a[e / 4u];
}

fn operand_b4(e: u32, stride: u32) -> vec4<f32> {
    if (stride == 0u) { return vec4<f32>(bin4_b[e / 4u][e % 4u]); }
    return bin4_b[e / 4u];
}

@compute @workgroup_size(256)
fn binary_flat4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= bp.n / 4u) { return; }
    let e = 4u * i;
    let a = operand_a4(e * bp.a_stride5, bp.a_stride5);
    let b = operand_b4(e * bp.b_stride5, bp.b_stride5);
    bin4_out[i] = binary_apply4(a, b);
}

@compute @workgroup_size(256)
fn binary_rows4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= bp.n / 4u) { return; }
    let e = 4u * i;
    let c = e % bp.shape5;
    let r = e / bp.shape5;
    let a = operand_a4(r * bp.a_stride4 + c * bp.a_stride5, bp.a_stride5);
    let b = operand_b4(r * bp.b_stride4 + c * bp.b_stride5, bp.b_stride5);
    bin4_out[i] = binary_apply4(a, b);
}

@group(0) @binding(0) var<uniform> up: UnaryParams;
@group(0) @binding(1) var<storage, read> un_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> un_out: array<f32>;

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= up.n) { return; }
    un_out[i] = apply_unary(un_x[i], up.op, up.alpha);
}

@group(0) @binding(0) var<uniform> ubp: UnaryParams;
@group(0) @binding(1) var<storage, read> ub_x: array<f32>;
@group(0) @binding(2) var<storage, read> ub_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> ub_out: array<f32>;

@compute @workgroup_size(256)
fn unary_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= ubp.n) { return; }
    ub_out[i] = ub_g[i] * unary_derivative(ub_x[i], ubp.op, ubp.alpha);
}

@group(0) @binding(1) var<storage, read> un4_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> un4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn unary4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= up.n / 4u) { return; }
    let x = un4_x[i];
    un4_out[i] = vec4<f32>(apply_unary(x.x, up.op, up.alpha), apply_unary(x.y, up.op, up.alpha),
                           apply_unary(x.z, up.op, up.alpha), apply_unary(x.w, up.op, up.alpha));
}

@group(0) @binding(1) var<storage, read> ub4_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> ub4_g: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> ub4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn unary_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= ubp.n / 4u) { return; }
    let x = ub4_x[i];
    let d = vec4<f32>(unary_derivative(x.x, ubp.op, ubp.alpha), unary_derivative(x.y, ubp.op, ubp.alpha),
                      unary_derivative(x.z, ubp.op, ubp.alpha), unary_derivative(x.w, ubp.op, ubp.alpha));
    ub4_out[i] = ub4_g[i] * d;
}

// unary_backward_in_place(4): gx written over g (g read_write at binding 2), for a caller that
// owns g and needs it no longer; the same arithmetic as unary_backward(4).
@group(0) @binding(1) var<storage, read> ui_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ui_g: array<f32>;

@compute @workgroup_size(256)
fn unary_backward_in_place(@builtin(workgroup_id) wg: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= ubp.n) { return; }
    ui_g[i] = ui_g[i] * unary_derivative(ui_x[i], ubp.op, ubp.alpha);
}

@group(0) @binding(1) var<storage, read> ui4_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> ui4_g: array<vec4<f32>>;

@compute @workgroup_size(256)
fn unary_backward_in_place4(@builtin(workgroup_id) wg: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= ubp.n / 4u) { return; }
    let x = ui4_x[i];
    let d = vec4<f32>(unary_derivative(x.x, ubp.op, ubp.alpha), unary_derivative(x.y, ubp.op, ubp.alpha),
                      unary_derivative(x.z, ubp.op, ubp.alpha), unary_derivative(x.w, ubp.op, ubp.alpha));
    ui4_g[i] = ui4_g[i] * d;
}
