//! Kernel descriptions and the per-device pipeline cache.
//!
//! A [`KernelSpec`] names one entry point of one WGSL file and the shape of its bindings:
//! binding 0 is the uniform params struct, then `inputs` read-only storage buffers, then
//! `outputs` read-write storage buffers, all in group 0. The cache compiles each shader file once
//! per device and each (entry point, override constants) pair once, with an explicit labelled
//! bind-group layout built from the spec (never `layout: None`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::params::ParamsLayout;

/// One compute entry point and its binding signature.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    /// File stem under `shaders/`, e.g. `"elementwise"`.
    pub shader: &'static str,
    /// The WGSL source (via `include_str!`).
    pub source: &'static str,
    /// Entry point name.
    pub entry: &'static str,
    /// Number of read-only storage bindings (1..=inputs).
    pub inputs: u32,
    /// Number of read-write storage bindings after the inputs.
    pub outputs: u32,
    /// The Rust params struct bound at binding 0 ([`shader_params!`](super::params)): its
    /// fields must match the WGSL struct's names, offsets and types (checked by
    /// tests/shaders.rs), and launches must pass that struct (checked at dispatch).
    pub params: ParamsLayout,
    /// Pipeline-overridable constants (`override` declarations) and their values.
    pub constants: &'static [(&'static str, f64)],
}

/// A compiled pipeline with its bind-group layout.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl KernelSpec {
    /// `shader::entry`, with the override constants when there are any
    /// (`conv3d_rows::conv3d_rows_m8_c4[LANES=16]`): the pipeline's label and the kernel's name in
    /// profiles, so two pipelines of one entry point are told apart.
    pub fn label(&self) -> String {
        let mut label = format!("{}::{}", self.shader, self.entry);
        if !self.constants.is_empty() {
            let values: Vec<String> = self
                .constants
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            label.push_str(&format!("[{}]", values.join(",")));
        }
        label
    }
}

type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

#[derive(Default)]
pub(crate) struct KernelCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl KernelCache {
    /// The pipeline for `spec`, compiling on first use.
    pub fn get(&self, device: &wgpu::Device, spec: &KernelSpec) -> Arc<Kernel> {
        let key: PipelineKey = (
            spec.shader,
            spec.entry,
            spec.constants
                .iter()
                .map(|(k, v)| (*k, v.to_bits()))
                .collect(),
        );
        if let Some(k) = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return k.clone();
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            modules
                .entry(spec.shader)
                .or_insert_with(|| {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(spec.shader),
                        source: wgpu::ShaderSource::Wgsl(spec.source.into()),
                    })
                })
                .clone()
        };
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for i in 0..spec.inputs {
            entries.push(storage_entry(1 + i, true));
        }
        for o in 0..spec.outputs {
            entries.push(storage_entry(1 + spec.inputs + o, false));
        }
        let label = spec.label();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: spec.constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let kernel = Arc::new(Kernel { pipeline, layout });
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, kernel.clone());
        kernel
    }
}

/// An elementwise launch over `n` elements in workgroups of 256: the scalar kernel, one element
/// per invocation, or its vec4 form `wide` (four per invocation, over n/4) when `use_wide` holds,
/// which requires n % 4 == 0. On lavapipe each per-invocation load is a per-lane sequence, so
/// the vec4 forms are what the elementwise, fill and add kernels run whenever the data allows.
pub(crate) fn scalar_or_vec4<'a>(
    scalar: &'a KernelSpec,
    wide: &'a KernelSpec,
    n: usize,
    use_wide: bool,
) -> (&'a KernelSpec, Grid) {
    debug_assert!(
        !use_wide || n.is_multiple_of(4),
        "vec4 launch of {n} elements"
    );
    if use_wide {
        (wide, Grid::cover((n / 4) as u64, 256))
    } else {
        (scalar, Grid::cover(n as u64, 256))
    }
}

/// The workgroup grid of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// `count` workgroups along one logical axis; folded into x·y when over the per-dimension
    /// limit. Shaders recover the linear id as `wg.x + wg.y * num_workgroups.x`.
    Linear(u64),
    /// An explicit 3-D grid (each side must be within the limit).
    Xyz(u32, u32, u32),
}

impl Grid {
    /// Enough workgroups of `workgroup_size` invocations to cover `invocations` (1-D, folded).
    pub fn cover(invocations: u64, workgroup_size: u32) -> Grid {
        Grid::Linear(invocations.div_ceil(workgroup_size as u64).max(1))
    }

    /// Resolve to a dispatch `[x, y, z]` within `max_per_dim`, or `None` if impossible.
    pub fn resolve(self, max_per_dim: u32) -> Option<[u32; 3]> {
        let max = max_per_dim as u64;
        match self {
            Grid::Linear(n) => {
                if n <= max {
                    Some([n as u32, 1, 1])
                } else {
                    let y = n.div_ceil(max);
                    if y > max {
                        return None;
                    }
                    // Balance x so the tail of wasted workgroups stays below one row.
                    let x = n.div_ceil(y);
                    Some([x as u32, y as u32, 1])
                }
            }
            Grid::Xyz(x, y, z) => {
                if x.max(y).max(z) as u64 > max {
                    None
                } else {
                    Some([x.max(1), y.max(1), z.max(1)])
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Grid, KernelSpec};
    use crate::gpu::params::ParamsLayout;

    #[test]
    fn labels_name_the_override_constants() {
        const PLAIN: KernelSpec = KernelSpec {
            shader: "conv3d_rows",
            source: "",
            entry: "conv3d_rows_m8_c4",
            inputs: 3,
            outputs: 1,
            params: ParamsLayout {
                name: "ConvParams",
                size: 112,
                fields: &[],
            },
            constants: &[],
        };
        assert_eq!(PLAIN.label(), "conv3d_rows::conv3d_rows_m8_c4");
        let wide = KernelSpec {
            constants: &[("LANES", 16.0), ("HD4", 0.5)],
            ..PLAIN
        };
        assert_eq!(
            wide.label(),
            "conv3d_rows::conv3d_rows_m8_c4[LANES=16,HD4=0.5]"
        );
    }

    #[test]
    fn linear_grids_fold_past_the_per_dimension_limit() {
        assert_eq!(Grid::Linear(10).resolve(65535), Some([10, 1, 1]));
        let [x, y, _] = Grid::Linear(200_000).resolve(65535).unwrap();
        assert!(x <= 65535 && (x as u64) * (y as u64) >= 200_000);
        assert_eq!(Grid::Linear(65536u64 * 65536).resolve(65535), None);
        assert_eq!(Grid::cover(0, 64), Grid::Linear(1));
    }
}
