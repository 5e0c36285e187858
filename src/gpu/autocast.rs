//! Autocast: a per-thread precision policy on the context, set for the duration of a closure like
//! [`Gpu::no_grad`].
//!
//! Under `Precision::Mixed` the layers that own a matmul (`nn::Linear`, from
//! `nn::MIXED_MIN_ROWS` input rows on) cast their input and weight to f16 and run the f16 matmul
//! with f32 accumulation, so the tape keeps the f16 copy of the input (half the bytes) for
//! backward. Convolutions (their input), activation functions and attention
//! compute in f32 but keep the f16 rounding of the activations their backward reads
//! (src/tensor/saved.rs), as PyTorch's AMP keeps f16 activations for those ops; the layers that
//! read one activation share one f16 rounding of it. The PVT MLP tail fc2(GELU(h)) runs as one
//! f16 op that keeps h's rounding alone (`ops::gelu_linear_mixed`). Norms, losses,
//! every other op, the parameters (f32 master weights) and their gradients stay f32. Mixed
//! precision needs `SHADER_F16`: on a device without it [`Gpu::mixed_precision`] is false and the
//! layers run their f32 path unchanged.
//!
//! The policy is per context and per thread (one thread's evaluation never changes another's
//! training step), and nests: the inner policy holds inside, the outer one is restored after,
//! also when the closure panics. Activation checkpointing records the policy of the forward and
//! recomputes under it (src/autograd/checkpoint.rs).

use std::thread::ThreadId;

use super::context::Gpu;
use crate::error::{Error, Result};

/// Arithmetic precision of the ops that support more than f32. In configs and on the command
/// line (`--precision`) by its [`name`](Precision::name): `"f32"` or `"amp"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// f16 operands with f32 accumulation in matmuls where the device has `SHADER_F16`; f32
    /// elsewhere.
    #[serde(rename = "amp")]
    Mixed,
}

impl Precision {
    /// `"f32"` or `"amp"` (benchmark lines and configs; `amp`, automatic mixed precision, is what
    /// PyTorch calls autocast, so our mixed lines pair with its peers' AMP lines).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "amp",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    /// `f32` or `amp` (case-insensitive); anything else is an error naming both.
    fn from_str(s: &str) -> Result<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "amp" => Ok(Precision::Mixed),
            _ => Err(Error::invalid("precision", "f32 or amp", s)),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Gpu {
    /// The precision policy on this thread (`F32` outside any [`Gpu::autocast`]).
    pub fn precision(&self) -> Precision {
        let map = self
            .inner
            .autocast
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&std::thread::current().id())
            .copied()
            .unwrap_or_default()
    }

    /// Whether ops on this thread run their mixed-precision path now: the policy is `Mixed` and
    /// the device has `SHADER_F16`.
    pub fn mixed_precision(&self) -> bool {
        self.precision() == Precision::Mixed && self.features().f16
    }

    /// The precision that runs under a `precision` policy on this device: `Mixed` needs
    /// `SHADER_F16` and is `F32` without it (the layers take their f32 path). Training records
    /// this, not the requested one, so a run's log says what actually ran.
    pub fn supported_precision(&self, precision: Precision) -> Precision {
        match precision {
            Precision::Mixed if !self.features().f16 => Precision::F32,
            p => p,
        }
    }

    /// Run `f` under `precision` on this thread; the previous policy is restored afterwards.
    pub fn autocast<R>(&self, precision: Precision, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Gpu, ThreadId, Option<Precision>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let mut map = self
                    .0
                    .inner
                    .autocast
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match self.2 {
                    Some(p) => map.insert(self.1, p),
                    None => map.remove(&self.1),
                };
            }
        }
        let id = std::thread::current().id();
        let previous = self
            .inner
            .autocast
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, precision);
        let _restore = Restore(self, id, previous);
        f()
    }
}
