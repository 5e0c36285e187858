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
