//! Level 0 (no adapter): every `shaders/*.wgsl` parses and validates with naga, and every
//! KernelSpec agrees with its shader — the entry point exists, binding 0 is a uniform whose WGSL
//! struct matches the Rust params struct field by field (name, byte offset, scalar type; the Rust
//! side comes from `shader_params!`, i.e. from the real struct), inputs are read-only storage and
//! outputs read-write storage at the bindings the launch code binds.

use std::collections::HashMap;

use cads::gpu::{ParamField, ParamScalarSlot, ParamsLayout, ScalarKind};
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
    // Every (shader, params struct) pair once; all mismatches reported together.
    let mut checked_params = std::collections::HashSet::new();
    let mut mismatches = Vec::new();
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
                if checked_params.insert((spec.shader, spec.params.name)) {
                    mismatches.extend(compare_params(
                        spec.shader,
                        module,
                        var.ty,
                        size,
                        &spec.params,
                    ));
                }
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
    assert!(
        mismatches.is_empty(),
        "params structs disagree between WGSL and Rust:\n{}",
        mismatches.join("\n")
    );
}

/// The WGSL struct `ty` (bound at binding 0 of `shader`) against the Rust layout, scalar by
/// scalar in memory order. Returns one line per disagreement, naming the shader, the struct, the
/// field and both sides.
fn compare_params(
    shader: &str,
    module: &naga::Module,
    ty: naga::Handle<naga::Type>,
    wgsl_size: usize,
    rust: &ParamsLayout,
) -> Vec<String> {
    let wgsl_name = module.types[ty].name.clone().unwrap_or_default();
    let at = format!(
        "shaders/{shader}.wgsl struct {wgsl_name} vs Rust {}",
        rust.name
    );
    let mut errors = Vec::new();
    if wgsl_name != rust.name {
        errors.push(format!("{at}: the struct names differ"));
    }
    if wgsl_size != rust.size {
        errors.push(format!(
            "{at}: WGSL is {wgsl_size} bytes, Rust {} bytes",
            rust.size
        ));
    }
    let naga::TypeInner::Struct { members, .. } = &module.types[ty].inner else {
        return vec![format!("{at}: binding 0 is not a struct")];
    };
    let mut wgsl = Vec::new();
    for m in members {
        let name = m.name.clone().unwrap_or_default();
        let kind = match module.types[m.ty].inner {
            naga::TypeInner::Scalar(naga::Scalar { kind, width: 4 }) => match kind {
                naga::ScalarKind::Uint => Some(ScalarKind::U32),
                naga::ScalarKind::Sint => Some(ScalarKind::I32),
                naga::ScalarKind::Float => Some(ScalarKind::F32),
                _ => None,
            },
            _ => None,
        };
        match kind {
            Some(kind) => wgsl.push(ParamScalarSlot {
                name,
                offset: m.offset as usize,
                kind,
            }),
            None => errors.push(format!(
                "{at}: field {name} is {:?}; params hold u32/i32/f32 scalars only",
                module.types[m.ty].inner
            )),
        }
    }
    let rust_scalars = rust.scalars();
    let show = |s: Option<&ParamScalarSlot>| match s {
        Some(s) => format!("{}: {:?} at byte {}", s.name, s.kind, s.offset),
        None => "nothing".to_string(),
    };
    for i in 0..wgsl.len().max(rust_scalars.len()) {
        let (w, r) = (wgsl.get(i), rust_scalars.get(i));
        let agree = match (w, r) {
            (Some(w), Some(r)) => {
                w.offset == r.offset
                    && w.kind == r.kind
                    && (w.name == r.name || (w.is_padding() && r.is_padding()))
            }
            _ => false,
        };
        if !agree {
            errors.push(format!(
                "{at}: field #{i}: WGSL has {}, Rust has {}",
                show(w),
                show(r)
            ));
        }
    }
    errors
}

/// Every kernel's params fit one uniform slot of the launch cache (src/gpu/bind_cache.rs); the
/// recorder refuses a launch whose params do not.
#[test]
fn every_kernels_params_fit_a_params_slot() {
    for k in cads::kernels::all_kernels() {
        assert!(
            k.params.size as u64 <= cads::gpu::PARAMS_SLOT_BYTES,
            "{}::{} params {} ({} bytes)",
            k.shader,
            k.entry,
            k.params.name,
            k.params.size
        );
    }
}

#[test]
fn params_mismatches_name_the_shader_struct_field_and_both_sides() {
    // A WGSL struct that swaps two fields and retypes a third, against its intended Rust layout.
    let source = "
        struct P { n: u32, scale: f32, k: u32, _pad0: u32 }
        @group(0) @binding(0) var<uniform> p: P;
        @compute @workgroup_size(1) fn main() { _ = p.n; }
    ";
    let module = naga::front::wgsl::parse_str(source).unwrap();
    let ty = module
        .global_variables
        .iter()
        .next()
        .map(|(_, v)| v.ty)
        .unwrap();
    let field = |name, offset, kind| ParamField {
        name,
        offset,
        kind,
        count: 1,
        elements: &[],
    };
    let fields = [
        field("n", 0, ScalarKind::U32),
        field("k", 4, ScalarKind::U32),
        field("scale", 8, ScalarKind::F32),
        field("_pad", 12, ScalarKind::U32),
    ];
    let fields: &'static [ParamField] = Box::leak(Box::new(fields));
    let rust = ParamsLayout {
        name: "P",
        size: 16,
        fields,
    };
    let errors = compare_params("example", &module, ty, 16, &rust);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        errors[0],
        "shaders/example.wgsl struct P vs Rust P: field #1: WGSL has scale: F32 at byte 4, \
         Rust has k: U32 at byte 4"
    );
    assert!(errors[1].contains("WGSL has k: U32 at byte 8, Rust has scale: F32 at byte 8"));
}
