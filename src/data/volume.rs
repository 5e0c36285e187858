//! A 3-D scalar volume on a grid placed in world space (millimetres, NIfTI's RAS+ frame).
//!
//! Memory order: `data[i + X·(j + Y·k)]` for voxel `(i, j, k)` with `dims = [X, Y, Z]`, i.e. i
//! fastest — the NIfTI on-disk order. Read as a tensor that is `[D, H, W] = [Z, Y, X]`.
//!
//! World position of voxel (i, j, k): `affine · [i, j, k, 1]ᵀ` (mm, x → Right, y → Anterior,
//! z → Superior, as in NIfTI).

use crate::error::{Error, Result};

/// The on-disk element type of a NIfTI file (NIfTI-1 `datatype` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    Uint8,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Float32,
    Float64,
}

/// Every datatype, narrowest first.
pub const ALL_DATATYPES: [Datatype; 8] = [
    Datatype::Uint8,
    Datatype::Int8,
    Datatype::Int16,
    Datatype::Uint16,
    Datatype::Int32,
    Datatype::Uint32,
    Datatype::Float32,
    Datatype::Float64,
];

impl Datatype {
    /// The NIfTI datatype code.
    pub fn code(self) -> i16 {
        match self {
            Datatype::Uint8 => 2,
            Datatype::Int16 => 4,
            Datatype::Int32 => 8,
            Datatype::Uint32 => 768,
            Datatype::Float32 => 16,
            Datatype::Float64 => 64,
            Datatype::Int8 => 256,
            Datatype::Uint16 => 512,
        }
    }

    /// The datatype named `name` (as [`Datatype::name`] spells it), if any.
    pub fn from_name(name: &str) -> Option<Datatype> {
        ALL_DATATYPES.into_iter().find(|d| d.name() == name)
    }

    /// The datatype for a code, or the name of the unsupported one as the error text.
    pub fn from_code(code: i64) -> std::result::Result<Datatype, String> {
        Ok(match code {
            2 => Datatype::Uint8,
            4 => Datatype::Int16,
            8 => Datatype::Int32,
            16 => Datatype::Float32,
            64 => Datatype::Float64,
            256 => Datatype::Int8,
            512 => Datatype::Uint16,
            768 => Datatype::Uint32,
            other => {
                let name = match other {
                    0 => "unknown (0)",
                    1 => "binary (1)",
                    32 => "complex64 (32)",
                    128 => "rgb24 (128)",
                    1024 => "int64 (1024)",
                    1280 => "uint64 (1280)",
                    1536 => "float128 (1536)",
                    1792 => "complex128 (1792)",
                    2048 => "complex256 (2048)",
                    2304 => "rgba32 (2304)",
                    _ => return Err(format!("unknown datatype code {other}")),
                };
                return Err(format!(
                    "unsupported datatype {name}; supported: uint8, int8, int16, uint16, int32, uint32, float32, float64"
                ));
            }
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Int16 | Datatype::Uint16 => 2,
            Datatype::Int32 | Datatype::Uint32 | Datatype::Float32 => 4,
            Datatype::Float64 => 8,
        }
    }

    /// True for the integer types (a labelmap is stored with one of these).
    pub fn is_integer(self) -> bool {
        !matches!(self, Datatype::Float32 | Datatype::Float64)
    }

    /// The range an integer type can hold (None for floats).
    pub fn int_range(self) -> Option<(f64, f64)> {
        match self {
            Datatype::Uint8 => Some((0.0, 255.0)),
            Datatype::Int8 => Some((-128.0, 127.0)),
            Datatype::Int16 => Some((-32768.0, 32767.0)),
            Datatype::Uint16 => Some((0.0, 65535.0)),
            Datatype::Int32 => Some((-2147483648.0, 2147483647.0)),
            Datatype::Uint32 => Some((0.0, 4294967295.0)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Datatype::Uint8 => "uint8",
            Datatype::Int8 => "int8",
            Datatype::Int16 => "int16",
            Datatype::Uint16 => "uint16",
            Datatype::Int32 => "int32",
            Datatype::Uint32 => "uint32",
            Datatype::Float32 => "float32",
            Datatype::Float64 => "float64",
        }
    }
}

impl std::fmt::Display for Datatype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A 4×4 voxel-to-world matrix (mm), row-major.
pub type Affine = [[f64; 4]; 4];

/// The identity affine (1 mm isotropic, axes along x, y, z).
pub const IDENTITY: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// A scalar volume with its world placement. Values are the scaled values
/// (`stored · scl_slope + scl_inter`), kept as f32: exact for every uint8/int16/uint16 value and
/// for int32 up to ±2²⁴; float64 files are rounded to f32.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub data: Vec<f32>,
    /// `[X, Y, Z]` voxels.
    pub dims: [usize; 3],
    /// Voxel size in mm along each voxel axis (the column norms of the affine's 3×3 part).
    pub spacing: [f64; 3],
    pub affine: Affine,
    /// The datatype the file stored (what `write_nifti` uses by default).
    pub datatype: Datatype,
}

impl Volume {
    /// A volume from data in `[X, Y, Z]` order (i fastest) and an affine; spacing is derived.
    pub fn new(
        data: Vec<f32>,
        dims: [usize; 3],
        affine: Affine,
        datatype: Datatype,
    ) -> Result<Volume> {
        // Checked: a wrapped product of crafted dims could equal a short data length.
        let n = crate::util::size::checked_numel("Volume::new", &dims)?;
        if dims.contains(&0) {
            return Err(Error::invalid(
                "Volume::new",
                "non-zero dims",
                format!("{dims:?}"),
            ));
        }
        if data.len() != n {
            return Err(Error::shape("Volume::new", [n], [data.len()]));
        }
        let spacing = spacing_of(&affine);
        if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(
                "Volume::new",
                "an affine with non-zero finite columns",
                format!("voxel sizes {spacing:?}"),
            ));
        }
        Ok(Volume {
            data,
            dims,
            spacing,
            affine,
            datatype,
        })
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Flat index of voxel (i, j, k).
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Value at voxel (i, j, k); None outside the grid.
    pub fn get(&self, i: usize, j: usize, k: usize) -> Option<f32> {
        if i < self.dims[0] && j < self.dims[1] && k < self.dims[2] {
            Some(self.data[self.index(i, j, k)])
        } else {
            None
        }
    }

    /// World position (mm) of voxel coordinates (may be fractional).
    pub fn world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3];
        }
        out
    }

    /// Minimum, maximum and mean (f64 accumulation) of the values.
    pub fn stats(&self) -> (f64, f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        let mut sum = 0.0f64;
        for &v in &self.data {
            let v = v as f64;
            lo = lo.min(v);
            hi = hi.max(v);
            sum += v;
        }
        (lo, hi, sum / self.data.len().max(1) as f64)
    }

    /// The distinct values, sorted (meant for labelmaps).
    pub fn distinct_values(&self) -> Vec<f32> {
        let mut v: Vec<f32> = self.data.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v.dedup();
        v
    }

    /// Whether `other` lies on the same grid (dims, and affine within `tol_mm` per entry).
    pub fn same_grid(&self, other: &Volume, tol_mm: f64) -> bool {
        self.dims == other.dims
            && (0..3)
                .all(|r| (0..4).all(|c| (self.affine[r][c] - other.affine[r][c]).abs() <= tol_mm))
    }
}

/// Column norms of the 3×3 part: the voxel size along each voxel axis.
pub fn spacing_of(affine: &Affine) -> [f64; 3] {
    let mut s = [0.0; 3];
    for (c, sc) in s.iter_mut().enumerate() {
        *sc = (0..3)
            .map(|r| affine[r][c] * affine[r][c])
            .sum::<f64>()
            .sqrt();
    }
    s
}

/// Check that a labelmap lies on the grid of its image; the error names the label file.
pub fn check_label_grid(image: &Volume, label: &Volume, label_path: &str) -> Result<()> {
    if !image.same_grid(label, 1e-3) {
        return Err(Error::BadFile {
            op: "check_label_grid",
            path: label_path.to_string(),
            problem: format!(
                "label grid does not match its image: label dims {:?} spacing {:?} affine {:?}, image dims {:?} spacing {:?} affine {:?}",
                label.dims, label.spacing, label.affine, image.dims, image.spacing, image.affine
            ),
        });
    }
    Ok(())
}
