//! `cads info`: what adapter cads runs on and what it can do.

use cads::gpu::AdapterChoice;
use cads::models::pvt::{Modality, PvtConfig, PvtEncoder};
use cads::{Error, Gpu, Result};

pub fn run(choice: &AdapterChoice, model: Option<&str>) -> Result<()> {
    let gpu = Gpu::with_choice(choice)?;
    let a = gpu.adapter();
    let l = gpu.limits();
    let f = gpu.features();
    out!("adapter:  {}", a.name);
    out!("backend:  {:?}", a.backend);
    out!("type:     {:?}", a.device_type);
    out!("driver:   {} {}", a.driver, a.driver_info);
    out!(
        "subgroup: {} to {} lanes",
        a.subgroup_min_size,
        a.subgroup_max_size
    );
    out!("limits:");
    out!(
        "  max_buffer_size                       {}",
        l.max_buffer_size
    );
    out!(
        "  max_storage_buffer_binding_size       {}",
        l.max_storage_buffer_binding_size
    );
    out!(
        "  max_storage_buffers_per_shader_stage  {}",
        l.max_storage_buffers_per_shader_stage
    );
    out!(
        "  max_compute_workgroups_per_dimension  {}",
        l.max_compute_workgroups_per_dimension
    );
    out!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    out!(
        "  max_compute_workgroup_size            {}×{}×{}",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z
    );
    out!(
        "  max_compute_workgroup_storage_size    {}",
        l.max_compute_workgroup_storage_size
    );
    out!(
        "  min_uniform_buffer_offset_alignment   {}",
        l.min_uniform_buffer_offset_alignment
    );
    out!("features:");
    out!("  f16                 {}", f.f16);
    out!("  subgroups           {}", f.subgroups);
    out!("  timestamps          {}", f.timestamps);
    out!("  timestamps_encoders {}", f.timestamps_in_encoders);
    out!("  float_atomics       {}", f.float_atomics);
    match f.cooperative_matrix {
        Some(t) => out!("  cooperative_matrix  f16 {t}x{t}x{t}, f32 accumulate"),
        None => out!("  cooperative_matrix  off"),
    }
    match model {
        None => {}
        Some("pvt") => {
            let enc = PvtEncoder::new(&gpu, PvtConfig::default())?;
            let volume = enc.parameter_count(Some(Modality::Volume));
            let image = enc.parameter_count(Some(Modality::Image));
            let all = enc.parameter_count(None);
            out!("model pvt (PVTv2-b1, CADS configuration):");
            out!(
                "  parameters, volume (3D) path      {volume} ({:.2} M)",
                volume as f64 / 1e6
            );
            out!(
                "  parameters, image (2D) path       {image} ({:.2} M)",
                image as f64 / 1e6
            );
            out!(
                "  parameters, both paths            {all} ({:.2} M)",
                all as f64 / 1e6
            );
        }
        Some(other) => return Err(Error::invalid("cads info --model", "pvt", other)),
    }
    Ok(())
}
