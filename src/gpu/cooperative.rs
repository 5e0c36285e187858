//! Cooperative matrices (tensor cores) through wgpu's `EXPERIMENTAL_COOPERATIVE_MATRIX`: whether
//! cads asks the device for them, and which fragment size its kernels use.
//!
//! The kernels (shaders/matmul_f16_coop{8,16}.wgsl) multiply square f16 fragments into an f32
//! accumulator at subgroup scope, so the adapter must report an `M = N = K ∈ {8, 16}`
//! configuration with f16 A/B and f32 C; 16 is preferred where both exist (four times the work per
//! multiply-add). The feature is experimental in wgpu: requesting it takes
//! `wgpu::ExperimentalFeatures::enabled()`, so by default cads asks only where it pays, on GPU
//! adapters. On CPU adapters (lavapipe reports 8×8×8 f16 fragments and emulates them lane by lane)
//! the register-tiled kernels are faster, and the feature is requested only when asked for
//! (`CADS_COOPERATIVE_MATRIX=on`, or [`crate::gpu::Gpu::with_choice_cooperative`] in tests), which
//! is how the kernels are checked against their reference without a GPU.

use crate::error::{Error, Result};

/// Whether cads requests cooperative matrices when it creates a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CooperativeMatrix {
    /// On GPU adapters that report a usable configuration; never on CPU adapters (the default).
    #[default]
    Auto,
    /// On every adapter that reports a usable configuration, CPU adapters included.
    On,
    /// Never: the f16 kernels run on plain f16 arithmetic.
    Off,
}

/// The environment variable that sets the policy: `auto` (default), `on` or `off`.
pub const COOPERATIVE_MATRIX_ENV: &str = "CADS_COOPERATIVE_MATRIX";

impl CooperativeMatrix {
    /// The policy named by `CADS_COOPERATIVE_MATRIX` (unset or empty: `Auto`).
    pub fn from_env() -> Result<CooperativeMatrix> {
        match std::env::var(COOPERATIVE_MATRIX_ENV) {
            Ok(value) => Self::parse(&value),
            Err(std::env::VarError::NotPresent) => Ok(CooperativeMatrix::Auto),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::invalid(
                COOPERATIVE_MATRIX_ENV,
                "auto, on or off",
                format!("{v:?}"),
            )),
        }
    }

    /// `auto`, `on` or `off` (case-insensitive; empty is `auto`).
    pub fn parse(value: &str) -> Result<CooperativeMatrix> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(CooperativeMatrix::Auto),
            "on" | "1" | "true" => Ok(CooperativeMatrix::On),
            "off" | "0" | "false" => Ok(CooperativeMatrix::Off),
            _ => Err(Error::invalid(
                COOPERATIVE_MATRIX_ENV,
                "auto, on or off",
                format!("{value:?}"),
            )),
        }
    }

    /// Whether to request the feature on an adapter of this type.
    pub(crate) fn wanted(self, device_type: wgpu::DeviceType) -> bool {
        match self {
            CooperativeMatrix::Auto => device_type != wgpu::DeviceType::Cpu,
            CooperativeMatrix::On => true,
            CooperativeMatrix::Off => false,
        }
    }
}

/// The fragment size (8 or 16) of the largest square f16 × f16 + f32 configuration among the
/// adapter's, or `None` when it reports none.
pub(crate) fn f16_fragment(configs: &[wgpu::CooperativeMatrixProperties]) -> Option<u32> {
    configs
        .iter()
        .filter(|c| {
            c.m_size == c.n_size
                && c.n_size == c.k_size
                && matches!(c.m_size, 8 | 16)
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        })
        .map(|c| c.m_size)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        size: u32,
        ab: wgpu::CooperativeScalarType,
        cr: wgpu::CooperativeScalarType,
    ) -> wgpu::CooperativeMatrixProperties {
        wgpu::CooperativeMatrixProperties {
            m_size: size,
            n_size: size,
            k_size: size,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        }
    }

    #[test]
    fn the_largest_square_f16_f32_fragment_is_chosen() {
        use wgpu::CooperativeScalarType::{F16, F32};
        assert_eq!(f16_fragment(&[]), None);
        // lavapipe's list: 8×8×8 f16 → f16 and f16 → f32.
        assert_eq!(
            f16_fragment(&[config(8, F16, F16), config(8, F16, F32)]),
            Some(8)
        );
        assert_eq!(
            f16_fragment(&[config(8, F16, F32), config(16, F16, F32)]),
            Some(16)
        );
        // f16 accumulators only, or f32 operands only: nothing our kernels can use.
        assert_eq!(
            f16_fragment(&[config(16, F16, F16), config(8, F32, F32)]),
            None
        );
        let mut rect = config(16, F16, F32);
        rect.n_size = 8;
        assert_eq!(f16_fragment(&[rect]), None);
    }

    #[test]
    fn the_policy_parses_and_refuses_other_words() {
        assert_eq!(
            CooperativeMatrix::parse("").unwrap(),
            CooperativeMatrix::Auto
        );
        assert_eq!(
            CooperativeMatrix::parse("ON").unwrap(),
            CooperativeMatrix::On
        );
        assert_eq!(
            CooperativeMatrix::parse("off").unwrap(),
            CooperativeMatrix::Off
        );
        let err = CooperativeMatrix::parse("tensor").unwrap_err().to_string();
        assert!(
            err.contains(COOPERATIVE_MATRIX_ENV) && err.contains("tensor"),
            "{err}"
        );
        assert!(CooperativeMatrix::Auto.wanted(wgpu::DeviceType::DiscreteGpu));
        assert!(!CooperativeMatrix::Auto.wanted(wgpu::DeviceType::Cpu));
        assert!(CooperativeMatrix::On.wanted(wgpu::DeviceType::Cpu));
    }
}
