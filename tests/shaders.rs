//! Level 0 (no adapter): every `shaders/*.wgsl` parses and validates with naga, and every
//! KernelSpec agrees with its shader — the entry point exists, binding 0 is a uniform whose WGSL
//! struct size equals the Rust params struct, inputs are read-only storage and outputs
//! read-write storage at the bindings the launch code binds.

use std::collections::HashMap;

use naga::valid::{Capabilities, ValidationFlags, Validator};

fn validate(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: parse error:\n{}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(source)));
    (module, info)
}

#[test]
fn every_shader_file_validates_and_is_used() {
    // A kernel's source is its file, optionally followed by shared files (WGSL has no include:
    // e.g. drr_geometry.wgsl is appended to the DRR kernels). So every file must either begin the
    // source of a KernelSpec named after it, or be appended to some KernelSpec's source; what is
    // validated is the source the device compiles.
    let specs = cads::kernels::all_kernels();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let source = std::fs::read_to_string(&path).unwrap();
        match specs.iter().find(|s| s.shader == stem) {
            Some(spec) => {
                assert!(
                    spec.source.starts_with(&source),
                    "KernelSpec source for {stem} does not begin with shaders/{stem}.wgsl"
                );
                validate(&stem, spec.source);
            }
            None => assert!(
                specs
                    .iter()
                    .any(|s| s.source.len() > source.len() && s.source.ends_with(&source)),
                "shaders/{stem}.wgsl is neither a kernel nor appended to one (unused shader?)"
            ),
        }
        count += 1;
    }
    assert!(count >= 3, "found only {count} shaders");
}

#[test]
fn kernel_specs_match_their_shaders() {
    let mut parsed: HashMap<&str, (naga::Module, naga::valid::ModuleInfo)> = HashMap::new();
    for spec in cads::kernels::all_kernels() {
        let (module, info) = parsed
            .entry(spec.shader)
            .or_insert_with(|| validate(spec.shader, spec.source));
        let (ep_index, ep) = module
            .entry_points
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == spec.entry)
            .unwrap_or_else(|| panic!("{}: no entry point {}", spec.shader, spec.entry));
        assert_eq!(
            ep.stage,
            naga::ShaderStage::Compute,
            "{}::{}",
            spec.shader,
            spec.entry
        );
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let fn_info = info.get_entry_point(ep_index);
        let mut saw_params = false;
        for (handle, var) in module.global_variables.iter() {
            if fn_info[handle].is_empty() {
                continue;
            }
            let Some(binding) = &var.binding else {
                continue;
            };
            let what = format!(
                "{}::{} binding {}",
                spec.shader, spec.entry, binding.binding
            );
            assert_eq!(binding.group, 0, "{what}: group");
            let b = binding.binding;
            if b == 0 {
                assert_eq!(
                    var.space,
                    naga::AddressSpace::Uniform,
                    "{what}: must be the uniform params"
                );
                let size = layouter[var.ty].size as usize;
                assert_eq!(
                    size, spec.params_size,
                    "{what}: WGSL params struct is {size} bytes, Rust struct {}",
                    spec.params_size
                );
                assert_eq!(
                    spec.params_size % 16,
                    0,
                    "{what}: params must be padded to 16 bytes"
                );
                saw_params = true;
            } else if b <= spec.inputs {
                assert_eq!(
                    var.space,
                    naga::AddressSpace::Storage {
                        access: naga::StorageAccess::LOAD
                    },
                    "{what}: inputs are read-only storage"
                );
            } else if b <= spec.inputs + spec.outputs {
                assert_eq!(
                    var.space,
                    naga::AddressSpace::Storage {
                        access: naga::StorageAccess::LOAD | naga::StorageAccess::STORE
                    },
                    "{what}: outputs are read_write storage"
                );
            } else {
                panic!(
                    "{what}: binding beyond the spec's {} inputs and {} outputs",
                    spec.inputs, spec.outputs
                );
            }
        }
        assert!(
            saw_params,
            "{}::{} does not use its params at binding 0",
            spec.shader, spec.entry
        );
    }
}
