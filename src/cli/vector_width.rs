//! A one-line hint for lavapipe on an AVX-512 CPU: llvmpipe runs 256-bit vectors there unless
//! Mesa's `LP_NATIVE_VECTOR_WIDTH=512` asks for 512, and with 16-lane rows the tuner's 16-lane
//! kernels trained the PVT encoder 1.2× faster on an AVX-512 Xeon (docs/kernel-tuning.md,
//! "Sixteen lanes per workgroup"). The variable is read by the driver when the process starts,
//! so cads can only say it, not set it; the training and benchmark commands print this on stderr
//! (rank 0).

use cads::gpu::{cpu_features, AdapterSummary, Gpu};

/// The environment variable Mesa's llvmpipe reads for its SIMD width in bits.
const WIDTH_VAR: &str = "LP_NATIVE_VECTOR_WIDTH";

/// The hint for this adapter on a CPU with these features (`cpu_features()`), when the width
/// variable is unset (`width_var`): only for llvmpipe running 8-lane subgroups on a CPU with
/// AVX-512F.
fn hint_for(a: &AdapterSummary, cpu: &str, width_var: Option<&str>) -> Option<String> {
    let llvmpipe = a.device_type == wgpu::DeviceType::Cpu && a.name.starts_with("llvmpipe");
    let avx512 = cpu.split('-').any(|f| f == "avx512f");
    (llvmpipe && avx512 && a.subgroup_max_size < 16 && width_var.is_none()).then(|| {
        format!(
            "note: {} runs {}-lane vectors on this AVX-512 CPU; with `export {WIDTH_VAR}=512` \
             before running cads it runs 16 lanes, which trained the PVT encoder 1.2x faster on \
             an AVX-512 Xeon (docs/kernel-tuning.md, \"Sixteen lanes per workgroup\")",
            a.name, a.subgroup_max_size
        )
    })
}

/// Print the hint for `gpu` on stderr when it applies and `announce` (rank 0).
pub fn announce_hint(gpu: &Gpu, announce: bool) {
    let var = std::env::var(WIDTH_VAR).ok();
    if let (true, Some(hint)) = (
        announce,
        hint_for(gpu.adapter(), &cpu_features(), var.as_deref()),
    ) {
        eprintln!("{hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::hint_for;
    use cads::gpu::AdapterSummary;

    fn lavapipe(bits: u32) -> AdapterSummary {
        AdapterSummary {
            name: format!("llvmpipe (LLVM 19.1.7, {bits} bits)"),
            backend: wgpu::Backend::Vulkan,
            device_type: wgpu::DeviceType::Cpu,
            driver: "llvmpipe".into(),
            driver_info: "Mesa 26.1.6 (LLVM 19.1.7)".into(),
            subgroup_max_size: bits / 32,
            subgroup_min_size: bits / 32,
        }
    }

    #[test]
    fn only_llvmpipe_at_256_bits_on_an_avx512_cpu_without_the_variable_gets_the_hint() {
        let avx512 = "x86_64-avx2-fma-avx512f-avx512vl";
        let hint = hint_for(&lavapipe(256), avx512, None).expect("the case the hint is for");
        assert!(
            hint.contains("LP_NATIVE_VECTOR_WIDTH=512") && hint.contains("8-lane"),
            "{hint}"
        );
        // Already 16 lanes; the variable set (to anything: the user chose); no AVX-512.
        assert_eq!(hint_for(&lavapipe(512), avx512, None), None);
        assert_eq!(hint_for(&lavapipe(256), avx512, Some("256")), None);
        assert_eq!(hint_for(&lavapipe(256), "x86_64-avx2-fma", None), None);
        // A GPU, and another CPU adapter (WARP, SwiftShader), never.
        let gpu = AdapterSummary {
            name: "NVIDIA H200".into(),
            device_type: wgpu::DeviceType::DiscreteGpu,
            subgroup_max_size: 32,
            subgroup_min_size: 32,
            ..lavapipe(256)
        };
        assert_eq!(hint_for(&gpu, avx512, None), None);
        let swiftshader = AdapterSummary {
            name: "SwiftShader Device (LLVM 10.0.0)".into(),
            ..lavapipe(256)
        };
        assert_eq!(hint_for(&swiftshader, avx512, None), None);
    }
}
