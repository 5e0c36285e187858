//! GPU runtime: adapter choice, the device context, buffer pool, kernel cache and launches.

mod adapter;
mod autocast;
mod bind_cache;
mod context;
mod cooperative;
mod kernel;
mod params;
mod pool;
mod profile;
mod readback;
mod recorder;
mod timestamps;
mod tuning;
mod tuning_cache;

pub use adapter::{select_adapter, AdapterChoice, NO_ADAPTER_HINT, NO_GL_ADAPTER_HINT};
pub use autocast::Precision;
pub use bind_cache::{BindGroupStats, PARAMS_SLOT_BYTES};
pub use context::{AdapterSummary, DeviceFeatures, Gpu, NO_F16_ENV};
pub use cooperative::{CooperativeMatrix, COOPERATIVE_MATRIX_ENV};
pub(crate) use kernel::scalar_or_vec4;
pub use kernel::{Grid, KernelSpec};
pub(crate) use params::shader_params;
pub use params::{
    ParamField, ParamScalar, ParamScalarSlot, ParamsLayout, ScalarKind, ShaderParams,
};
pub use pool::{size_class, PoolStats, PooledBuffer};
pub use profile::KernelTime;
pub use readback::{Fence, PendingRead};
#[cfg(test)]
pub(crate) use tuning::unit_test_gpu;
pub use tuning::{
    ChoiceSource, TuneRequest, TuneSettings, TunedChoice, TUNE_CACHE_ENV, TUNE_ROUNDS,
};
pub use tuning_cache::{adapter_key, cpu_features, kernels_fingerprint};
