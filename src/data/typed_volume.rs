//! A volume kept in the datatype its file stores: [`TypedVolume`] holds the stored voxels
//! ([`Voxels`], one buffer per element type) and the file's scaling `value = stored · slope +
//! inter`, so an int16 CT takes 2 bytes per voxel and a uint8 label map 1, where the f32 working
//! [`Volume`] takes 4. Reading a file typed and converting only when asked
//! ([`TypedVolume::to_f32_volume`]) is what lets `cads inspect` and `cads convert` handle a file
//! at its own size, and `cads convert` keep the datatype and scaling exactly.
//!
//! Layout and placement are the [`Volume`]'s: `[X, Y, Z]` voxels with X fastest, a RAS+ affine.
//!
//! The f32 values are defined once, in [`TypedVolume::f32_at`]: `(stored · slope + inter) as f32`
//! (without scaling, `stored as f32`): the value the streaming NIfTI reader puts in a [`Volume`],
//! so reading typed then converting gives the same volume bit for bit.

use super::volume::{spacing_of, Affine, Datatype, Volume};
use crate::error::{Error, Result};

/// The stored voxels, in the file's element type (native byte order).
#[derive(Clone, Debug, PartialEq)]
pub enum Voxels {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Run `$body` with `$v` bound to the inner `Vec` of whichever variant `$voxels` is.
macro_rules! each_voxels {
    ($voxels:expr, $v:ident => $body:expr) => {
        match $voxels {
            Voxels::U8($v) => $body,
            Voxels::I8($v) => $body,
            Voxels::I16($v) => $body,
            Voxels::U16($v) => $body,
            Voxels::I32($v) => $body,
            Voxels::U32($v) => $body,
            Voxels::F32($v) => $body,
            Voxels::F64($v) => $body,
        }
    };
}

impl Voxels {
    /// An empty buffer of `datatype` with room for `capacity` elements.
    pub fn with_capacity(datatype: Datatype, capacity: usize) -> Voxels {
        match datatype {
            Datatype::Uint8 => Voxels::U8(Vec::with_capacity(capacity)),
            Datatype::Int8 => Voxels::I8(Vec::with_capacity(capacity)),
            Datatype::Int16 => Voxels::I16(Vec::with_capacity(capacity)),
            Datatype::Uint16 => Voxels::U16(Vec::with_capacity(capacity)),
            Datatype::Int32 => Voxels::I32(Vec::with_capacity(capacity)),
            Datatype::Uint32 => Voxels::U32(Vec::with_capacity(capacity)),
            Datatype::Float32 => Voxels::F32(Vec::with_capacity(capacity)),
            Datatype::Float64 => Voxels::F64(Vec::with_capacity(capacity)),
        }
    }

    /// The element type.
    pub fn datatype(&self) -> Datatype {
        match self {
            Voxels::U8(_) => Datatype::Uint8,
            Voxels::I8(_) => Datatype::Int8,
            Voxels::I16(_) => Datatype::Int16,
            Voxels::U16(_) => Datatype::Uint16,
            Voxels::I32(_) => Datatype::Int32,
            Voxels::U32(_) => Datatype::Uint32,
            Voxels::F32(_) => Datatype::Float32,
            Voxels::F64(_) => Datatype::Float64,
        }
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        each_voxels!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the voxels take: `len × size of one element`.
    pub fn byte_len(&self) -> usize {
        each_voxels!(self, v => std::mem::size_of_val(v.as_slice()))
    }

    /// The stored value of flat voxel `index`, widened to f64 (exact for every type); None past
    /// the end.
    // The macro expands the cast for every element type, f64 included.
    #[allow(clippy::unnecessary_cast)]
    pub fn stored(&self, index: usize) -> Option<f64> {
        each_voxels!(self, v => v.get(index).map(|&x| x as f64))
    }

    /// Call `f` with every stored value widened to f64, in memory order.
    #[allow(clippy::unnecessary_cast)]
    pub fn for_each_stored(&self, mut f: impl FnMut(f64)) {
        each_voxels!(self, v => v.iter().for_each(|&x| f(x as f64)))
    }

    /// Append the elements encoded in `bytes` (a whole number of them, little- or big-endian).
    pub fn extend_from_bytes(&mut self, bytes: &[u8], big_endian: bool) {
        macro_rules! extend {
            ($v:expr, $t:ty) => {{
                const N: usize = std::mem::size_of::<$t>();
                $v.extend(bytes.chunks_exact(N).map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    if big_endian {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }
                }))
            }};
        }
        match self {
            Voxels::U8(v) => v.extend_from_slice(bytes),
            Voxels::I8(v) => v.extend(bytes.iter().map(|&b| b as i8)),
            Voxels::I16(v) => extend!(v, i16),
            Voxels::U16(v) => extend!(v, u16),
            Voxels::I32(v) => extend!(v, i32),
            Voxels::U32(v) => extend!(v, u32),
            Voxels::F32(v) => extend!(v, f32),
            Voxels::F64(v) => extend!(v, f64),
        }
    }

    /// Append `value` if the element type holds it exactly (an integer type takes only whole
    /// numbers in its range; float32 only values that round-trip); false otherwise.
    pub fn push_exact(&mut self, value: f64) -> bool {
        macro_rules! push_int {
            ($v:expr, $t:ty) => {{
                let fits =
                    value.fract() == 0.0 && value >= <$t>::MIN as f64 && value <= <$t>::MAX as f64;
                if fits {
                    $v.push(value as $t);
                }
                fits
            }};
        }
        match self {
            Voxels::U8(v) => push_int!(v, u8),
            Voxels::I8(v) => push_int!(v, i8),
            Voxels::I16(v) => push_int!(v, i16),
            Voxels::U16(v) => push_int!(v, u16),
            Voxels::I32(v) => push_int!(v, i32),
            Voxels::U32(v) => push_int!(v, u32),
            Voxels::F32(v) => {
                let fits = (value as f32) as f64 == value || value.is_nan();
                if fits {
                    v.push(value as f32);
                }
                fits
            }
            Voxels::F64(v) => {
                v.push(value);
                true
            }
        }
    }
}

/// The file's linear scaling of stored values: `value = stored · slope + inter` (NIfTI's
/// `scl_slope`/`scl_inter`). Absent means the identity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scaling {
    pub slope: f64,
    pub inter: f64,
}

/// A volume in its stored datatype, with the same grid and placement as a [`Volume`].
#[derive(Clone, Debug, PartialEq)]
pub struct TypedVolume {
    pub voxels: Voxels,
    /// `[X, Y, Z]` voxels.
    pub dims: [usize; 3],
    /// Voxel size in mm along each voxel axis (the column norms of the affine's 3×3 part).
    pub spacing: [f64; 3],
    pub affine: Affine,
    /// `value = stored · slope + inter`; None for the identity.
    pub scaling: Option<Scaling>,
}

impl TypedVolume {
    /// A typed volume from voxels in `[X, Y, Z]` order and an affine; spacing is derived. The
    /// same checks as [`Volume::new`], plus a finite, non-zero slope and a finite intercept.
    pub fn new(
        voxels: Voxels,
        dims: [usize; 3],
        affine: Affine,
        scaling: Option<Scaling>,
    ) -> Result<TypedVolume> {
        let n = crate::util::size::checked_numel("TypedVolume::new", &dims)?;
        if dims.contains(&0) {
            return Err(Error::invalid(
                "TypedVolume::new",
                "non-zero dims",
                format!("{dims:?}"),
            ));
        }
        if voxels.len() != n {
            return Err(Error::shape("TypedVolume::new", [n], [voxels.len()]));
        }
        let spacing = spacing_of(&affine);
        if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(
                "TypedVolume::new",
                "an affine with non-zero finite columns",
                format!("voxel sizes {spacing:?}"),
            ));
        }
        if let Some(s) = scaling {
            if !(s.slope.is_finite() && s.slope != 0.0 && s.inter.is_finite()) {
                return Err(Error::invalid(
                    "TypedVolume::new",
                    "a finite non-zero slope and a finite intercept",
                    format!("{s:?}"),
                ));
            }
        }
        Ok(TypedVolume {
            voxels,
            dims,
            spacing,
            affine,
            scaling,
        })
    }

    /// The stored element type.
    pub fn datatype(&self) -> Datatype {
        self.voxels.datatype()
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.voxels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voxels.is_empty()
    }

    /// The scaled value of a stored one, rounded to f32 as the [`Volume`] holds it.
    #[inline]
    fn scaled_f32(&self, stored: f64) -> f32 {
        match self.scaling {
            Some(Scaling { slope, inter }) => (stored * slope + inter) as f32,
            None => stored as f32,
        }
    }

    /// The f32 value of flat voxel `index` (what [`TypedVolume::to_f32_volume`] puts there).
    pub fn f32_at(&self, index: usize) -> Option<f32> {
        self.voxels.stored(index).map(|s| self.scaled_f32(s))
    }

    /// Call `f` with every voxel's f32 value in memory order, without materialising them.
    pub fn for_each_f32(&self, mut f: impl FnMut(f32)) {
        self.voxels.for_each_stored(|s| f(self.scaled_f32(s)));
    }

    /// Minimum, maximum and mean (f64 accumulation) of the f32 values, streamed: the numbers
    /// [`Volume::stats`] gives for the converted volume, without converting it.
    pub fn stats(&self) -> (f64, f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        let mut sum = 0.0f64;
        self.for_each_f32(|v| {
            let v = v as f64;
            lo = lo.min(v);
            hi = hi.max(v);
            sum += v;
        });
        (lo, hi, sum / self.len().max(1) as f64)
    }

    /// The number of distinct f32 values, or None once it passes `cap` (the scan stops there, so
    /// memory stays bounded by `cap` whatever the volume).
    pub fn count_distinct_up_to(&self, cap: usize) -> Option<usize> {
        let mut seen = std::collections::HashSet::new();
        let mut over = false;
        // for_each cannot break: a flag skips the rest cheaply.
        self.for_each_f32(|v| {
            if !over {
                // +0 and −0 are one label (they compare equal).
                let key = if v == 0.0 { 0 } else { v.to_bits() };
                seen.insert(key);
                over = seen.len() > cap;
            }
        });
        (!over).then_some(seen.len())
    }

    /// Each distinct f32 value (sorted by `total_cmp`) with its voxel count. Integer stores count
    /// in a map keyed by stored value (memory grows with the number of labels, not of voxels);
    /// float stores sort one f32 copy.
    pub fn label_counts(&self) -> Vec<(f32, usize)> {
        let mut counts: Vec<(f32, usize)> = if self.datatype().is_integer() {
            let mut map = std::collections::HashMap::<i64, usize>::new();
            self.voxels
                .for_each_stored(|s| *map.entry(s as i64).or_insert(0) += 1);
            map.into_iter()
                .map(|(s, c)| (self.scaled_f32(s as f64), c))
                .collect()
        } else {
            let mut values = Vec::with_capacity(self.len());
            self.for_each_f32(|v| values.push(v));
            values.into_iter().map(|v| (v, 1)).collect()
        };
        counts.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Merge equal values (several stored values can scale to one f32; +0 and −0 are equal).
        let mut out: Vec<(f32, usize)> = Vec::with_capacity(counts.len());
        for (v, c) in counts {
            match out.last_mut() {
                Some((l, n)) if *l == v => *n += c,
                _ => out.push((v, c)),
            }
        }
        out
    }

    /// The f32 working volume (scaled values). A value that is not finite or overflows f32 is
    /// an error naming its voxel. The datatype recorded is the stored one.
    pub fn to_f32_volume(&self) -> Result<Volume> {
        let mut data = Vec::with_capacity(self.len());
        let mut bad: Option<(usize, f64)> = None;
        self.voxels.for_each_stored(|s| {
            let f = self.scaled_f32(s);
            if bad.is_none() && !f.is_finite() {
                let exact = match self.scaling {
                    Some(Scaling { slope, inter }) => s * slope + inter,
                    None => s,
                };
                bad = Some((data.len(), exact));
            }
            data.push(f);
        });
        if let Some((at, v)) = bad {
            let [x, y, _] = self.dims;
            let (i, j, k) = (at % x, (at / x) % y, at / (x * y));
            let what = if v.is_finite() {
                format!("value {v} at voxel [{i}, {j}, {k}] overflows f32")
            } else {
                format!("a NaN/Inf value at voxel [{i}, {j}, {k}]")
            };
            return Err(Error::invalid(
                "TypedVolume::to_f32_volume",
                "values that are finite in f32",
                what,
            ));
        }
        Volume::new(data, self.dims, self.affine, self.datatype())
    }

    /// [`TypedVolume::to_f32_volume`], consuming the typed volume: an unscaled float32 store
    /// becomes the volume's data without a copy.
    pub fn into_f32_volume(self) -> Result<Volume> {
        match self {
            TypedVolume {
                voxels: Voxels::F32(data),
                dims,
                affine,
                scaling: None,
                ..
            } => {
                if let Some(at) = data.iter().position(|v| !v.is_finite()) {
                    return Err(Error::invalid(
                        "TypedVolume::into_f32_volume",
                        "values that are finite in f32",
                        format!("a NaN/Inf value at flat voxel {at}"),
                    ));
                }
                Volume::new(data, dims, affine, Datatype::Float32)
            }
            typed => typed.to_f32_volume(),
        }
    }

    /// A typed volume holding an f32 volume's values in its recorded datatype when every value
    /// fits that type exactly (a DICOM series of whole HU values becomes int16), else in float32
    /// (float64 when the volume says float64, so the datatype reported stays the same).
    pub fn from_f32_volume(vol: Volume) -> TypedVolume {
        let mut voxels = Voxels::with_capacity(vol.datatype, vol.data.len());
        let exact = vol.data.iter().all(|&v| voxels.push_exact(v as f64));
        let voxels = if exact { voxels } else { Voxels::F32(vol.data) };
        TypedVolume {
            voxels,
            dims: vol.dims,
            spacing: vol.spacing,
            affine: vol.affine,
            scaling: None,
        }
    }

    /// The volume with its f32 values stored in `datatype` (rounded for integer types) and no
    /// scaling; a value out of range or not finite is an error naming its voxel (never silently
    /// clamped), as [`crate::data::write_nifti`] does. Already in `datatype` and unscaled: returned
    /// as it is.
    pub fn into_datatype(self, datatype: Datatype) -> Result<TypedVolume> {
        if datatype == self.datatype() && self.scaling.is_none() {
            return Ok(self);
        }
        let mut voxels = Voxels::with_capacity(datatype, self.len());
        let mut failed: Option<(usize, f32)> = None;
        let mut index = 0usize;
        self.for_each_f32(|v| {
            if failed.is_none() {
                let value = if datatype.is_integer() {
                    (v as f64).round()
                } else {
                    v as f64
                };
                // An f32 value widened to f64 always fits float32 and float64 exactly.
                if !value.is_finite() || !voxels.push_exact(value) {
                    failed = Some((index, v));
                }
            }
            index += 1;
        });
        if let Some((at, v)) = failed {
            let range = datatype
                .int_range()
                .map(|(lo, hi)| format!(" [{lo}, {hi}]"))
                .unwrap_or_default();
            return Err(Error::invalid(
                "TypedVolume::into_datatype",
                format!("values that fit {datatype}{range}"),
                format!("value {v} at flat voxel {at}"),
            ));
        }
        Ok(TypedVolume {
            voxels,
            dims: self.dims,
            spacing: self.spacing,
            affine: self.affine,
            scaling: None,
        })
    }
}

/// The f32 volume as a typed one in float32, unscaled (a move, no copy).
impl From<Volume> for TypedVolume {
    fn from(vol: Volume) -> TypedVolume {
        TypedVolume {
            voxels: Voxels::F32(vol.data),
            dims: vol.dims,
            spacing: vol.spacing,
            affine: vol.affine,
            scaling: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::IDENTITY;

    #[test]
    fn scaled_values_and_sizes() {
        let t = TypedVolume::new(
            Voxels::I16(vec![-1000, 0, 7, 32767]),
            [2, 2, 1],
            IDENTITY,
            Some(Scaling {
                slope: 0.5,
                inter: 10.0,
            }),
        )
        .unwrap();
        assert_eq!(t.voxels.byte_len(), 8);
        let v = t.to_f32_volume().unwrap();
        assert_eq!(v.data, vec![-490.0, 10.0, 13.5, 16393.5]);
        assert_eq!(t.stats(), v.stats());
        assert_eq!(t.count_distinct_up_to(3), None);
        assert_eq!(t.count_distinct_up_to(4), Some(4));
    }

    #[test]
    fn conversion_refuses_what_does_not_fit() {
        let t = TypedVolume::from(
            Volume::new(vec![1.4, 300.0], [2, 1, 1], IDENTITY, Datatype::Float32).unwrap(),
        );
        assert!(t.clone().into_datatype(Datatype::Uint8).is_err());
        let u = t.into_datatype(Datatype::Uint16).unwrap();
        assert_eq!(u.voxels, Voxels::U16(vec![1, 300]));
        let f = u.into_datatype(Datatype::Float32).unwrap();
        assert_eq!(f.voxels, Voxels::F32(vec![1.0, 300.0]));
    }
}
