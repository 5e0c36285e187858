//! Adapter selection: the best adapter of any backend, or the one the user names.
//!
//! Follows wgpu's own conventions so users can steer cads the same way they steer any wgpu
//! program: `WGPU_BACKEND` (comma list: vulkan, metal, dx12, gl) restricts the backends and
//! `WGPU_ADAPTER_NAME` picks the first adapter whose name contains the given text
//! (case-insensitive). The CLI flags `--backend` / `--adapter` set the same fields.

use crate::error::{Error, Result};

/// Printed whenever no adapter can be found, so the user knows what to install.
pub const NO_ADAPTER_HINT: &str = "cads needs a Vulkan, Metal, DX12 or GL adapter. Without a GPU, \
install the Mesa lavapipe software Vulkan driver (Debian/Ubuntu: `apt-get install -y \
mesa-vulkan-drivers`; on Debian bookworm take Mesa 25 from bookworm-backports: add a \
`bookworm-backports main` line for your Debian mirror to the apt sources, then `apt-get install \
-y -t bookworm-backports mesa-vulkan-drivers`; `scripts/newer-lavapipe.sh` fetches the 2-4x faster \
Mesa 26 into a private prefix on Debian 12 / Ubuntu 22.04, see the README), or run `.ci/run`, \
which does this. Check WGPU_BACKEND / WGPU_ADAPTER_NAME / VK_ICD_FILENAMES if one is installed but \
not found.";

/// The hint when only GL was asked for and no GL adapter exists: wgpu's GL backend reaches the
/// driver through EGL (GLES 3.1+ compute), which a headless machine often lacks.
pub const NO_GL_ADAPTER_HINT: &str = "wgpu's GL backend loads libEGL.so.1 and an EGL driver with \
OpenGL ES 3.1 compute: on Debian/Ubuntu `apt-get install -y libegl1 libegl-mesa0` (Mesa's, with \
llvmpipe when there is no GPU; on Debian bookworm take it from bookworm-backports with \
`-t bookworm-backports`, the release of your Mesa) or the GPU vendor's EGL. GL offers cads no \
f16 and no subgroups: Vulkan, Metal or DX12 run more kernels where the machine has them.";

/// How to choose an adapter. `Default` takes the environment into account.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// Restrict to these backends (None = all compiled in).
    pub backends: Option<wgpu::Backends>,
    /// Substring of the adapter name, case-insensitive.
    pub name: Option<String>,
    /// Which of several equally good adapters (or of several whose names match): the i-th
    /// modulo their count, in enumeration order. Data-parallel ranks on one machine pass their
    /// local rank, so each takes its own GPU. None: the first.
    pub index: Option<usize>,
}

impl AdapterChoice {
    /// Read `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`.
    pub fn from_env() -> Self {
        AdapterChoice {
            backends: wgpu::Backends::from_env(),
            name: std::env::var("WGPU_ADAPTER_NAME")
                .ok()
                .filter(|s| !s.is_empty()),
            index: None,
        }
    }

    /// Apply explicit overrides (e.g. CLI flags) on top of the environment.
    pub fn with_overrides(mut self, backend: Option<&str>, name: Option<&str>) -> Self {
        if let Some(b) = backend {
            self.backends = Some(wgpu::Backends::from_comma_list(b));
        }
        if let Some(n) = name {
            self.name = Some(n.to_string());
        }
        self
    }
}

/// Rank used to pick the "best" adapter: real GPUs first, then software ones.
fn device_type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// GL lacks several compute features; prefer the native APIs when both exist.
fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

/// Enumerate adapters and choose one according to `choice`.
pub async fn select_adapter(choice: &AdapterChoice) -> Result<(wgpu::Instance, wgpu::Adapter)> {
    let backends = choice.backends.unwrap_or(wgpu::Backends::all());
    if backends.is_empty() {
        // wgpu's comma-list parser drops names it does not know: "glx" or "vulkna" would
        // otherwise read as "no adapter found" rather than as the typo it is.
        let env = std::env::var("WGPU_BACKEND")
            .map(|v| format!(" (WGPU_BACKEND is '{v}')"))
            .unwrap_or_default();
        return Err(Error::NoAdapter {
            reason: format!(
                "the backend list (WGPU_BACKEND or --backend) names none of vulkan, metal, dx12, \
                 gl{env}"
            ),
            hint: NO_ADAPTER_HINT,
        });
    }
    let hint = match backends == wgpu::Backends::GL {
        true => NO_GL_ADAPTER_HINT,
        false => NO_ADAPTER_HINT,
    };
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = instance.enumerate_adapters(backends).await;
    let names: Vec<String> = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?})", i.name, i.backend)
        })
        .collect();
    // Compute shaders need storage buffers; downlevel GL without them cannot run cads.
    let usable: Vec<wgpu::Adapter> = adapters
        .into_iter()
        .filter(|a| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect();
    let candidates: Vec<wgpu::Adapter> = if let Some(want) = &choice.name {
        let want_lower = want.to_lowercase();
        let matching: Vec<wgpu::Adapter> = usable
            .into_iter()
            .filter(|a| a.get_info().name.to_lowercase().contains(&want_lower))
            .collect();
        if matching.is_empty() {
            return Err(Error::NoAdapter {
                reason: format!(
                    "no adapter name contains '{want}' (backends {backends:?}); adapters found: {names:?}"
                ),
                hint,
            });
        }
        matching
    } else {
        // The best kind (real GPUs first, native APIs first), all of that kind.
        let rank = |a: &wgpu::Adapter| {
            let i = a.get_info();
            (device_type_rank(i.device_type), backend_rank(i.backend))
        };
        let best = usable
            .iter()
            .map(rank)
            .min()
            .ok_or_else(|| Error::NoAdapter {
                reason: format!(
                    "no adapter with compute shaders on backends {backends:?} (found: {names:?})"
                ),
                hint,
            })?;
        usable.into_iter().filter(|a| rank(a) == best).collect()
    };
    let pick = choice.index.unwrap_or(0) % candidates.len();
    let chosen = candidates
        .into_iter()
        .nth(pick)
        .ok_or_else(|| Error::NoAdapter {
            reason: format!("adapter {pick} of the candidates vanished"),
            hint,
        })?;
    Ok((instance, chosen))
}
