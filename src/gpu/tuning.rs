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
//!    with new variants, or with changed kernels under the old names, measures again. The file,
//!    the adapter key and the fingerprint: src/gpu/tuning_cache.rs.
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
use std::path::PathBuf;
use std::sync::Mutex;

use super::context::Gpu;
use super::kernel::KernelSpec;
use super::tuning_cache::{
    adapter_key, kernels_fingerprint, read_cache, write_cache, CachedChoice,
};
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
        // Time the candidates with the profiler off (restored after): a profiled launch waits
        // for the device after itself, a fixed cost per launch that would favour the variants
        // with fewer launches, and the choice is kept on disk. (`cads check --json` profiles
        // its checks, which may be the first use of a tuned op.)
        let profiling = self.is_profiling();
        self.set_profiling(false);
        let times = self.measure_candidates(req, &mut measure);
        self.set_profiling(profiling);
        let times = times?;
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
    fn the_fastest_candidate_wins_and_ties_keep_the_earlier_one() {
        let times: BTreeMap<String, f64> = [("a", 3.0), ("b", 1.0), ("c", 1.0)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(fastest(&times, &["a", "b", "c"]).as_deref(), Some("b"));
        assert_eq!(fastest(&times, &["c", "b"]).as_deref(), Some("c"));
        assert_eq!(fastest(&times, &["z"]), None);
    }
}
