//! GPU runtime: adapter choice, the device context, buffer pool, kernel cache and launches.

mod adapter;
mod context;
mod kernel;
mod params;
mod pool;
mod profile;
mod readback;
mod recorder;
mod timestamps;

pub use adapter::{select_adapter, AdapterChoice, NO_ADAPTER_HINT};
pub use context::{AdapterSummary, DeviceFeatures, Gpu};
pub use kernel::{Grid, KernelSpec};
pub(crate) use params::shader_params;
pub use params::{
    ParamField, ParamScalar, ParamScalarSlot, ParamsLayout, ScalarKind, ShaderParams,
};
pub use pool::{size_class, PoolStats, PooledBuffer};
pub use profile::KernelTime;
pub use readback::{Fence, PendingRead};
