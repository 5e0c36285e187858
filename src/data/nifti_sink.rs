//! Where the NIfTI reader's voxels go, chunk by chunk as they are inflated: converted to scaled
//! f32 values for the working [`Volume`] ([`F32Sink`]), or kept in their stored datatype for a
//! [`TypedVolume`] ([`TypedSink`]). Both see the same validated header and the same bytes, so the
//! two paths agree value for value (`(stored · slope + inter) as f32`).

use super::nifti::{bad, Header, Layout, OP_READ};
use super::typed_volume::{Scaling, TypedVolume, Voxels};
use super::volume::{Datatype, Volume};
use crate::error::{Error, Result};

/// Where the decoded voxels go, chunk by chunk: the f32 working volume, or the stored datatype.
pub(super) trait VoxelSink {
    type Out;
    /// Bytes held beyond the declared voxel bytes (checked against the limit too), with a name.
    fn extra_bytes(&self, layout: &Layout) -> Result<Option<(&'static str, u64)>>;
    fn reserve(&mut self, layout: &Layout);
    /// Whole voxels of the stored type.
    fn take(&mut self, bytes: &[u8], header: &Header, layout: &Layout, name: &str) -> Result<()>;
    fn finish(self, header: &Header, layout: Layout) -> Result<Self::Out>;
}

/// Scaled values converted to f32 as they are read (the [`Volume`] path).
#[derive(Default)]
pub(super) struct F32Sink {
    data: Vec<f32>,
}

impl VoxelSink for F32Sink {
    type Out = Volume;
    fn extra_bytes(&self, layout: &Layout) -> Result<Option<(&'static str, u64)>> {
        let bytes = crate::util::size::checked_bytes(OP_READ, layout.n, 4)?;
        Ok(Some(("the f32 volume", bytes)))
    }
    fn reserve(&mut self, layout: &Layout) {
        self.data = Vec::with_capacity(layout.n);
    }
    fn take(&mut self, bytes: &[u8], header: &Header, layout: &Layout, name: &str) -> Result<()> {
        header.decode_into(bytes, layout.datatype, &mut self.data, layout.dims, name)
    }
    fn finish(self, _header: &Header, layout: Layout) -> Result<Volume> {
        Ok(Volume {
            data: self.data,
            dims: layout.dims,
            spacing: layout.spacing,
            affine: layout.affine,
            datatype: layout.datatype,
        })
    }
}

/// Stored values kept in their datatype (the [`TypedVolume`] path): the voxel bytes the header
/// declares are all that is held.
#[derive(Default)]
pub(super) struct TypedSink {
    voxels: Option<Voxels>,
}

impl VoxelSink for TypedSink {
    type Out = TypedVolume;
    fn extra_bytes(&self, _layout: &Layout) -> Result<Option<(&'static str, u64)>> {
        Ok(None)
    }
    fn reserve(&mut self, layout: &Layout) {
        self.voxels = Some(Voxels::with_capacity(layout.datatype, layout.n));
    }
    fn take(&mut self, bytes: &[u8], header: &Header, layout: &Layout, name: &str) -> Result<()> {
        let voxels = self
            .voxels
            .get_or_insert_with(|| Voxels::with_capacity(layout.datatype, layout.n));
        let first = voxels.len();
        voxels.extend_from_bytes(bytes, header.big_endian);
        // Integer values scaled by a finite f32-range slope stay finite in f64; float voxels
        // are checked as the f32 path checks them (NaN/Inf is refused, naming the first).
        if !layout.datatype.is_integer() {
            let scaling = header.scaling();
            let (mut count, mut first_bad, mut index) = (0usize, None, first);
            for_each_new(voxels, first, |s| {
                let v = scaling.map_or(s, |(slope, inter)| s * slope + inter);
                if !v.is_finite() {
                    count += 1;
                    first_bad.get_or_insert(index);
                }
                index += 1;
            });
            if let Some(at) = first_bad {
                let [x, y, _] = layout.dims;
                let (i, j, k) = (at % x, (at / x) % y, at / (x * y));
                return Err(bad_file(
                    name,
                    format!("{count} NaN/Inf voxels (first at voxel [{i}, {j}, {k}])"),
                ));
            }
        }
        Ok(())
    }
    fn finish(self, header: &Header, layout: Layout) -> Result<TypedVolume> {
        Ok(TypedVolume {
            voxels: self
                .voxels
                .unwrap_or_else(|| Voxels::with_capacity(layout.datatype, 0)),
            dims: layout.dims,
            spacing: layout.spacing,
            affine: layout.affine,
            scaling: header
                .scaling()
                .map(|(slope, inter)| Scaling { slope, inter }),
        })
    }
}

/// Call `f` with the stored values of `voxels` from flat index `first` on (float stores only).
fn for_each_new(voxels: &Voxels, first: usize, mut f: impl FnMut(f64)) {
    match voxels {
        Voxels::F32(v) => v[first..].iter().for_each(|&x| f(x as f64)),
        Voxels::F64(v) => v[first..].iter().for_each(|&x| f(x)),
        _ => {}
    }
}

fn bad_file(name: &str, problem: String) -> Error {
    bad(OP_READ, name, problem)
}

impl Header {
    /// Convert whole voxels of `bytes` to scaled f32 values appended to `out`; a NaN/Inf value,
    /// or one that overflows f32, is an error naming its voxel.
    fn decode_into(
        &self,
        bytes: &[u8],
        dt: Datatype,
        out: &mut Vec<f32>,
        dims: [usize; 3],
        name: &str,
    ) -> Result<()> {
        let first = out.len();
        let scaling = self.scaling();
        let mut bad_at: Option<(usize, f64)> = None;
        decode_values(bytes, dt, self.big_endian, |v| {
            let v = match scaling {
                Some((slope, inter)) => (v * slope + inter) as f32 as f64,
                None => v,
            };
            let f = v as f32;
            if bad_at.is_none() && !(v.is_finite() && f.is_finite()) {
                bad_at = Some((out.len(), v));
            }
            out.push(f);
        });
        if let Some((at, v)) = bad_at {
            let count = out[first..]
                .iter()
                .filter(|v| !v.is_finite())
                .count()
                .max(1);
            let (i, j, k) = (
                at % dims[0],
                (at / dims[0]) % dims[1],
                at / (dims[0] * dims[1]),
            );
            let what = if v.is_finite() {
                format!("value {v} at voxel [{i}, {j}, {k}] overflows f32")
            } else {
                format!("{count} NaN/Inf voxels (first at voxel [{i}, {j}, {k}])")
            };
            return Err(bad(OP_READ, name, what));
        }
        Ok(())
    }
}

/// Call `push` with every value of `b` (whole elements of `dt`), widened to f64 one at a time.
fn decode_values(b: &[u8], dt: Datatype, big: bool, mut push: impl FnMut(f64)) {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            for c in b.chunks_exact($n) {
                let mut a = [0u8; $n];
                a.copy_from_slice(c);
                push(
                    (if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64,
                );
            }
        };
    }
    match dt {
        Datatype::Uint8 => b.iter().for_each(|&v| push(v as f64)),
        Datatype::Int8 => b.iter().for_each(|&v| push(v as i8 as f64)),
        Datatype::Int16 => conv!(i16, 2),
        Datatype::Uint16 => conv!(u16, 2),
        Datatype::Int32 => conv!(i32, 4),
        Datatype::Uint32 => conv!(u32, 4),
        Datatype::Float32 => conv!(f32, 4),
        Datatype::Float64 => conv!(f64, 8),
    }
}
