// AdamW parameter update, fused and in place (torch.optim.AdamW, amsgrad = false).
//
// For step t of this parameter (t counted per parameter, from 1), with g = grad[i] · c:
//
//   param[i] = param[i] * decay                       decay = 1 - lr * weight_decay (decoupled)
//   m[i]     = beta1 * m[i] + (1 - beta1) * g          (m = 0 before the first step)
//   v[i]     = beta2 * v[i] + (1 - beta2) * g * g      (v = 0 before the first step)
//   param[i] = param[i] - step_size * m[i] / (sqrt(v[i]) / bc2_sqrt + eps)
//
// with step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t), both computed on the host
// in f64 as torch does. On the first step (`first` = 1) m and v are fresh, unread allocations.
//
// c is the gradient clipping coefficient, applied here instead of by a pass that writes clipped
// copies (src/optim/clip.rs, GradClip): c = min(1, max_norm / (norms[norm_index] + 1e-6)), the
// expression of `clip_scale` in shaders/optim_clip.wgsl (its eps is CLIP_EPS = 1e-6), so g is
// bit for bit the clipped gradient; max_norm < 0 means no clipping (c unused, g = grad[i]).
//
// skip[0] != 0 (a loss-scaled step whose gradients overflowed, src/optim/loss_scale.rs): every
// invocation returns before touching anything, so param, m and v keep their bits, as when
// torch's GradScaler skips `optimizer.step()`. Unscaled steps bind a zero word.
// Layouts: contiguous f32, flattened parameter. Bindings: 0 params (uniform); 1 grad (read);
// 2 skip (read, one word); 3 norms (read; a zero word when not clipping); 4 param (read_write);
// 5 m (read_write); 6 v (read_write).
// Dispatch: 1-D over elements,
// 256 per workgroup, folded into (x, y): i = (wg.x + wg.y * nwg.x) * 256 + local index.
// adamw_4: the same update on four elements per invocation (n % 4 == 0; i indexes vec4 views of
// the same bindings, i < n / 4): a quarter of the invocations and of the per-lane loads, which
// is what costs on a CPU adapter; each component's arithmetic is the scalar entry's.
// Launched by src/optim/adamw.rs (AdamW::step).

struct AdamWParams {
    n: u32, first: u32, decay: f32, beta1: f32,
    beta2: f32, one_minus_beta1: f32, one_minus_beta2: f32, step_size: f32,
    bc2_sqrt: f32, eps: f32, norm_index: u32, max_norm: f32,
}

@group(0) @binding(0) var<uniform> p: AdamWParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> skip: array<f32>;
@group(0) @binding(3) var<storage, read> norms: array<f32>;
@group(0) @binding(4) var<storage, read_write> param: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;

// The clipping coefficient c (see the header); only read when max_norm >= 0.
fn clip_coef() -> f32 {
    return min(1.0, p.max_norm / (norms[p.norm_index] + 1e-6));
}

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.n || skip[0] != 0.0) { return; }
    var g = grad[i];
    if (p.max_norm >= 0.0) { g = g * clip_coef(); }
    var m_old = 0.0;
    var v_old = 0.0;
    if (p.first == 0u) {
        m_old = m[i];
        v_old = v[i];
    }
    let m_new = p.beta1 * m_old + p.one_minus_beta1 * g;
    let v_new = p.beta2 * v_old + p.one_minus_beta2 * g * g;
    m[i] = m_new;
    v[i] = v_new;
    let denom = sqrt(v_new) / p.bc2_sqrt + p.eps;
    param[i] = param[i] * p.decay - p.step_size * m_new / denom;
}

@group(0) @binding(1) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> v4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn adamw_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.n / 4u || skip[0] != 0.0) { return; }
    var g = grad4[i];
    if (p.max_norm >= 0.0) { g = g * clip_coef(); }
    var m_old = vec4<f32>(0.0);
    var v_old = vec4<f32>(0.0);
    if (p.first == 0u) {
        m_old = m4[i];
        v_old = v4[i];
    }
    let m_new = p.beta1 * m_old + p.one_minus_beta1 * g;
    let v_new = p.beta2 * v_old + p.one_minus_beta2 * g * g;
    m4[i] = m_new;
    v4[i] = v_new;
    let denom = sqrt(v_new) / p.bc2_sqrt + p.eps;
    param4[i] = param4[i] * p.decay - p.step_size * m_new / denom;
}
