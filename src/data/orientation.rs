//! Axis orientation codes and exact reorientation by axis permutation and flip.
//!
//! The code of a voxel axis is the world direction it points to (nibabel's `aff2axcodes`
//! convention): NIfTI world is RAS+ (x → Right, y → Anterior, z → Superior), so a column of the
//! affine along +x is "R" and along −x is "L". The LIDC sample CT, whose affine has
//! `diag(−0.703, 0.703, 2.5)`, is "LAS".
//!
//! Canonical order is **RAS** (NIfTI's own frame, as nibabel's `as_closest_canonical`): after
//! [`to_canonical`] voxel axis i runs to the Right, j Anterior, k Superior, and the affine's 3×3 part
//! has a positive diagonal (exactly diagonal for non-oblique scans). Reorienting moves voxels only
//! (no interpolation) and updates the affine so every voxel keeps its world position; the
//! [`Reorientation`] returned is inverted to put a prediction back on the file's own grid before
//! writing.

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::volume::{Affine, Volume};
use crate::error::{Error, Result};

/// Canonical axis codes used by the pipeline.
pub const CANONICAL: [char; 3] = ['R', 'A', 'S'];

const POSITIVE: [char; 3] = ['R', 'A', 'S'];
const NEGATIVE: [char; 3] = ['L', 'P', 'I'];

/// All six permutations of three axes.
const PERMS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

/// The world axis (0 = x, 1 = y, 2 = z) and sign (+1/−1) of a code letter.
fn letter_axis(c: char) -> Option<(usize, f64)> {
    let c = c.to_ascii_uppercase();
    if let Some(w) = POSITIVE.iter().position(|&p| p == c) {
        return Some((w, 1.0));
    }
    NEGATIVE.iter().position(|&p| p == c).map(|w| (w, -1.0))
}

/// The axis codes of an affine. Each voxel axis is matched to a distinct world axis, choosing the
/// assignment with the largest total |direction cosine| (so oblique scans get their closest
/// orthogonal code and two voxel axes never claim the same world axis).
pub fn axis_codes(affine: &Affine) -> [char; 3] {
    let mut cos = [[0.0f64; 3]; 3]; // cos[c][w]: direction cosine of voxel axis c along world axis w
    for (c, row) in cos.iter_mut().enumerate() {
        let norm = (0..3)
            .map(|w| affine[w][c] * affine[w][c])
            .sum::<f64>()
            .sqrt();
        for (w, v) in row.iter_mut().enumerate() {
            *v = if norm > 0.0 { affine[w][c] / norm } else { 0.0 };
        }
    }
    let best = PERMS
        .iter()
        .max_by(|p, q| {
            let s = |p: &[usize; 3]| (0..3).map(|c| cos[c][p[c]].abs()).sum::<f64>();
            s(p).total_cmp(&s(q))
        })
        .copied()
        .unwrap_or([0, 1, 2]);
    let mut out = ['?'; 3];
    for c in 0..3 {
        let w = best[c];
        out[c] = if cos[c][w] >= 0.0 {
            POSITIVE[w]
        } else {
            NEGATIVE[w]
        };
    }
    out
}

/// The axis codes as a string, e.g. "LAS".
pub fn orientation_code(affine: &Affine) -> String {
    axis_codes(affine).iter().collect()
}

/// Parse a code such as "LPS" into three letters naming three distinct world axes.
pub fn parse_codes(code: &str) -> Result<[char; 3]> {
    let letters: Vec<char> = code.chars().map(|c| c.to_ascii_uppercase()).collect();
    let ok = letters.len() == 3 && {
        let axes: Vec<Option<(usize, f64)>> = letters.iter().map(|&c| letter_axis(c)).collect();
        axes.iter().all(|a| a.is_some()) && {
            let mut w: Vec<usize> = axes.iter().flatten().map(|a| a.0).collect();
            w.sort();
            w == [0, 1, 2]
        }
    };
    if !ok {
        return Err(Error::invalid(
            "parse_codes",
            "three letters from R/L, A/P, S/I, one per world axis",
            code,
        ));
    }
    Ok([letters[0], letters[1], letters[2]])
}

/// A permutation and flip of voxel axes: old axis `a` becomes new axis `new_axis[a]`, reversed
/// when `flip[a]`. Old index `o_a = flip[a] ? dims_a − 1 − n_{new_axis[a]} : n_{new_axis[a]}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reorientation {
    pub new_axis: [usize; 3],
    pub flip: [bool; 3],
    /// Dims of the grid the transform applies to.
    pub old_dims: [usize; 3],
}

impl Reorientation {
    /// The transform taking a volume with `affine` and `dims` to the axis codes `target`.
    pub fn to_codes(affine: &Affine, dims: [usize; 3], target: [char; 3]) -> Reorientation {
        let from = axis_codes(affine);
        let mut new_axis = [0; 3];
        let mut flip = [false; 3];
        for a in 0..3 {
            // Both unwraps are on letters produced by axis_codes / parse_codes; fall back to identity.
            let (w, s) = letter_axis(from[a]).unwrap_or((a, 1.0));
            let b = (0..3)
                .find(|&b| letter_axis(target[b]).map(|t| t.0) == Some(w))
                .unwrap_or(a);
            let ts = letter_axis(target[b]).map(|t| t.1).unwrap_or(1.0);
            new_axis[a] = b;
            flip[a] = s != ts;
        }
        Reorientation {
            new_axis,
            flip,
            old_dims: dims,
        }
    }

    /// True when the transform changes nothing.
    pub fn is_identity(&self) -> bool {
        self.new_axis == [0, 1, 2] && self.flip == [false; 3]
    }

    /// Dims after the transform.
    pub fn new_dims(&self) -> [usize; 3] {
        let mut d = [0; 3];
        for a in 0..3 {
            d[self.new_axis[a]] = self.old_dims[a];
        }
        d
    }

    /// The transform undoing this one.
    pub fn inverse(&self) -> Reorientation {
        let mut new_axis = [0; 3];
        let mut flip = [false; 3];
        for a in 0..3 {
            new_axis[self.new_axis[a]] = a;
            flip[self.new_axis[a]] = self.flip[a];
        }
        Reorientation {
            new_axis,
            flip,
            old_dims: self.new_dims(),
        }
    }

    /// The affine of the new grid: `A_new = A_old · T`, where T maps new voxel coordinates to old.
    pub fn apply_affine(&self, affine: &Affine) -> Affine {
        let mut t = [[0.0f64; 4]; 4];
        t[3][3] = 1.0;
        for a in 0..3 {
            let b = self.new_axis[a];
            if self.flip[a] {
                t[a][b] = -1.0;
                t[a][3] = self.old_dims[a] as f64 - 1.0;
            } else {
                t[a][b] = 1.0;
            }
        }
        let mut out = [[0.0f64; 4]; 4];
        for r in 0..4 {
            for c in 0..4 {
                out[r][c] = (0..4).map(|k| affine[r][k] * t[k][c]).sum();
            }
        }
        out
    }

    /// Move the voxels of `vol` (whose dims must be `old_dims`) and update its affine.
    pub fn apply(&self, vol: &Volume) -> Result<Volume> {
        if vol.dims != self.old_dims {
            return Err(Error::shape(
                "Reorientation::apply",
                self.old_dims,
                vol.dims,
            ));
        }
        let nd = self.new_dims();
        let od = self.old_dims;
        // Old flat index as a function of the new index: o = base + Σ_w n_w · step[w].
        let ostride = [1usize, od[0], od[0] * od[1]];
        let mut step = [0isize; 3];
        let mut base = 0isize;
        for a in 0..3 {
            let b = self.new_axis[a];
            if self.flip[a] {
                step[b] = -(ostride[a] as isize);
                base += ((od[a] - 1) * ostride[a]) as isize;
            } else {
                step[b] = ostride[a] as isize;
            }
        }
        let mut data = Vec::with_capacity(vol.data.len());
        for k in 0..nd[2] {
            for j in 0..nd[1] {
                let row = base + j as isize * step[1] + k as isize * step[2];
                for i in 0..nd[0] {
                    data.push(vol.data[(row + i as isize * step[0]) as usize]);
                }
            }
        }
        let affine = self.apply_affine(&vol.affine);
        Volume::new(data, nd, affine, vol.datatype)
    }
}

/// Reorient to the axis codes `target` (e.g. "LPS"); returns the volume and the transform.
pub fn reorient(vol: &Volume, target: &str) -> Result<(Volume, Reorientation)> {
    let t = parse_codes(target)?;
    let r = Reorientation::to_codes(&vol.affine, vol.dims, t);
    Ok((r.apply(vol)?, r))
}

/// Reorient to the canonical RAS order; `.1.inverse().apply(..)` restores the original grid.
pub fn to_canonical(vol: &Volume) -> Result<(Volume, Reorientation)> {
    let r = Reorientation::to_codes(&vol.affine, vol.dims, CANONICAL);
    Ok((r.apply(vol)?, r))
}

/// Put a canonical-grid volume (e.g. a prediction) back on the original grid that
/// [`to_canonical`] came from, ready for `write_nifti` next to the original file.
pub fn from_canonical(vol: &Volume, r: &Reorientation) -> Result<Volume> {
    r.inverse().apply(vol)
}
