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
// The wide entries (inner % 4 == 0 and at least WIDE_MIN_INNER, src/ops/l2_normalize_wide.rs):
// a line-per-invocation walk along a reads one vec4 per row 4·inner bytes from the last, so for
// a weight-normalised head ([256, 60000]: 240 KB apart) every load is a cache miss and the
// kernel waits on latency. There each step splits in two:
//   l2_column_norms4   n[o, i] for 4 vec4 columns per lane, 64 apart: each row step of a
//                      workgroup reads 4 KB in a run (grid x over 256-vec4 column blocks, y = o);
//   l2_scale_rows4     y = x / max(n, eps) row by row (grid x over 256-vec4 blocks of a row,
//                      (y, z) folded = the row o·A + a): contiguous, 4 vec4 per lane;
//   l2_column_dots4    k[o, i] = (Σ_a x·g)/n³ where n > eps, else 0 (as l2_column_norms4);
//   l2_backward_apply4 gx = g·inv − x·k, inv = 1/n where n > eps, else 1/eps (as l2_scale_rows4).
// Same sums in the same order and the same per-element expressions as the `4` entries, so the
// results are theirs bit for bit.
// Launched by src/ops/loss.rs (l2_normalize) and src/ops/l2_normalize_wide.rs.

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

// ---- The wide entries ------------------------------------------------------------------------

// Column norms out (l2_column_norms4), the rows' output (l2_scale_rows4), the backward's
// per-column k (written by l2_column_dots4, read by l2_backward_apply4) and its gx.
@group(0) @binding(2) var<storage, read_write> cn_norms4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> sr_y4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> cd_k4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> ba_k4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ba_gx4: array<vec4<f32>>;

// Column c of block wg.x for lane lid and t ∈ [0, 4): 64 apart, so each of the four loads of a
// row step is one 1 KB run across the workgroup.
fn wide_column(wgx: u32, lid: u32, t: u32) -> u32 {
    return wgx * 256u + t * 64u + lid;
}

@compute @workgroup_size(64)
fn l2_column_norms4(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let inner4 = p.inner / 4u;
    let o = wg.y;
    let base = o * p.axis_len * inner4;
    var sq0 = vec4<f32>(0.0);
    var sq1 = vec4<f32>(0.0);
    var sq2 = vec4<f32>(0.0);
    var sq3 = vec4<f32>(0.0);
    let c0 = wide_column(wg.x, lid, 0u);
    let c1 = wide_column(wg.x, lid, 1u);
    let c2 = wide_column(wg.x, lid, 2u);
    let c3 = wide_column(wg.x, lid, 3u);
    if (c3 < inner4) {
        for (var a = 0u; a < p.axis_len; a += 1u) {
            let row = base + a * inner4;
            let v0 = x4[row + c0];
            let v1 = x4[row + c1];
            let v2 = x4[row + c2];
            let v3 = x4[row + c3];
            sq0 += v0 * v0;
            sq1 += v1 * v1;
            sq2 += v2 * v2;
            sq3 += v3 * v3;
        }
    } else {
        // The last block: only the columns that exist.
        for (var a = 0u; a < p.axis_len; a += 1u) {
            let row = base + a * inner4;
            if (c0 < inner4) { let v = x4[row + c0]; sq0 += v * v; }
            if (c1 < inner4) { let v = x4[row + c1]; sq1 += v * v; }
            if (c2 < inner4) { let v = x4[row + c2]; sq2 += v * v; }
        }
    }
    let out = o * inner4;
    if (c0 < inner4) { cn_norms4[out + c0] = sqrt(sq0); }
    if (c1 < inner4) { cn_norms4[out + c1] = sqrt(sq1); }
    if (c2 < inner4) { cn_norms4[out + c2] = sqrt(sq2); }
    if (c3 < inner4) { cn_norms4[out + c3] = sqrt(sq3); }
}

@compute @workgroup_size(64)
fn l2_scale_rows4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let inner4 = p.inner / 4u;
    let row = wg.y + wg.z * nwg.y;
    if (row >= p.outer * p.axis_len) { return; }
    let start = row * inner4;
    let line = (row / p.axis_len) * inner4;
    for (var t = 0u; t < 4u; t += 1u) {
        let c = wide_column(wg.x, lid, t);
        if (c < inner4) {
            let inv = 1.0 / max(saved_norms4[line + c], vec4<f32>(p.eps));
            sr_y4[start + c] = x4[start + c] * inv;
        }
    }
}

// k for one vec4 column from its dot and norm (0 where n <= eps), as l2_normalize_backward4.
fn wide_k(dot: vec4<f32>, n: vec4<f32>) -> vec4<f32> {
    let above = n > vec4<f32>(p.eps);
    let inv = select(vec4<f32>(1.0 / p.eps), 1.0 / n, above);
    return select(vec4<f32>(0.0), dot * inv * inv * inv, above);
}

@compute @workgroup_size(64)
fn l2_column_dots4(@builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let inner4 = p.inner / 4u;
    let o = wg.y;
    let base = o * p.axis_len * inner4;
    var d0 = vec4<f32>(0.0);
    var d1 = vec4<f32>(0.0);
    var d2 = vec4<f32>(0.0);
    var d3 = vec4<f32>(0.0);
    let c0 = wide_column(wg.x, lid, 0u);
    let c1 = wide_column(wg.x, lid, 1u);
    let c2 = wide_column(wg.x, lid, 2u);
    let c3 = wide_column(wg.x, lid, 3u);
    if (c3 < inner4) {
        for (var a = 0u; a < p.axis_len; a += 1u) {
            let row = base + a * inner4;
            d0 += x4[row + c0] * g4[row + c0];
            d1 += x4[row + c1] * g4[row + c1];
            d2 += x4[row + c2] * g4[row + c2];
            d3 += x4[row + c3] * g4[row + c3];
        }
    } else {
        for (var a = 0u; a < p.axis_len; a += 1u) {
            let row = base + a * inner4;
            if (c0 < inner4) { d0 += x4[row + c0] * g4[row + c0]; }
            if (c1 < inner4) { d1 += x4[row + c1] * g4[row + c1]; }
            if (c2 < inner4) { d2 += x4[row + c2] * g4[row + c2]; }
        }
    }
    let out = o * inner4;
    if (c0 < inner4) { cd_k4[out + c0] = wide_k(d0, saved_norms4[out + c0]); }
    if (c1 < inner4) { cd_k4[out + c1] = wide_k(d1, saved_norms4[out + c1]); }
    if (c2 < inner4) { cd_k4[out + c2] = wide_k(d2, saved_norms4[out + c2]); }
    if (c3 < inner4) { cd_k4[out + c3] = wide_k(d3, saved_norms4[out + c3]); }
}

// gx = g·inv − x·k for one vec4 column, inv = 1/n where n > eps, else 1/eps.
fn wide_gx(g: vec4<f32>, x: vec4<f32>, n: vec4<f32>, k: vec4<f32>) -> vec4<f32> {
    let inv = select(vec4<f32>(1.0 / p.eps), 1.0 / n, n > vec4<f32>(p.eps));
    return g * inv - x * k;
}

@compute @workgroup_size(64)
fn l2_backward_apply4(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let inner4 = p.inner / 4u;
    let row = wg.y + wg.z * nwg.y;
    if (row >= p.outer * p.axis_len) { return; }
    let start = row * inner4;
    let line = (row / p.axis_len) * inner4;
    for (var t = 0u; t < 4u; t += 1u) {
        let c = wide_column(wg.x, lid, t);
        if (c < inner4) {
            let j = start + c;
            ba_gx4[j] = wide_gx(g4[j], x4[j], saved_norms4[line + c], ba_k4[line + c]);
        }
    }
}

// l2_backward_apply_in_place4: l2_backward_apply4 with g read from and gx written to one buffer
// (ip_gx4 holds g on entry): bindings 1 x, 2 norms, 3 k (read), 4 g → gx (read_write). Used by
// normalized_linear (src/ops/normalized_linear.rs), whose g is its own fresh xᵀG product: no
// second [A, I] buffer, and each element is read and rewritten by the same lane.
@group(0) @binding(3) var<storage, read> ip_k4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> ip_gx4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn l2_backward_apply_in_place4(@builtin(workgroup_id) wg: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let inner4 = p.inner / 4u;
    let row = wg.y + wg.z * nwg.y;
    if (row >= p.outer * p.axis_len) { return; }
    let start = row * inner4;
    let line = (row / p.axis_len) * inner4;
    for (var t = 0u; t < 4u; t += 1u) {
        let c = wide_column(wg.x, lid, t);
        if (c < inner4) {
            let j = start + c;
            ip_gx4[j] = wide_gx(ip_gx4[j], x4[j], saved_norms4[line + c], ip_k4[line + c]);
        }
    }
}
