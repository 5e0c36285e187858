// Shared by shaders/elementwise.wgsl and shaders/unary_f16.wgsl (each launcher appends this
// file to its source): the element index of a 1-D launch, the unary ops' parameters, and the
// unary functions and their derivatives by op code.

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

struct UnaryParams {
    n: u32, op: u32, alpha: f32, _pad0: u32,
}

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
