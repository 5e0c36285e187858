// L2 normalisation along one axis (as torch.nn.functional.normalize), x viewed as [O, A, I]
// (O = product of the axes before, A = the normalised axis, I = product of the axes after):
//
//   n[o, i]    = sqrt(Σ_a x[o, a, i]²)
//   y[o, a, i] = x[o, a, i] / max(n[o, i], eps)
//
// Backward (gather form; each gx element written once):
//   n > eps:  gx = g/n − x·(Σ_a x·g)/n³       (= (g − y·(y·g))/n)
//   n <= eps: gx = g/eps                        (the clamp makes the divisor constant)
//
// Bindings (forward): 0 params, 1 x [O·A·I] (read), 2 y [O·A·I], 3 norms [O·I] (read_write).
// Bindings (backward): 0 params, 1 x, 2 norms [O·I], 3 g [O·A·I] (read), 4 gx (read_write).
// Dispatch: one invocation per (o, i) (Grid::cover(O·I, 64)); adjacent i are adjacent in memory,
// so the loop over a is coalesced when I > 1.
// The `4` entries: four adjacent i per invocation when I % 4 == 0 (vec4 views of the same
// bindings, O·I/4 invocations; a weight-normalised head's [in, out] weight normalised over `in`
// is I = out): each component's arithmetic is the scalar entries', the eps branch a select.
// Launched by src/ops/loss.rs (l2_normalize).

struct L2Params {
    outer: u32,
    axis_len: u32,
    inner: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: L2Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;
// Backward bindings (unique per entry point, as WGSL requires).
@group(0) @binding(2) var<storage, read> saved_norms: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(64)
fn l2_normalize_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (id >= p.outer * p.inner) { return; }
    let o = id / p.inner;
    let i = id % p.inner;
    let base = o * p.axis_len * p.inner + i;
    var sq = 0.0;
    for (var a = 0u; a < p.axis_len; a += 1u) {
        let v = x[base + a * p.inner];
        sq += v * v;
    }
    let n = sqrt(sq);
    let inv = 1.0 / max(n, p.eps);
    for (var a = 0u; a < p.axis_len; a += 1u) {
        y[base + a * p.inner] = x[base + a * p.inner] * inv;
    }
    norms[id] = n;
}

@compute @workgroup_size(64)
fn l2_normalize_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (id >= p.outer * p.inner) { return; }
    let o = id / p.inner;
    let i = id % p.inner;
    let base = o * p.axis_len * p.inner + i;
    let n = saved_norms[id];
    if (n > p.eps) {
        var dot = 0.0;
        for (var a = 0u; a < p.axis_len; a += 1u) {
            dot += x[base + a * p.inner] * g[base + a * p.inner];
        }
        let inv = 1.0 / n;
        let k = dot * inv * inv * inv;
        for (var a = 0u; a < p.axis_len; a += 1u) {
            let j = base + a * p.inner;
            gx[j] = g[j] * inv - x[j] * k;
        }
    } else {
        let inv = 1.0 / p.eps;
        for (var a = 0u; a < p.axis_len; a += 1u) {
            let j = base + a * p.inner;
            gx[j] = g[j] * inv;
        }
    }
}

@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> norms4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> saved_norms4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> g4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> gx4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn l2_normalize_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    let inner4 = p.inner / 4u;
    if (id >= p.outer * inner4) { return; }
    let o = id / inner4;
    let i = id % inner4;
    let base = o * p.axis_len * inner4 + i;
    var sq = vec4<f32>(0.0);
    for (var a = 0u; a < p.axis_len; a += 1u) {
        let v = x4[base + a * inner4];
        sq += v * v;
    }
    let n = sqrt(sq);
    let inv = 1.0 / max(n, vec4<f32>(p.eps));
    for (var a = 0u; a < p.axis_len; a += 1u) {
        y4[base + a * inner4] = x4[base + a * inner4] * inv;
    }
    norms4[id] = n;
}

@compute @workgroup_size(64)
fn l2_normalize_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    let inner4 = p.inner / 4u;
    if (id >= p.outer * inner4) { return; }
    let o = id / inner4;
    let i = id % inner4;
    let base = o * p.axis_len * inner4 + i;
    let n = saved_norms4[id];
    let above = n > vec4<f32>(p.eps);
    var dot = vec4<f32>(0.0);
    for (var a = 0u; a < p.axis_len; a += 1u) {
        dot += x4[base + a * inner4] * g4[base + a * inner4];
    }
    // Where n <= eps: gx = g/eps (k = 0); the selects drop the 1/n of those components.
    let inv = select(vec4<f32>(1.0 / p.eps), 1.0 / n, above);
    let k = select(vec4<f32>(0.0), dot * inv * inv * inv, above);
    for (var a = 0u; a < p.axis_len; a += 1u) {
        let j = base + a * inner4;
        gx4[j] = g4[j] * inv - x4[j] * k;
    }
}
