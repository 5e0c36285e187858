//! DRR reference in f64: line integrals of a volume along explicit rays, and their adjoint.
//!
//! Written independently of the GPU kernels: Siddon here is the original formulation (collect
//! every plane crossing, sort, and look up the voxel at each segment's midpoint) rather than an
//! incremental walk; trilinear builds explicit per-ray weight lists. Rays are given as world
//! endpoints `(a, b)` in mm (see src/drr/geometry.rs); the volume is `[D, H, W] = [z, y, x]` with
//! voxel (x, y, z) centred at integer index coordinates; `inv` maps world mm → index (3×4 rows).
//! Pose gradients are checked against central finite differences of these functions.

use super::Array;

pub type Vec3 = [f64; 3];

/// Which discretisation of the line integral.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RefProjector {
    Siddon,
    /// Samples at s_k = k·step_mm from the source, zero-padded trilinear interpolation.
    Trilinear {
        step_mm: f64,
    },
}

fn to_index(inv: &[[f64; 4]; 3], w: Vec3) -> Vec3 {
    std::array::from_fn(|r| inv[r][0] * w[0] + inv[r][1] * w[1] + inv[r][2] * w[2] + inv[r][3])
}

fn norm(v: Vec3) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// `(flat voxel index, weight)` pairs with `P(ray) = Σ weight · vol[index]`.
pub fn ray_weights(
    dims: [usize; 3],
    inv: &[[f64; 4]; 3],
    a_w: Vec3,
    b_w: Vec3,
    projector: RefProjector,
) -> Vec<(usize, f64)> {
    let a = to_index(inv, a_w);
    let b = to_index(inv, b_w);
    let d: Vec3 = std::array::from_fn(|k| b[k] - a[k]);
    let len = norm(std::array::from_fn(|k| b_w[k] - a_w[k]));
    let n = [dims[2], dims[1], dims[0]]; // (nx, ny, nz)
    let flat = |x: usize, y: usize, z: usize| (z * dims[1] + y) * dims[2] + x;
    match projector {
        RefProjector::Siddon => {
            // Box [−½, n − ½] per axis; the ray's parameter interval inside it.
            let (mut t0, mut t1) = (0.0f64, 1.0f64);
            for k in 0..3 {
                let (lo, hi) = (-0.5, n[k] as f64 - 0.5);
                if d[k] != 0.0 {
                    let (ta, tb) = ((lo - a[k]) / d[k], (hi - a[k]) / d[k]);
                    t0 = t0.max(ta.min(tb));
                    t1 = t1.min(ta.max(tb));
                } else if a[k] < lo || a[k] > hi {
                    return Vec::new();
                }
            }
            if t0 >= t1 {
                return Vec::new();
            }
            // Every plane crossing inside (t0, t1), sorted; segments between consecutive ones.
            let mut ts = vec![t0, t1];
            for k in 0..3 {
                if d[k] == 0.0 {
                    continue;
                }
                for i in 0..=n[k] {
                    let t = (i as f64 - 0.5 - a[k]) / d[k];
                    if t > t0 && t < t1 {
                        ts.push(t);
                    }
                }
            }
            ts.sort_by(|x, y| x.total_cmp(y));
            let mut out = Vec::new();
            for w in ts.windows(2) {
                let dt = w[1] - w[0];
                if dt <= 0.0 {
                    continue;
                }
                let mid = 0.5 * (w[0] + w[1]);
                let idx: Vec<i64> = (0..3)
                    .map(|k| (a[k] + mid * d[k] + 0.5).floor() as i64)
                    .collect();
                if (0..3).all(|k| idx[k] >= 0 && (idx[k] as usize) < n[k]) {
                    out.push((
                        flat(idx[0] as usize, idx[1] as usize, idx[2] as usize),
                        dt * len,
                    ));
                }
            }
            out
        }
        RefProjector::Trilinear { step_mm } => {
            let mut out = Vec::new();
            let n_samples = (len / step_mm).floor() as usize;
            for k in 0..=n_samples {
                let t = k as f64 * step_mm / len;
                let p: Vec3 = std::array::from_fn(|j| a[j] + t * d[j]);
                let base: Vec<i64> = p.iter().map(|v| v.floor() as i64).collect();
                for corner in 0..8 {
                    let off = [corner & 1, (corner >> 1) & 1, (corner >> 2) & 1];
                    let v: Vec<i64> = (0..3).map(|j| base[j] + off[j] as i64).collect();
                    if !(0..3).all(|j| v[j] >= 0 && (v[j] as usize) < n[j]) {
                        continue;
                    }
                    let w: f64 = (0..3)
                        .map(|j| (1.0 - (p[j] - v[j] as f64).abs()).max(0.0))
                        .product();
                    if w > 0.0 {
                        out.push((
                            flat(v[0] as usize, v[1] as usize, v[2] as usize),
                            w * step_mm,
                        ));
                    }
                }
            }
            out
        }
    }
}

/// Line integrals of `vol` ([D, H, W]) along each ray.
pub fn project(
    vol: &Array,
    inv: &[[f64; 4]; 3],
    rays: &[(Vec3, Vec3)],
    projector: RefProjector,
) -> Vec<f64> {
    let dims = [vol.shape[0], vol.shape[1], vol.shape[2]];
    rays.iter()
        .map(|&(a, b)| {
            ray_weights(dims, inv, a, b, projector)
                .iter()
                .map(|&(i, w)| w * vol.data[i])
                .sum()
        })
        .collect()
}

/// The adjoint: `Pᵀ g` as a volume [D, H, W] (a ray-driven scatter, fine on the CPU).
pub fn backproject(
    dims: [usize; 3],
    inv: &[[f64; 4]; 3],
    rays: &[(Vec3, Vec3)],
    g: &[f64],
    projector: RefProjector,
) -> Array {
    let mut out = Array::zeros(&dims);
    for (&(a, b), &gv) in rays.iter().zip(g) {
        for (i, w) in ray_weights(dims, inv, a, b, projector) {
            out.data[i] += w * gv;
        }
    }
    out
}
