//! Uniform params structs that agree with their WGSL mirror by construction.
//!
//! Every kernel takes its scalars as one `#[repr(C)]` struct at `@group(0) @binding(0)`, mirrored
//! field for field by a WGSL `struct` (DESIGN.md §3). Declaring the Rust struct through
//! [`shader_params!`] also derives its [`ParamsLayout`]: the name, byte offset (from
//! `offset_of!`, so the real struct, not a copy) and scalar kind of every field. Each
//! [`KernelSpec`](super::KernelSpec) carries the layout of the struct its launch passes, and
//! `tests/shaders.rs` walks the WGSL struct of every entry point through naga's reflection and
//! compares it scalar by scalar: a renamed, reordered or retyped field fails CI instead of
//! silently reading the neighbour's bytes on the GPU.
//!
//! WGSL uniform arrays need a 16-byte element stride, so the WGSL side spells arrays out as
//! scalars (`shape0 … shape5`). A Rust array field `shape: [u32; 6]` therefore stands for the
//! WGSL scalars `shape0 … shape5`, or for the names listed after `=>` when they differ
//! (`k: [i32; 3] => [kd, kh, kw]`). Fields named `_pad…` are padding: on both sides their names
//! may differ, their offsets and kinds may not.

/// The WGSL scalar types params may hold (DESIGN.md §3: u32/i32/f32 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarKind {
    U32,
    I32,
    F32,
}

/// A Rust type allowed as a params field: a 4-byte scalar or an array of them.
pub trait ParamScalar {
    const KIND: ScalarKind;
    /// Scalars in the field (1 for a scalar, N for `[T; N]`).
    const COUNT: usize;
}

impl ParamScalar for u32 {
    const KIND: ScalarKind = ScalarKind::U32;
    const COUNT: usize = 1;
}
impl ParamScalar for i32 {
    const KIND: ScalarKind = ScalarKind::I32;
    const COUNT: usize = 1;
}
impl ParamScalar for f32 {
    const KIND: ScalarKind = ScalarKind::F32;
    const COUNT: usize = 1;
}
impl<T: ParamScalar, const N: usize> ParamScalar for [T; N] {
    const KIND: ScalarKind = T::KIND;
    const COUNT: usize = N * T::COUNT;
}

/// One field of a Rust params struct.
#[derive(Clone, Copy, Debug)]
pub struct ParamField {
    /// The Rust field name.
    pub name: &'static str,
    /// Byte offset in the struct (`offset_of!`).
    pub offset: usize,
    pub kind: ScalarKind,
    /// Scalars in the field (array length, 1 for a scalar).
    pub count: usize,
    /// WGSL names of an array's elements; empty means `{name}{i}`.
    pub elements: &'static [&'static str],
}

/// A Rust params struct as the shaders see it.
#[derive(Clone, Copy, Debug)]
pub struct ParamsLayout {
    /// The struct name, which the WGSL struct must share.
    pub name: &'static str,
    /// `size_of` the struct (a multiple of 16, checked at compile time).
    pub size: usize,
    pub fields: &'static [ParamField],
}

/// One WGSL scalar of a params struct: its name, byte offset and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamScalarSlot {
    pub name: String,
    pub offset: usize,
    pub kind: ScalarKind,
}

impl ParamScalarSlot {
    /// Padding (`_pad…`) matches padding of the same offset and kind whatever its name.
    pub fn is_padding(&self) -> bool {
        self.name.starts_with("_pad")
    }
}

impl ParamsLayout {
    /// The scalars the WGSL mirror must declare, in memory order: arrays expand to one scalar
    /// per element (4 bytes apart), named as described in the module doc.
    pub fn scalars(&self) -> Vec<ParamScalarSlot> {
        let mut out = Vec::new();
        for f in self.fields {
            for i in 0..f.count {
                let name = if f.count == 1 {
                    f.name.to_string()
                } else if let Some(e) = f.elements.get(i) {
                    e.to_string()
                } else {
                    format!("{}{i}", f.name)
                };
                out.push(ParamScalarSlot {
                    name,
                    offset: f.offset + 4 * i,
                    kind: f.kind,
                });
            }
        }
        out
    }
}

/// A `#[repr(C)]` params struct with its layout; implemented by [`shader_params!`] only.
pub trait ShaderParams: bytemuck::Pod {
    const LAYOUT: ParamsLayout;
}

/// Declare a params struct: `#[repr(C)]`, `Clone, Copy, Pod, Zeroable`, its [`ShaderParams`]
/// layout (also as the inherent const `LAYOUT`), and compile-time checks that the size is a
/// multiple of 16 bytes and that every `=> [names]` list has one name per array element.
///
/// ```ignore
/// crate::gpu::shader_params! {
///     /// Mirrors `PoolParams` in shaders/pool3d.wgsl.
///     struct PoolParams {
///         n: u32,
///         k: [i32; 3] => [kd, kh, kw],
///         _pad0: [u32; 3],
///     }
/// }
/// ```
macro_rules! shader_params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $ty:ty $(=> [$($element:ident),+ $(,)?])?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field: $ty, )*
        }

        impl $crate::gpu::ShaderParams for $name {
            const LAYOUT: $crate::gpu::ParamsLayout = $crate::gpu::ParamsLayout {
                name: stringify!($name),
                size: ::std::mem::size_of::<$name>(),
                fields: &[$(
                    $crate::gpu::ParamField {
                        name: stringify!($field),
                        offset: ::std::mem::offset_of!($name, $field),
                        kind: <$ty as $crate::gpu::ParamScalar>::KIND,
                        count: <$ty as $crate::gpu::ParamScalar>::COUNT,
                        elements: &[$($(stringify!($element)),+)?],
                    }
                ),*],
            };
        }

        #[allow(dead_code)]
        impl $name {
            /// This struct's layout, for its `KernelSpec`s.
            pub(crate) const LAYOUT: $crate::gpu::ParamsLayout =
                <$name as $crate::gpu::ShaderParams>::LAYOUT;
        }

        const _: () = {
            let layout = <$name as $crate::gpu::ShaderParams>::LAYOUT;
            assert!(layout.size % 16 == 0, "params structs are padded to 16 bytes");
            let mut i = 0;
            while i < layout.fields.len() {
                let f = &layout.fields[i];
                assert!(
                    f.elements.is_empty() || f.elements.len() == f.count,
                    "one WGSL name per array element"
                );
                i += 1;
            }
        };
    };
}
pub(crate) use shader_params;

#[cfg(test)]
mod tests {
    use super::*;

    shader_params! {
        struct Example {
            n: u32,
            k: [i32; 3] => [kd, kh, kw],
            shape: [u32; 2],
            scale: f32,
            _pad: [u32; 1],
        }
    }

    #[test]
    fn arrays_expand_to_named_scalars() {
        let names: Vec<_> = Example::LAYOUT
            .scalars()
            .into_iter()
            .map(|s| (s.name, s.offset, s.kind))
            .collect();
        use ScalarKind::*;
        let expect = [
            ("n", 0, U32),
            ("kd", 4, I32),
            ("kh", 8, I32),
            ("kw", 12, I32),
            ("shape0", 16, U32),
            ("shape1", 20, U32),
            ("scale", 24, F32),
            ("_pad", 28, U32),
        ];
        let expect: Vec<_> = expect
            .iter()
            .map(|(n, o, k)| (n.to_string(), *o, *k))
            .collect();
        assert_eq!(names, expect);
        assert_eq!(Example::LAYOUT.size, 32);
        let _ = Example {
            n: 0,
            k: [0; 3],
            shape: [0; 2],
            scale: 0.0,
            _pad: [0],
        };
    }
}
