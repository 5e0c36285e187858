//! `cads info`: what adapter cads runs on and what it can do.

use cads::gpu::AdapterChoice;
use cads::models::pvt::{Modality, PvtConfig, PvtEncoder};
use cads::{Error, Gpu, Result};

pub fn run(choice: &AdapterChoice, model: Option<&str>) -> Result<()> {
    let gpu = Gpu::with_choice(choice)?;
    let a = gpu.adapter();
    let l = gpu.limits();
    let f = gpu.features();
    println!("adapter:  {}", a.name);
    println!("backend:  {:?}", a.backend);
    println!("type:     {:?}", a.device_type);
    println!("driver:   {} {}", a.driver, a.driver_info);
    println!("limits:");
    println!(
        "  max_buffer_size                       {}",
        l.max_buffer_size
    );
    println!(
        "  max_storage_buffer_binding_size       {}",
        l.max_storage_buffer_binding_size
    );
    println!(
        "  max_storage_buffers_per_shader_stage  {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroups_per_dimension  {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroup_size            {}×{}×{}",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z
    );
    println!(
        "  max_compute_workgroup_storage_size    {}",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  min_uniform_buffer_offset_alignment   {}",
        l.min_uniform_buffer_offset_alignment
    );
    println!("features:");
    println!("  f16                 {}", f.f16);
    println!("  subgroups           {}", f.subgroups);
    println!("  timestamps          {}", f.timestamps);
    println!("  timestamps_encoders {}", f.timestamps_in_encoders);
    println!("  float_atomics       {}", f.float_atomics);
    match model {
        None => {}
        Some("pvt") => {
            let enc = PvtEncoder::new(&gpu, PvtConfig::default())?;
            let volume = enc.parameter_count(Some(Modality::Volume));
            let image = enc.parameter_count(Some(Modality::Image));
            let all = enc.parameter_count(None);
            println!("model pvt (PVTv2-b1, CADS configuration):");
            println!(
                "  parameters, volume (3D) path      {volume} ({:.2} M)",
                volume as f64 / 1e6
            );
            println!(
                "  parameters, image (2D) path       {image} ({:.2} M)",
                image as f64 / 1e6
            );
            println!(
                "  parameters, both paths            {all} ({:.2} M)",
                all as f64 / 1e6
            );
        }
        Some(other) => return Err(Error::invalid("cads info --model", "pvt", other)),
    }
    Ok(())
}
