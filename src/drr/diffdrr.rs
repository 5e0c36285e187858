//! Porting from DiffDRR 0.6.1: its camera, orientation frames and pose arguments, mapped exactly
//! onto our [`Geometry`], [`VolumeGrid`] and [`Pose`] (the guide: docs/diffdrr-porting.md).
//!
//! # DiffDRR's model (diffdrr/detector.py, drr.py, pose.py, data.py)
//!
//! - Detector frame `p`: the source at the origin, pixel `(i, j)` (row, column) at
//!   `p = (delx·s_j + x0, dely·t_i + y0, sdd)` with `t_i = (H−1)/2 − i` and
//!   `s_j = (W−1)/2 − j` when `reverse_x_axis` (the DRR default), `s_j = j − (W−1)/2` otherwise.
//! - Orientation: a fixed matrix `O` applied first: "AP" `(x, y, z) ↦ (x, −z, y)`, "PA"
//!   `(x, y, z) ↦ (x, z, y)` (a reflection), none = identity.
//! - Pose `(rotation, translation)` with `R = R_{c0}(a0)·R_{c1}(a1)·R_{c2}(a2)` for the Euler
//!   convention `c0c1c2` (e.g. "ZXY": `[θz, θx, θy]`), and the **rotated** translation: the
//!   extrinsic matrix is `[R | R·t]`, so `world_d = R·(O·p + t)` (the source sits at `R·t`).
//! - World: the volume's NIfTI affine `A` (RAS), shifted so the volume centre `C = A·(n−1)/2` is
//!   the origin (`center_volume=True`, the default): `world_d = A·idx − C`.
//! - No source-to-isocentre distance: it is whatever `R·t` puts there.
//!
//! # The mapping
//!
//! Our camera (src/drr/geometry.rs) has the source at `(0, −sid, 0)` and pixel `(i, j)` at
//! `(x_j, sdd − sid, z_i)`, so `c = G·p + s` with `s = (0, −sid, 0)` and
//! `G = [[σ, 0, 0], [0, 0, 1], [0, 1, 0]]`, `σ = −1` if `reverse_x_axis` else `+1`; the
//! principal point maps to `principal_mm = [−y0, σ·x0]`. In a world `world_o = M·world_d` (M
//! orthogonal, see below) DiffDRR's ray is ours when
//!
//! ```text
//! R_o = M·R·O·Gᵀ            (our rotation, as ZXY angles)
//! t_o = M·R·t − R_o·s       (our translation; isocentre = the world origin)
//! grid = M·(A − C)          (our volume affine)
//! ```
//!
//! `det R_o = det M · det O · (−σ)`. With "AP" and `reverse_x_axis = true` (DiffDRR's defaults)
//! or "PA" without it, `M = I` and `R_o` is a rotation. The other two combinations render a
//! mirror image, which no rotation gives; there `M = diag(−1, 1, 1)` mirrors the world (the
//! volume's affine) left-right, which leaves every line integral unchanged. `sid` is a free
//! gauge: every value renders the same images, it only moves the point our rotations pivot
//! about. Choose DiffDRR's source distance (e.g. 850 for `translation = (0, 850, 0)`) so that our
//! pose rotates about the volume centre, as registration expects.
//!
//! DiffDRR's Siddon integrates the whole line through source and pixel, ours the segment: where
//! the detector cuts through the volume, [`Scene::reach_past_volume`] lengthens our rays.
//! DiffDRR's trilinear renderer samples `n_points` (500) parameter values spread over one range
//! shared by the whole batch; ours samples every `step_mm` from the source. The same images to
//! ~1e-3 need the same samples, which the two parametrisations do not share; with
//! [`trilinear_step_mm`] (DiffDRR's spacing) they agree to ~5e-4.

use super::geometry::{mat_mul, mat_vec, Beam, Detector, Geometry, Pose, Vec3, VolumeGrid};
use crate::error::{Error, Result};

type Mat3 = [[f64; 3]; 3];

/// DiffDRR's `orientation` argument of `diffdrr.data.read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    /// "AP" (DiffDRR's default): `(x, y, z) ↦ (x, −z, y)`.
    Ap,
    /// "PA": `(x, y, z) ↦ (x, z, y)`.
    Pa,
    /// `None`: the identity.
    Identity,
}

impl Orientation {
    fn matrix(self) -> Mat3 {
        match self {
            Orientation::Ap => [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
            Orientation::Pa => [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
            Orientation::Identity => IDENTITY,
        }
    }
}

const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// An axis of an Euler convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    X,
    Y,
    Z,
}

/// A DiffDRR (PyTorch3D) Euler convention: `R = R_{c0}(a0)·R_{c1}(a1)·R_{c2}(a2)`, angles in
/// the order of the letters. DiffDRR has no default; "ZXY" is the one its tutorials use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EulerConvention(pub [Axis; 3]);

impl EulerConvention {
    pub const ZXY: EulerConvention = EulerConvention([Axis::Z, Axis::X, Axis::Y]);

    /// From DiffDRR's three-letter string ("ZXY", "XYZ", "ZYZ", …); the middle letter must
    /// differ from its neighbours, as DiffDRR requires.
    pub fn parse(convention: &str) -> Result<EulerConvention> {
        let op = "diffdrr euler convention";
        let bad = || {
            Error::invalid(
                op,
                "three letters from X, Y, Z with the middle one unlike its neighbours",
                format!("{convention:?}"),
            )
        };
        let axes: Vec<Axis> = convention
            .chars()
            .map(|c| match c {
                'X' => Ok(Axis::X),
                'Y' => Ok(Axis::Y),
                'Z' => Ok(Axis::Z),
                _ => Err(bad()),
            })
            .collect::<Result<_>>()?;
        if axes.len() != 3 || axes[1] == axes[0] || axes[1] == axes[2] {
            return Err(bad());
        }
        Ok(EulerConvention([axes[0], axes[1], axes[2]]))
    }

    /// The rotation matrix of `angles_rad` (radians, in the order of the letters).
    pub fn matrix(self, angles_rad: Vec3) -> Mat3 {
        let elementary = |axis: Axis, a: f64| -> Mat3 {
            let (s, c) = a.sin_cos();
            match axis {
                Axis::X => [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
                Axis::Y => [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
                Axis::Z => [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
            }
        };
        let [a, b, c] = self.0;
        mat_mul(
            &mat_mul(&elementary(a, angles_rad[0]), &elementary(b, angles_rad[1])),
            &elementary(c, angles_rad[2]),
        )
    }
}

/// DiffDRR's `DRR(subject, sdd, height, delx, width, dely, x0, y0, reverse_x_axis=…)` camera and
/// the `orientation` its subject was read with. Lengths in mm (DiffDRR's "units length").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    pub sdd_mm: f64,
    /// Rows (DiffDRR `height`) and columns (`width`).
    pub height: usize,
    pub width: usize,
    /// Column pitch (DiffDRR `delx`) and row pitch (`dely`), mm.
    pub delx_mm: f64,
    pub dely_mm: f64,
    /// Principal point offsets (DiffDRR `x0`, `y0`), mm.
    pub x0_mm: f64,
    pub y0_mm: f64,
    pub reverse_x_axis: bool,
    pub orientation: Orientation,
}

impl Camera {
    /// DiffDRR's defaults for the rest: square panel and pixels, no principal offset,
    /// `reverse_x_axis = True`, orientation "AP".
    pub fn new(sdd_mm: f64, height: usize, delx_mm: f64) -> Camera {
        Camera {
            sdd_mm,
            height,
            width: height,
            delx_mm,
            dely_mm: delx_mm,
            x0_mm: 0.0,
            y0_mm: 0.0,
            reverse_x_axis: true,
            orientation: Orientation::Ap,
        }
    }
}

/// A DiffDRR render setup in our terms: render `grid` (the volume's values unchanged, in the
/// same `[D, H, W]` order) with `geometry` and the poses from [`Scene::pose`].
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    /// DiffDRR's world: the volume centred (when asked) and mirrored when `mirrored`.
    pub grid: VolumeGrid,
    pub geometry: Geometry,
    /// Whether the world is mirrored in x (`M = diag(−1, 1, 1)`): the camera renders a mirror
    /// image of ours ("AP" without `reverse_x_axis`, or "PA" with it).
    pub mirrored: bool,
    /// `O·Gᵀ`: our camera axes in DiffDRR's oriented frame.
    camera_to_diffdrr: Mat3,
    sid_mm: f64,
}

impl Scene {
    /// The scene for a volume whose grid came from its NIfTI file (`pretrain::read_ct`, the
    /// affine DiffDRR's torchio reader sees), DiffDRR's camera, our source-to-isocentre gauge
    /// `sid_mm` (see the module docs: any finite value gives the same images), and DiffDRR's
    /// `center_volume` (its default is true).
    pub fn new(
        grid: &VolumeGrid,
        camera: &Camera,
        sid_mm: f64,
        center_volume: bool,
    ) -> Result<Scene> {
        let op = "diffdrr scene";
        grid.validate(op)?;
        if !sid_mm.is_finite() {
            return Err(Error::invalid(
                op,
                "a finite source-to-isocentre gauge (mm)",
                sid_mm,
            ));
        }
        let sigma = if camera.reverse_x_axis { -1.0 } else { 1.0 };
        let g: Mat3 = [[sigma, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]];
        let o = camera.orientation.matrix();
        let det_o = det(&o);
        // det R_o = det M · det O · det G, det G = −σ; mirror the world where that is −1.
        let mirrored = det_o * -sigma < 0.0;
        let centre = if center_volume {
            grid.centre()
        } else {
            [0.0; 3]
        };
        let mut affine = grid.affine;
        for (r, row) in affine.iter_mut().enumerate() {
            row[3] -= centre[r];
            if mirrored && r == 0 {
                row.iter_mut().for_each(|v| *v = -*v);
            }
        }
        let geometry = Geometry {
            detector: Detector {
                height: camera.height,
                width: camera.width,
                pixel_mm: [camera.dely_mm, camera.delx_mm],
                principal_mm: [-camera.y0_mm, sigma * camera.x0_mm],
            },
            sdd_mm: camera.sdd_mm,
            sid_mm,
            beam: Beam::Cone,
            isocentre: Some([0.0; 3]),
        };
        geometry.validate(op)?;
        Ok(Scene {
            grid: VolumeGrid {
                dims: grid.dims,
                affine,
            },
            geometry,
            mirrored,
            camera_to_diffdrr: mat_mul(&o, &transpose(&g)),
            sid_mm,
        })
    }

    /// Make every ray reach past the volume, as DiffDRR's Siddon rays do.
    ///
    /// DiffDRR's Siddon sums over **all** plane crossings of the line through the source and the
    /// pixel (its `alphas` are not clipped to `[0, 1]`), so where the detector plane cuts through
    /// the volume (LIDC: 180 mm half-depth, detector 170 mm past the isocentre at sdd 1020 /
    /// translation 850) it integrates beyond the pixel too; our rays end at the pixel. Scaling the
    /// detector about the source by `k` (sdd, pitches and principal point × k) keeps every ray's
    /// direction and pixel and only lengthens it; `k = (d + r)/sdd` with `d` the largest source
    /// distance from the world origin (`|R·t|` = `|t|` of the DiffDRR poses) and `r` the largest
    /// distance of a volume corner from it puts every pixel past the volume. DiffDRR's trilinear
    /// renderer clips its samples to the segment: do not call this for it. (A source inside the
    /// volume is also integrated behind by DiffDRR's Siddon; not reproduced.)
    pub fn reach_past_volume(&mut self, max_source_distance_mm: f64) -> Result<()> {
        if !(max_source_distance_mm.is_finite() && max_source_distance_mm >= 0.0) {
            return Err(Error::invalid(
                "diffdrr scene reach",
                "a finite non-negative source distance (mm)",
                max_source_distance_mm,
            ));
        }
        let [d, h, w] = self.grid.dims;
        let r = (0..8)
            .map(|k| {
                let idx = [
                    if k & 1 == 0 { -0.5 } else { w as f64 - 0.5 },
                    if k & 2 == 0 { -0.5 } else { h as f64 - 0.5 },
                    if k & 4 == 0 { -0.5 } else { d as f64 - 0.5 },
                ];
                let p = self.grid.to_world(idx);
                (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt()
            })
            .fold(0.0, f64::max);
        let k = ((max_source_distance_mm + r) * 1.01 / self.geometry.sdd_mm).max(1.0);
        let det = &mut self.geometry.detector;
        det.pixel_mm = det.pixel_mm.map(|v| v * k);
        det.principal_mm = det.principal_mm.map(|v| v * k);
        self.geometry.sdd_mm *= k;
        Ok(())
    }

    /// Our pose for DiffDRR's `drr(rotation, translation, parameterization="euler_angles",
    /// convention=…)` (radians; DiffDRR's `degrees=True` angles are converted by the caller).
    pub fn pose(
        &self,
        convention: EulerConvention,
        rotation_rad: Vec3,
        translation_mm: Vec3,
    ) -> Result<Pose> {
        validate_finite("diffdrr pose", &rotation_rad, &translation_mm)?;
        self.pose_from_matrix(convention.matrix(rotation_rad), translation_mm)
    }

    /// Our pose for a DiffDRR pose given as a rotation matrix `R` (rows) and its translation
    /// argument `t` (DiffDRR's `convert` places the source at `R·t`).
    pub fn pose_from_matrix(&self, rotation: Mat3, translation_mm: Vec3) -> Result<Pose> {
        let op = "diffdrr pose";
        validate_finite(op, &rotation.concat(), &translation_mm)?;
        // R must be a rotation: Rᵀ R = I and det R = 1 (to 1e-6).
        let rtr = mat_mul(&transpose(&rotation), &rotation);
        let off = (0..9)
            .map(|k| (rtr[k / 3][k % 3] - IDENTITY[k / 3][k % 3]).abs())
            .fold(0.0, f64::max);
        if off > 1e-6 || (det(&rotation) - 1.0).abs() > 1e-6 {
            return Err(Error::invalid(
                op,
                "a rotation matrix (orthonormal, determinant 1)",
                format!("{rotation:?}"),
            ));
        }
        let mirror = |v: Vec3| {
            if self.mirrored {
                [-v[0], v[1], v[2]]
            } else {
                v
            }
        };
        let mut r_o = mat_mul(&rotation, &self.camera_to_diffdrr);
        if self.mirrored {
            r_o[0] = r_o[0].map(|v| -v);
        }
        // t_o = M·R·t − R_o·s, s = (0, −sid, 0)
        let source = mirror(mat_vec(&rotation, translation_mm));
        let rs = mat_vec(&r_o, [0.0, -self.sid_mm, 0.0]);
        let pose = Pose::from_rotation_matrix(
            &r_o,
            [source[0] - rs[0], source[1] - rs[1], source[2] - rs[2]],
        );
        pose.validate(op)?;
        Ok(pose)
    }
}

fn validate_finite(op: &'static str, a: &[f64], b: &[f64]) -> Result<()> {
    if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
        return Err(Error::invalid(op, "finite rotation and translation", v));
    }
    Ok(())
}

fn transpose(m: &Mat3) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| m[c][r]))
}

fn det(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// The mean spacing (mm) of DiffDRR 0.6.1's trilinear samples for our `geometry` and `pose` (of
/// a [`Scene`], or any): `n_points` values of α ∈ [α_min, α_max], where α_min/α_max are the extremes over all
/// rays of where each ray (α ∈ [0, 1] from source to pixel) enters and leaves the box of planes
/// `[−½, n + ½]` in voxel index (diffdrr/renderers.py `_get_alpha_minmax`); ray r's samples are
/// `L_r·(α_max − α_min)/(n_points − 1)` mm apart. Our trilinear projector with this step takes
/// the same samples per mm as DiffDRR's (not the same positions): equal work in benchmarks, and
/// images within ~5e-4 relative L2 of DiffDRR's (tests/drr_diffdrr.rs).
pub fn trilinear_step_mm(
    grid: &VolumeGrid,
    geometry: &Geometry,
    pose: &Pose,
    n_points: usize,
) -> Result<f64> {
    if n_points < 2 {
        return Err(Error::invalid(
            "diffdrr trilinear step",
            "at least 2 samples per ray",
            n_points,
        ));
    }
    let inv = grid.inverse_affine("diffdrr trilinear step")?;
    let to_index = |w: [f64; 3]| -> [f64; 3] {
        std::array::from_fn(|r| inv[r][0] * w[0] + inv[r][1] * w[1] + inv[r][2] * w[2] + inv[r][3])
    };
    let [d, h, w] = grid.dims;
    let n = [w as f64, h as f64, d as f64];
    let rays = geometry.world_rays(grid, pose);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut length_sum = 0.0;
    for (a_w, b_w) in &rays {
        let (a, b) = (to_index(*a_w), to_index(*b_w));
        let (mut t0, mut t1) = (f64::NEG_INFINITY, f64::INFINITY);
        for k in 0..3 {
            let dk = b[k] - a[k] + 1e-8;
            let (ta, tb) = ((-0.5 - a[k]) / dk, (n[k] + 0.5 - a[k]) / dk);
            t0 = t0.max(ta.min(tb));
            t1 = t1.min(ta.max(tb));
        }
        lo = lo.min(t0.max(0.0));
        hi = hi.max(t1.min(1.0));
        length_sum += (0..3)
            .map(|k| (b_w[k] - a_w[k]).powi(2))
            .sum::<f64>()
            .sqrt();
    }
    let mean_length = length_sum / rays.len() as f64;
    Ok(mean_length * (hi - lo) / (n_points as f64 - 1.0))
}
