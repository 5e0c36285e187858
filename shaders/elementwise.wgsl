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
// unary:           out[i] = u(x[i]; alpha), `op` codes listed at `apply_unary`.
// unary_backward:  gx[i] = g[i] * u'(x[i]; alpha)  (gradient written fresh, never accumulated).
//
// Layouts: contiguous row-major f32 buffers. Bindings: 0 params (uniform), then the inputs
// (read), then the output (read_write). Dispatch: 1-D over elements, 256 per workgroup, folded
// into (x, y) when over 65,535 workgroups: i = (wg.x + wg.y * nwg.x) * 256 + local index.
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

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

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

struct UnaryParams {
    n: u32, op: u32, alpha: f32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> up: UnaryParams;
@group(0) @binding(1) var<storage, read> un_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> un_out: array<f32>;

// erf(x) by Abramowitz & Stegun 7.1.26 refined: |error| < 1.5e-7, below f32 resolution of GELU.
fn erf_approx(x: f32) -> f32 {
    let s = sign(x);
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-a * a));
}

const INV_SQRT2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;

// op: 0 neg, 1 exp, 2 log, 3 sqrt, 4 square, 5 relu, 6 leaky_relu(alpha = slope),
//     7 gelu (erf form, x * Phi(x)), 8 add alpha, 9 mul alpha, 10 tanh, 11 sigmoid,
//     12 reciprocal, 13 abs, 14 pow alpha (x > 0)
fn apply_unary(x: f32, op: u32, alpha: f32) -> f32 {
    switch op {
        case 0u: { return -x; }
        case 1u: { return exp(x); }
        case 2u: { return log(x); }
        case 3u: { return sqrt(x); }
        case 4u: { return x * x; }
        case 5u: { return max(x, 0.0); }
        case 6u: { return select(alpha * x, x, x > 0.0); }
        case 7u: { return x * 0.5 * (1.0 + erf_approx(x * INV_SQRT2)); }
        case 8u: { return x + alpha; }
        case 9u: { return x * alpha; }
        case 10u: { return tanh(x); }
        case 11u: { return 1.0 / (1.0 + exp(-x)); }
        case 12u: { return 1.0 / x; }
        case 13u: { return abs(x); }
        default: { return pow(x, alpha); }
    }
}

// d u / d x for the same op codes.
fn unary_derivative(x: f32, op: u32, alpha: f32) -> f32 {
    switch op {
        case 0u: { return -1.0; }
        case 1u: { return exp(x); }
        case 2u: { return 1.0 / x; }
        case 3u: { return 0.5 / sqrt(x); }
        case 4u: { return 2.0 * x; }
        case 5u: { return select(0.0, 1.0, x > 0.0); }
        case 6u: { return select(alpha, 1.0, x > 0.0); }
        case 7u: {
            let cdf = 0.5 * (1.0 + erf_approx(x * INV_SQRT2));
            return cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x);
        }
        case 8u: { return 1.0; }
        case 9u: { return alpha; }
        case 10u: { let t = tanh(x); return 1.0 - t * t; }
        case 11u: { let s = 1.0 / (1.0 + exp(-x)); return s * (1.0 - s); }
        case 12u: { return -1.0 / (x * x); }
        case 13u: { return sign(x); }
        default: { return alpha * pow(x, alpha - 1.0); }
    }
}

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
