//! Level 0 (no adapter): every kernel translates through naga to SPIR-V, MSL and HLSL.
//!
//! CI runs the Vulkan path only (lavapipe), but the crate promises Metal and DX12 too
//! (DESIGN.md §2 "Any adapter"). wgpu compiles a WGSL module per backend the way this test does:
//! it substitutes the pipeline's override constants (`process_overrides`, here with exactly the
//! `KernelSpec::constants` the cache passes to `create_compute_pipeline`), then writes the one
//! entry point with that backend's writer. A shader a backend rejects, or uses a capability it
//! lacks, fails here instead of on a user's Mac or Windows machine.
//!
//! Versions are the conservative ends of what wgpu targets: MSL 2.0 (macOS 10.13 / iOS 11) and
//! HLSL shader model 5.1 (FXC), SPIR-V 1.0.

use std::collections::HashMap;

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{Module, ShaderStage};

fn parse(shader: &str, source: &str) -> (Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{shader}: parse error:\n{}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{shader}: validation error:\n{}", e.emit_to_string(source)));
    (module, info)
}

/// Kernels that the launcher selects only where the adapter reports an optional feature that one
/// backend never reports, so they are not translated for it: `drr_scatter` (atomic<f32>) runs
/// only with `SHADER_FLOAT32_ATOMIC`, which wgpu offers on Vulkan and Metal but never on DX12;
/// there the same adjoint runs as `drr_scatter_cas` (core atomics), translated for all three.
/// Likewise the cooperative-matrix kernels: wgpu reports EXPERIMENTAL_COOPERATIVE_MATRIX on
/// Vulkan, and on Metal only from MSL 2.3 (simdgroup matrices), never on DX12.
const NOT_FOR_HLSL: &[&str] = &["drr_scatter", "matmul_f16_coop8", "matmul_f16_coop16"];
const NEEDS_MSL_2_3: &[&str] = &["matmul_f16_coop8", "matmul_f16_coop16"];

/// Translate one entry point of an override-free module with each backend, after validating it
/// with that backend's capabilities. Returns one line per failure.
fn translate(
    what: &str,
    module: &Module,
    entry: &str,
    hlsl: bool,
    msl_version: (u8, u8),
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut validated = |backend: &str, caps: Capabilities| -> Option<ModuleInfo> {
        match Validator::new(ValidationFlags::all(), caps).validate(module) {
            Ok(info) => Some(info),
            Err(e) => {
                failures.push(format!("{what}: {backend} capabilities: {e:?}"));
                None
            }
        }
    };
    let spv_info = validated("SPIR-V", spv::supported_capabilities());
    let msl_info = validated("MSL", msl::supported_capabilities());
    let hlsl_info = if hlsl {
        validated("HLSL", hlsl::supported_capabilities())
    } else {
        None
    };

    if let Some(info) = spv_info {
        let pipeline = spv::PipelineOptions {
            shader_stage: ShaderStage::Compute,
            entry_point: entry.to_string(),
        };
        if let Err(e) = spv::write_vec(module, &info, &spv::Options::default(), Some(&pipeline)) {
            failures.push(format!("{what}: SPIR-V: {e}"));
        }
    }
    if let Some(info) = msl_info {
        let options = msl::Options {
            lang_version: msl_version,
            ..Default::default()
        };
        let pipeline = msl::PipelineOptions {
            entry_point: Some((ShaderStage::Compute, entry.to_string())),
            ..Default::default()
        };
        if let Err(e) = msl::write_string(module, &info, &options, &pipeline) {
            failures.push(format!("{what}: MSL: {e}"));
        }
    }
    if let Some(info) = hlsl_info {
        let options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V5_1,
            ..Default::default()
        };
        let pipeline = hlsl::PipelineOptions {
            entry_point: Some((ShaderStage::Compute, entry.to_string())),
        };
        let mut out = String::new();
        if let Err(e) = hlsl::Writer::new(&mut out, &options, &pipeline).write(module, &info, None)
        {
            failures.push(format!("{what}: HLSL: {e}"));
        }
    }
    failures
}

#[test]
fn every_kernel_translates_to_spirv_msl_and_hlsl() {
    let mut parsed: HashMap<&str, (Module, ModuleInfo)> = HashMap::new();
    let mut failures = Vec::new();
    let mut count = 0;
    for spec in cads::kernels::all_kernels() {
        let (module, info) = parsed
            .entry(spec.shader)
            .or_insert_with(|| parse(spec.shader, spec.source));
        let mut constants = naga::back::PipelineConstants::default();
        for (name, value) in spec.constants {
            constants.insert(name.to_string(), *value);
        }
        let what = format!("{}::{} {:?}", spec.shader, spec.entry, spec.constants);
        match naga::back::pipeline_constants::process_overrides(
            module,
            info,
            Some((ShaderStage::Compute, spec.entry)),
            &constants,
        ) {
            Ok((module, _)) => failures.extend(translate(
                &what,
                &module,
                spec.entry,
                !NOT_FOR_HLSL.contains(&spec.shader),
                if NEEDS_MSL_2_3.contains(&spec.shader) {
                    (2, 3)
                } else {
                    (2, 0)
                },
            )),
            Err(e) => failures.push(format!("{what}: override constants: {e}")),
        }
        count += 1;
    }
    assert!(count > 10, "only {count} kernels");
    assert!(
        failures.is_empty(),
        "{} of {count} kernels fail a backend:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_shader_a_backend_rejects_fails_here() {
    // 64-bit floats validate with every capability but Metal has none (and naga's HLSL and
    // SPIR-V writers take them), so the MSL leg must report it.
    let source = "
        @group(0) @binding(0) var<storage, read_write> out: array<f64>;
        @compute @workgroup_size(1) fn main() { out[0] = 1.0lf; }
    ";
    let (module, _) = parse("example", source);
    let failures = translate("example::main", &module, "main", true, (2, 0));
    assert!(
        failures.iter().any(|f| f.starts_with("example::main: MSL")),
        "{failures:#?}"
    );
}
