//! The kernel tuning cache on disk (src/gpu/tuning.rs decides when it is read and written): one
//! JSON file per adapter key, each op's choice with the candidates it was made among, their
//! times and the fingerprint of the kernels measured. A file that does not parse reads as empty
//! (a warning) and is replaced at the next write; a failed write is a warning.

use std::collections::BTreeMap;
use std::path::Path;

use super::context::AdapterSummary;
use super::kernel::KernelSpec;

/// One op's entry in a cache file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct CachedChoice {
    /// The chosen variant's name.
    pub(super) variant: String,
    /// The candidates it was chosen among, sorted (a build with other candidates measures again).
    pub(super) candidates: Vec<String>,
    /// Every candidate's minimum over the rounds, milliseconds (what the choice was made on).
    pub(super) ms: BTreeMap<String, f64>,
    /// [`kernels_fingerprint`] of the kernels it was measured on (empty in files written before
    /// it was recorded: those choices are measured again).
    #[serde(default)]
    pub(super) kernels: String,
}

/// A cache file: one adapter, its ops' choices.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct CacheFile {
    pub(super) adapter: String,
    pub(super) choices: BTreeMap<String, CachedChoice>,
}

/// File-name-safe key of an adapter: name, driver, driver info and backend, and for a CPU
/// adapter the host's [`cpu_features`]; every character outside `[A-Za-z0-9._-]` as `_`, runs of
/// `_` collapsed.
pub fn adapter_key(a: &AdapterSummary) -> String {
    key_of(a, &cpu_features())
}

/// The vector features of the CPU this process runs on that decide how a CPU adapter's compiler
/// vectorises loads (`x86_64-avx2-fma` on a CPU with AVX2 and FMA but no AVX-512), or the
/// architecture alone elsewhere.
pub fn cpu_features() -> String {
    let mut s = std::env::consts::ARCH.to_string();
    #[cfg(target_arch = "x86_64")]
    {
        let have = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
        ];
        for (name, on) in have {
            if on {
                s.push('-');
                s.push_str(name);
            }
        }
    }
    s
}

/// [`adapter_key`] with the CPU features given (`cpu` is ignored for other adapter types).
fn key_of(a: &AdapterSummary, cpu: &str) -> String {
    let mut raw = format!("{}-{}-{}-{:?}", a.name, a.driver, a.driver_info, a.backend);
    if a.device_type == wgpu::DeviceType::Cpu {
        raw.push('-');
        raw.push_str(cpu);
    }
    let mut key = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
            c
        } else {
            '_'
        };
        if !(c == '_' && key.ends_with('_')) {
            key.push(c);
        }
    }
    key.to_lowercase()
}

/// The cache file's contents, or an empty cache (with a warning when a file exists but is not a
/// cache file).
pub(super) fn read_cache(path: &Path) -> CacheFile {
    match std::fs::read(path) {
        Err(_) => CacheFile::default(),
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            eprintln!(
                "cads: warning: ignoring the kernel tuning cache {} ({e}); it will be measured again",
                path.display()
            );
            CacheFile::default()
        }),
    }
}

/// Merge `choice` for `op` into the cache file; a failure is a warning.
pub(super) fn write_cache(path: &Path, adapter: &str, op: &str, choice: CachedChoice) {
    let mut file = read_cache(path);
    file.adapter = adapter.to_string();
    file.choices.insert(op.to_string(), choice);
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec_pretty(&file).map_err(|e| e.to_string()))
        .and_then(|bytes| {
            crate::util::file::write_atomically("tuning cache", path, &bytes)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        eprintln!(
            "cads: warning: could not write the kernel tuning cache {}: {e}",
            path.display()
        );
    }
}

/// FNV-1a (64-bit) of every kernel's shader name, entry point and source, in order, as 16 hex
/// digits: a stable fingerprint across builds and toolchains (std's hasher may change).
pub fn kernels_fingerprint(families: &[&[KernelSpec]]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes.iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
    };
    for spec in families.iter().flat_map(|f| f.iter()) {
        eat(spec.shader.as_bytes());
        eat(spec.entry.as_bytes());
        eat(spec.source.as_bytes());
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_keys_are_file_name_safe_and_tell_drivers_and_cpus_apart() {
        let mut a = AdapterSummary {
            name: "llvmpipe (LLVM 19.1.7, 256 bits)".into(),
            backend: wgpu::Backend::Vulkan,
            device_type: wgpu::DeviceType::Cpu,
            driver: "llvmpipe".into(),
            driver_info: "Mesa 26.1.6 (LLVM 19.1.7)".into(),
            subgroup_max_size: 8,
            subgroup_min_size: 8,
        };
        let k26 = key_of(&a, "x86_64-avx2-fma");
        assert_eq!(
            k26,
            "llvmpipe_llvm_19.1.7_256_bits_-llvmpipe-mesa_26.1.6_llvm_19.1.7_-vulkan-x86_64-avx2-fma"
        );
        assert_ne!(key_of(&a, "x86_64-avx2-fma-avx512f-avx512vl"), k26);
        assert_eq!(adapter_key(&a), key_of(&a, &cpu_features()));
        assert!(cpu_features().starts_with(std::env::consts::ARCH));
        a.driver_info = "Mesa 25.0.7 (LLVM 15.0.6)".into();
        assert_ne!(key_of(&a, "x86_64-avx2-fma"), k26);
        // A GPU's key does not depend on the host CPU.
        let gpu = AdapterSummary {
            device_type: wgpu::DeviceType::DiscreteGpu,
            ..a.clone()
        };
        assert_eq!(key_of(&gpu, "x86_64"), key_of(&gpu, "x86_64-avx2"));
        a.name = "../../etc/passwd".into();
        assert!(!adapter_key(&a).contains('/'));
    }

    #[test]
    fn a_corrupt_cache_file_reads_as_empty_and_is_replaced_on_write() {
        let dir = std::env::temp_dir().join(format!("cads-tuning-unit-{}", std::process::id()));
        let path = dir.join("adapter.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, b"{\"adapter\": 3, trailing garbage").unwrap();
        assert_eq!(read_cache(&path), CacheFile::default());
        let choice = CachedChoice {
            variant: "v".into(),
            candidates: vec!["v".into()],
            ms: [("v".to_string(), 1.5)].into_iter().collect(),
            kernels: "0123456789abcdef".into(),
        };
        write_cache(&path, "gpu", "matmul", choice.clone());
        let back = read_cache(&path);
        assert_eq!(back.adapter, "gpu");
        assert_eq!(back.choices.get("matmul"), Some(&choice));
        // A file written before fingerprints were recorded reads with an empty one (never a
        // match: its choices are measured again).
        let old = concat!(
            r#"{"adapter": "gpu", "choices": {"matmul": "#,
            r#"{"variant": "v", "candidates": ["v"], "ms": {"v": 1.5}}}}"#
        );
        std::fs::write(&path, old).unwrap();
        assert_eq!(read_cache(&path).choices["matmul"].kernels, "");
        // An unwritable place (a file where the folder should be) is a warning, not a panic.
        write_cache(&path.join("below-a-file.json"), "gpu", "matmul", choice);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
