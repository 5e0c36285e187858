//! Per-adapter kernel choice: for an op with several kernel variants (the matmul tiles, the
//! conv3d kernel family), which one runs on this adapter.
//!
//! The best variant depends on the adapter and even on its driver version: on lavapipe the
//! `vec4_4x4` matmul tile wins on Mesa 25 and tall tiles are 1.3–1.6× faster than it on Mesa 26
//! (docs/lavapipe-loads.md). So an op asks [`Gpu::tuned_variant`], which answers, in order:
//!
//! 1. `CADS_KERNEL_<OP>` (e.g. `CADS_KERNEL_MATMUL=vec4_8x4`): that variant. A name the op does
//!    not have is an error that lists the names it has.
//! 2. `CADS_TUNE=off` (also `0`, `false`, `no`): the op's default, nothing measured or cached.
//!    An op with a single candidate on this adapter (conv3d on CPU adapters) runs it, likewise
//!    unmeasured.
//! 3. This context's memo of earlier answers, then the disk cache
//!    `$XDG_CACHE_HOME/cads/tuning/<adapter key>.json` (`$HOME/.cache/...` when XDG_CACHE_HOME is
//!    unset or relative; `$CADS_TUNE_CACHE/<adapter key>.json` when that is set). A cached
//!    choice counts only if it was made among the same candidates on the same kernels (a
//!    fingerprint of the shader sources and entry points the op's candidates run), so a build
//!    with new variants, or with changed kernels under the old names, measures again.
//! 4. Otherwise every candidate is timed by the op's `measure` (one run, milliseconds): one
//!    warm-up round (it compiles the pipelines), then [`TUNE_ROUNDS`] rounds that run each
//!    candidate once in turn, so a load that comes and goes on a shared machine hits all of them
//!    alike; each candidate's minimum decides. The choice is memoised and merged into the cache
//!    file (written atomically).
//!
//! The cache never makes an op fail: a file that is not valid JSON of the expected form is
//! ignored with a warning on stderr (and replaced at the next write), an unwritable directory
//! costs a warning. The adapter key is its name, driver, driver info and backend, so a driver
//! update gets a fresh measurement; on a CPU adapter also the host CPU's vector features, because
//! the same driver compiles per-lane loads to gathers on one CPU and to per-lane branches on
//! another (docs/lavapipe-loads.md), which reorders the kernels (a home folder shared by
//! machines of a cluster must not carry one machine's choice to another).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::context::{AdapterSummary, Gpu};
use super::kernel::KernelSpec;
use crate::error::{Error, Result};

/// Timed rounds after the warm-up round.
pub const TUNE_ROUNDS: usize = 3;

/// The environment variable naming the cache folder itself (instead of
/// `$XDG_CACHE_HOME/cads/tuning`).
pub const TUNE_CACHE_ENV: &str = "CADS_TUNE_CACHE";

/// Where a [`TunedChoice`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceSource {
    /// `CADS_KERNEL_<OP>` named it.
    Override,
    /// Tuning is off (`CADS_TUNE=off`): the op's default.
    Default,
    /// The op has one candidate on this adapter: nothing to measure.
    OnlyCandidate,
    /// Read from the on-disk cache.
    Cache,
    /// Measured in this process.
    Measured,
}

/// The variant an op runs on this context, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct TunedChoice {
    pub variant: String,
    pub source: ChoiceSource,
}

/// How choices are made: read from the environment when a context is created, replaceable with
/// [`Gpu::set_tune_settings`] (tests, embedding hosts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuneSettings {
    /// Variant names forced per op (lower-case op name → variant).
    pub overrides: BTreeMap<String, String>,
    /// False when `CADS_TUNE=off`: every op runs its default.
    pub tune: bool,
    /// Folder of the per-adapter cache files; `None`: measure but remember nothing on disk.
    pub cache_dir: Option<PathBuf>,
}

impl TuneSettings {
    /// Settings from the process environment.
    pub fn from_env() -> TuneSettings {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        TuneSettings::from_vars(
            |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            vars.iter().map(|(k, _)| k.as_str()),
        )
    }

    /// Settings from an environment given as a lookup and the list of its variable names (the
    /// overrides are every `CADS_KERNEL_<OP>` present).
    pub fn from_vars<'a>(
        get: impl Fn(&str) -> Option<String>,
        names: impl Iterator<Item = &'a str>,
    ) -> TuneSettings {
        let overrides = names
            .filter_map(|k| k.strip_prefix("CADS_KERNEL_"))
            .filter_map(|op| {
                let v = get(&format!("CADS_KERNEL_{op}"))?;
                let v = v.trim().to_string();
                (!v.is_empty()).then(|| (op.to_ascii_lowercase(), v))
            })
            .collect();
        let tune = !matches!(
            get("CADS_TUNE")
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref(),
            Some("off" | "0" | "false" | "no")
        );
        let absolute = |v: String| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
        let cache_home = get("XDG_CACHE_HOME")
            .and_then(absolute)
            .or_else(|| get("HOME").and_then(absolute).map(|h| h.join(".cache")));
        // CADS_TUNE_CACHE names the folder itself (a node-local folder under a shared home; the
        // tests' own folder, so their measurements, made beside other tests, stay out of the
        // user's cache).
        let explicit = get(TUNE_CACHE_ENV)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        TuneSettings {
            overrides,
            tune,
            cache_dir: explicit.or_else(|| cache_home.map(|c| c.join("cads").join("tuning"))),
        }
    }
}

/// Per-context state: the settings and the answers given so far (op → choice).
pub(crate) struct Tuner {
    settings: Mutex<TuneSettings>,
    memo: Mutex<HashMap<String, TunedChoice>>,
}

impl Tuner {
    pub(crate) fn from_env() -> Tuner {
        Tuner {
            settings: Mutex::new(TuneSettings::from_env()),
            memo: Mutex::new(HashMap::new()),
        }
    }
}

/// One op's entry in a cache file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct CachedChoice {
    variant: String,
    /// The candidates it was chosen among, sorted (a build with other candidates measures again).
    candidates: Vec<String>,
    /// Every candidate's minimum over the rounds, milliseconds (what the choice was made on).
    ms: BTreeMap<String, f64>,
    /// [`kernels_fingerprint`] of the kernels it was measured on (empty in files written before
    /// it was recorded: those choices are measured again).
    #[serde(default)]
    kernels: String,
}

/// A cache file: one adapter, its ops' choices.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    adapter: String,
    choices: BTreeMap<String, CachedChoice>,
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
fn read_cache(path: &Path) -> CacheFile {
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
fn write_cache(path: &Path, adapter: &str, op: &str, choice: CachedChoice) {
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

/// The candidate with the smallest time (ties: the earlier one).
fn fastest(times: &BTreeMap<String, f64>, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .filter_map(|c| times.get(*c).map(|t| (*c, *t)))
        .fold(None, |best: Option<(&str, f64)>, (c, t)| match best {
            Some((_, bt)) if bt <= t => best,
            _ => Some((c, t)),
        })
        .map(|(c, _)| c.to_string())
}

/// What one op offers the tuner.
pub struct TuneRequest<'a> {
    /// Op name: the memo and cache key, and `CADS_KERNEL_<OP>` upper-cased.
    pub op: &'static str,
    /// Every variant an override may name.
    pub variants: &'a [&'a str],
    /// The variants worth timing on this adapter (a subset of `variants`).
    pub candidates: &'a [&'a str],
    /// What runs when tuning is off.
    pub default: &'a str,
    /// The kernel families the candidates run (with whatever the measured launches may pick
    /// among them): a cached choice measured on other kernels counts as not measured.
    pub kernels: &'a [&'a [KernelSpec]],
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

impl Gpu {
    /// Replace this context's tuning settings and forget its memo.
    pub fn set_tune_settings(&self, settings: TuneSettings) {
        *self
            .inner
            .tuner
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = settings;
        self.inner
            .tuner
            .memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// This context's tuning settings.
    pub fn tune_settings(&self) -> TuneSettings {
        self.inner
            .tuner
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The path of this adapter's cache file under the current settings, if any.
    pub fn tuning_cache_path(&self) -> Option<PathBuf> {
        let dir = self.tune_settings().cache_dir?;
        Some(dir.join(format!("{}.json", adapter_key(self.adapter()))))
    }

    /// Which variant `req.op` runs on this context (see the module docs for the order of
    /// precedence). `measure(variant)` runs the variant once on a representative shape and
    /// returns its milliseconds; it is called only when nothing is overridden, memoised or
    /// cached. A candidate whose measurement fails is left out with a warning; when all fail, the
    /// first failure is returned.
    pub fn tuned_variant(
        &self,
        req: &TuneRequest,
        mut measure: impl FnMut(&str) -> Result<f64>,
    ) -> Result<TunedChoice> {
        // Every answer is memoised (the memo is cleared with the settings), so an op asks this
        // once per context and then pays a lock and a lookup per launch.
        if let Some(c) = self.remembered_choice(req.op) {
            return Ok(c);
        }
        let settings = self.tune_settings();
        if let Some(v) = settings.overrides.get(req.op) {
            return match req.variants.iter().find(|n| **n == v.as_str()) {
                Some(n) => {
                    let choice = TunedChoice {
                        variant: n.to_string(),
                        source: ChoiceSource::Override,
                    };
                    self.memo_put(req.op, &choice);
                    Ok(choice)
                }
                None => Err(Error::invalid(
                    req.op,
                    format!(
                        "CADS_KERNEL_{} naming one of {:?}",
                        req.op.to_ascii_uppercase(),
                        req.variants
                    ),
                    format!("{v:?}"),
                )),
            };
        }
        if !settings.tune {
            let choice = TunedChoice {
                variant: req.default.to_string(),
                source: ChoiceSource::Default,
            };
            self.memo_put(req.op, &choice);
            return Ok(choice);
        }
        if let [only] = req.candidates {
            let choice = TunedChoice {
                variant: only.to_string(),
                source: ChoiceSource::OnlyCandidate,
            };
            self.memo_put(req.op, &choice);
            return Ok(choice);
        }
        // One measurement at a time in this process: contexts tuning side by side (parallel
        // tests) would slow each other's timings, and the second finds the first's cache file.
        static TUNING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = TUNING.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.tuning_cache_path();
        let mut sorted_candidates: Vec<String> =
            req.candidates.iter().map(|c| c.to_string()).collect();
        sorted_candidates.sort();
        let kernels = kernels_fingerprint(req.kernels);
        let candidates_match = |c: &CachedChoice| {
            c.candidates == sorted_candidates
                && c.kernels == kernels
                && req.candidates.contains(&c.variant.as_str())
        };
        if let Some(cached) = path
            .as_deref()
            .map(read_cache)
            .and_then(|f| f.choices.get(req.op).cloned())
            .filter(candidates_match)
        {
            let choice = TunedChoice {
                variant: cached.variant,
                source: ChoiceSource::Cache,
            };
            self.memo_put(req.op, &choice);
            return Ok(choice);
        }
        let times = self.measure_candidates(req, &mut measure)?;
        let variant = fastest(&times, req.candidates).ok_or_else(|| {
            Error::invalid(req.op, "at least one candidate kernel to tune", "none")
        })?;
        if let Some(path) = &path {
            let cached = CachedChoice {
                variant: variant.clone(),
                candidates: sorted_candidates,
                ms: times,
                kernels,
            };
            write_cache(path, &self.adapter().name, req.op, cached);
        }
        let choice = TunedChoice {
            variant,
            source: ChoiceSource::Measured,
        };
        self.memo_put(req.op, &choice);
        Ok(choice)
    }

    /// Each candidate's minimum milliseconds over [`TUNE_ROUNDS`] interleaved rounds after a
    /// warm-up round; failing candidates dropped (all failing: the first error).
    fn measure_candidates(
        &self,
        req: &TuneRequest,
        measure: &mut impl FnMut(&str) -> Result<f64>,
    ) -> Result<BTreeMap<String, f64>> {
        let mut live: Vec<&str> = Vec::new();
        let mut first_error = None;
        for &c in req.candidates {
            match measure(c) {
                Ok(_) => live.push(c),
                Err(e) => {
                    eprintln!(
                        "cads: warning: {}: kernel variant {c} left out of tuning: {e}",
                        req.op
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        if live.is_empty() {
            return Err(first_error.unwrap_or_else(|| {
                Error::invalid(req.op, "at least one candidate kernel to tune", "none")
            }));
        }
        let mut times: BTreeMap<String, f64> = BTreeMap::new();
        for _ in 0..TUNE_ROUNDS {
            for &c in &live {
                let ms = measure(c)?;
                let best = times.entry(c.to_string()).or_insert(f64::INFINITY);
                *best = best.min(ms);
            }
        }
        Ok(times)
    }

    /// The answer [`Gpu::tuned_variant`] gave `op` on this context before, if any (a cheap
    /// first check for ops that build their request on every launch).
    pub fn remembered_choice(&self, op: &str) -> Option<TunedChoice> {
        self.inner
            .tuner
            .memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(op)
            .cloned()
    }

    fn memo_put(&self, op: &str, choice: &TunedChoice) {
        self.inner
            .tuner
            .memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(op.to_string(), choice.clone());
    }
}

/// The context of the library's own unit tests: the environment's adapter, with its tuning
/// cache in a folder of the system's temp directory, so that a test which tunes (on a machine
/// with nothing cached) never writes into the user's cache while other test threads load the
/// adapter. No adapter is a failure that says why, never a skip.
#[cfg(test)]
pub(crate) fn unit_test_gpu() -> Gpu {
    let gpu = Gpu::new().unwrap_or_else(|e| panic!("GPU test cannot run: {e}"));
    let mut settings = gpu.tune_settings();
    settings.cache_dir = Some(std::env::temp_dir().join("cads-unit-test-tuning"));
    gpu.set_tune_settings(settings);
    gpu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> TuneSettings {
        let owned: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TuneSettings::from_vars(
            |name| {
                owned
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            },
            list.iter().map(|(k, _)| *k),
        )
    }

    #[test]
    fn settings_read_overrides_the_off_switch_and_the_xdg_cache_folder() {
        let s = vars(&[
            ("CADS_KERNEL_MATMUL", " vec4_8x4 "),
            ("CADS_KERNEL_CONV3D", ""),
            ("CADS_TUNE", "OFF"),
            ("XDG_CACHE_HOME", "/x/cache"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            s.overrides.get("matmul").map(String::as_str),
            Some("vec4_8x4")
        );
        assert!(
            !s.overrides.contains_key("conv3d"),
            "an empty override is no override"
        );
        assert!(!s.tune);
        assert_eq!(s.cache_dir, Some(PathBuf::from("/x/cache/cads/tuning")));
        // XDG_CACHE_HOME relative (invalid per the XDG spec) or unset: $HOME/.cache.
        let s = vars(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")]);
        assert!(s.tune);
        assert_eq!(
            s.cache_dir,
            Some(PathBuf::from("/home/u/.cache/cads/tuning"))
        );
        assert_eq!(vars(&[]).cache_dir, None);
        let s = vars(&[("CADS_TUNE_CACHE", "/t/tune"), ("HOME", "/home/u")]);
        assert_eq!(s.cache_dir, Some(PathBuf::from("/t/tune")));
        let s = vars(&[("CADS_TUNE_CACHE", " "), ("HOME", "/home/u")]);
        assert_eq!(
            s.cache_dir,
            Some(PathBuf::from("/home/u/.cache/cads/tuning")),
            "an empty folder name is no folder"
        );
    }

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
    fn the_fastest_candidate_wins_and_ties_keep_the_earlier_one() {
        let times: BTreeMap<String, f64> = [("a", 3.0), ("b", 1.0), ("c", 1.0)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(fastest(&times, &["a", "b", "c"]).as_deref(), Some("b"));
        assert_eq!(fastest(&times, &["c", "b"]).as_deref(), Some("c"));
        assert_eq!(fastest(&times, &["z"]), None);
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
