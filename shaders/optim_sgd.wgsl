// SGD parameter update, fused and in place (torch.optim.SGD, maximize = false).
//
// With g = grad[i] + weight_decay * param[i]   (coupled L2 weight decay):
//
// sgd_plain:     param[i] = param[i] - lr * g
// sgd_momentum:  buf[i]   = g                                      on the first step (`first` = 1)
//                buf[i]   = momentum * buf[i] + (1 - dampening) * g   afterwards
//                d        = g + momentum * buf[i]   if nesterov = 1,  else  d = buf[i]
//                param[i] = param[i] - lr * d
//
// On the first step `buf` is freshly allocated and never read, so it needs no zero fill.
// skip[0] != 0 (a loss-scaled step whose gradients overflowed, src/optim/loss_scale.rs): every
// invocation returns before touching anything, so param and buf keep their bits, as when torch's
// GradScaler skips `optimizer.step()`. Unscaled steps bind a zero word.
// Layouts: contiguous f32, one element per parameter scalar (any shape, flattened).
// Bindings: 0 params (uniform); 1 grad (read); 2 skip (read, one word); 3 param (read_write);
// 4 buf (read_write, sgd_momentum only). Dispatch: 1-D over elements, 256 per workgroup, folded into (x, y) past
// 65,535 workgroups: i = (wg.x + wg.y * nwg.x) * 256 + local index.
// sgd_plain_4, sgd_momentum_4: the same updates on four elements per invocation (n % 4 == 0; i
// indexes vec4 views of the same bindings, i < n / 4): a quarter of the invocations and of the
// per-lane loads, which is what costs on a CPU adapter; each component's arithmetic is the scalar
// entry's.
// Launched by src/optim/sgd.rs (Sgd::step).

struct SgdParams {
    n: u32, first: u32, nesterov: u32, _pad0: u32,
    lr: f32, momentum: f32, one_minus_dampening: f32, weight_decay: f32,
}

@group(0) @binding(0) var<uniform> p: SgdParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> skip: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> buf: array<f32>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn sgd_plain(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n || skip[0] != 0.0) { return; }
    let w = param[i];
    let g = grad[i] + p.weight_decay * w;
    param[i] = w - p.lr * g;
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n || skip[0] != 0.0) { return; }
    let w = param[i];
    let g = grad[i] + p.weight_decay * w;
    var b = g;
    if (p.first == 0u) {
        b = p.momentum * buf[i] + p.one_minus_dampening * g;
    }
    buf[i] = b;
    var d = b;
    if (p.nesterov != 0u) {
        d = g + p.momentum * b;
    }
    param[i] = w - p.lr * d;
}

@group(0) @binding(1) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> buf4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn sgd_plain_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n / 4u || skip[0] != 0.0) { return; }
    let w = param4[i];
    let g = grad4[i] + p.weight_decay * w;
    param4[i] = w - p.lr * g;
}

@compute @workgroup_size(256)
fn sgd_momentum_4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n / 4u || skip[0] != 0.0) { return; }
    let w = param4[i];
    let g = grad4[i] + p.weight_decay * w;
    var b = g;
    if (p.first == 0u) {
        b = p.momentum * buf4[i] + p.one_minus_dampening * g;
    }
    buf4[i] = b;
    var d = b;
    if (p.nesterov != 0u) {
        d = g + p.momentum * b;
    }
    param4[i] = w - p.lr * d;
}
