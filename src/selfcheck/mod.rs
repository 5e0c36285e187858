//! `cads check`: every kernel variant this adapter runs, on small random inputs, against the f64
//! CPU twins of src/reference/, forward and backward.
//!
//! Why: the kernels are proven on lavapipe in CI, but a user's GPU runs other variants (the
//! workgroup-memory tiles, the implicit-GEMM convs, cooperative matrices, subgroup broadcasts)
//! through a driver nobody here has run. A wrong result there would train silently to a worse
//! model. This runs each family's variants (the tuner's candidates and the rest, each as the
//! device runs it: a variant the device cannot run reports what ran instead) on shapes that take
//! the odd paths too (ragged extents, transposes, strides, groups, dilation), in a second or a
//! few, and says which one is wrong and by how much.
//!
//! A check passes when every output element lies within its family's tolerance
//! ([`crate::util::Tolerance`]: f32 accumulation for the f32 kernels, f16 operand rounding plus
//! f32 accumulation for the f16 ones), or, for the encoder under autocast, each output's relative
//! L2 error within its bound; `worst` is the largest error as a multiple of its bound (≤ 1
//! passes). An op that returns an error fails its check with that error; the run goes on.

mod conv;
mod drr;
mod matmul;
mod model;
mod optim;
mod pointwise;
mod rows;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::reference::Array;
use crate::tensor::Tensor;
use crate::util::{compare, worst_excess, Rng, Tolerance};

/// One variant on one case.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Check {
    /// The op family: `matmul`, `matmul_f16`, `conv3d`, `conv_transpose3d`, `attention`,
    /// `softmax`, `log_softmax`, `layer_norm`, `instance_norm`, `sum`, `unary`, `unary_f16`,
    /// `binary`,
    /// `gelu_linear`, `dw_mlp`, `max_pool3d`, `avg_pool3d`, `resample`, `l2_normalize`,
    /// `normalized_linear`, `soft_cross_entropy`, `drr_forward`, `drr_backproject`, `adamw`,
    /// `sgd`, `ema`, `pvt_encoder`.
    pub family: &'static str,
    /// The variant asked for (the names `CADS_KERNEL_*` take where there is one).
    pub variant: String,
    /// The variant the device ran for it (differs where the device lacks what it needs).
    pub ran_as: String,
    /// The shapes and options of the case.
    pub case: String,
    /// The largest error over every compared output, as a multiple of its bound (≤ 1 passes);
    /// `None` when the op failed before anything was compared.
    pub worst: Option<f64>,
    /// Why the check failed: the first output out of tolerance (its worst element) or the op's
    /// error; `None` when it passed.
    pub failure: Option<String>,
    /// The kernels (`shader::entry`) the check launched, sorted, when the run records them
    /// ([`run_reporting`]); empty otherwise.
    pub kernels: Vec<String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    fn failure_text(&self) -> &str {
        self.failure.as_deref().unwrap_or("")
    }
}

/// Every check of one run, on one adapter.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub adapter: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed())
    }

    /// `Ok` when every check passed; else an error naming each failed check.
    pub fn verdict(&self) -> Result<()> {
        let failed: Vec<String> = self
            .failed()
            .map(|c| {
                format!(
                    "{}/{} ({}): {}",
                    c.family,
                    c.variant,
                    c.case,
                    c.failure_text()
                )
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::invalid(
            "cads check",
            format!("all {} checks within tolerance", self.checks.len()),
            format!("{} failed: {}", failed.len(), failed.join("; ")),
        ))
    }
}

/// Outputs of one check compared one by one: the worst excess over all of them and the first
/// failure's message.
#[derive(Default)]
pub(crate) struct Comparison {
    worst: f64,
    failure: Option<String>,
}

impl Comparison {
    /// Compare one output (`what`: forward, grad x, ...) of the GPU with the reference.
    pub(crate) fn close(&mut self, what: &str, got: &[f32], want: &[f64], tol: Tolerance) {
        let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        self.worst = self.worst.max(worst_excess(&got, want, tol));
        if self.failure.is_none() {
            self.failure = compare(what, &got, want, tol).err();
        }
    }

    /// [`Comparison::close`] on a GPU tensor (read back) against a reference array, shapes
    /// included.
    pub(crate) fn tensor(&mut self, what: &str, got: &Tensor, want: &Array, tol: Tolerance) {
        if let Some(values) = self.read(what, got, want) {
            self.close(what, &values, &want.data, tol);
        }
    }

    /// Compare one output by its relative L2 error ‖got − want‖ / max(‖want‖, `floor`) against
    /// `bound` (the measure for mixed precision, whose per-element errors follow the f16
    /// roundings of every operand on the way). `floor` keeps an output that is zero in exact
    /// arithmetic (rounding noise on both sides) from dividing by its own noise.
    pub(crate) fn relative_l2(
        &mut self,
        what: &str,
        got: &Tensor,
        want: &Array,
        bound: f64,
        floor: f64,
    ) {
        let Some(values) = self.read(what, got, want) else {
            return;
        };
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for (&g, &w) in values.iter().zip(&want.data) {
            diff += (g as f64 - w).powi(2);
            norm += w * w;
        }
        let error = diff.sqrt() / norm.sqrt().max(floor);
        let excess = if error.is_nan() {
            f64::INFINITY
        } else {
            error / bound
        };
        self.worst = self.worst.max(excess);
        if excess > 1.0 && self.failure.is_none() {
            self.failure = Some(format!(
                "{what}: relative L2 error {error:.3e} over the bound {bound:.1e}"
            ));
        }
    }

    /// The values of `got`, when its shape is `want`'s and it reads back; else a failure.
    fn read(&mut self, what: &str, got: &Tensor, want: &Array) -> Option<Vec<f32>> {
        if got.shape() != want.shape.as_slice() {
            self.fail(format!(
                "{what}: shape {:?}, expected {:?}",
                got.shape(),
                want.shape
            ));
            return None;
        }
        got.to_vec()
            .map_err(|e| self.fail(format!("{what}: read back: {e}")))
            .ok()
    }

    /// Fail the check with `message` (kept only if it is the first failure).
    pub(crate) fn fail(&mut self, message: String) {
        self.worst = f64::INFINITY;
        self.failure.get_or_insert(message);
    }

    /// A gradient the tape should have produced for `leaf`, compared (missing: a failure).
    pub(crate) fn grad(
        &mut self,
        what: &str,
        grads: &crate::autograd::Gradients,
        leaf: &Tensor,
        want: &Array,
        tol: Tolerance,
    ) {
        match grads.get(leaf) {
            Some(g) => self.tensor(what, g, want, tol),
            None => self.fail(format!("{what}: no gradient reached the input")),
        }
    }
}

/// The state of one run: the device, the inputs' generator, the filter, the checks so far and
/// who hears of each as it ends.
pub(crate) struct Run<'g> {
    pub(crate) gpu: &'g Gpu,
    pub(crate) rng: Rng,
    filter: Option<String>,
    checks: Vec<Check>,
    on_check: &'g mut dyn FnMut(&Check),
    /// Record each check's kernels through the device's profiler.
    record_kernels: bool,
}

impl Run<'_> {
    /// Whether `family/variant` is selected by the filter (texts separated by `|`, any of which
    /// it contains, [`crate::util::filter_selects`]; none selects all).
    pub(crate) fn wants(&self, family: &str, variant: &str) -> bool {
        crate::util::filter_selects(self.filter.as_deref(), &format!("{family}/{variant}"))
    }

    /// Run one check: `body` compares its outputs into the [`Comparison`]; an error it returns
    /// fails the check with that error (after whatever it compared).
    pub(crate) fn check(
        &mut self,
        family: &'static str,
        variant: &str,
        ran_as: &str,
        case: &str,
        body: impl FnOnce(&mut Self, &mut Comparison) -> Result<()>,
    ) {
        // Each check draws its inputs from a seed of its own name: the same values whatever
        // the filter selects around it.
        self.rng = Rng::new(seed_of(&[family, variant, case]));
        if self.record_kernels {
            self.gpu.take_profile();
        }
        let mut cmp = Comparison::default();
        let outcome = body(self, &mut cmp);
        let kernels = if self.record_kernels {
            // Profiled launches wait for the device, so every one is in the table by now.
            let mut names: Vec<String> = self
                .gpu
                .take_profile()
                .into_iter()
                .map(|k| k.kernel.split(' ').next().unwrap_or("").to_string())
                .collect();
            names.sort();
            names.dedup();
            names
        } else {
            Vec::new()
        };
        let (worst, failure) = match outcome {
            Ok(()) => (Some(cmp.worst), cmp.failure),
            Err(e) => (
                None,
                Some(match cmp.failure {
                    Some(f) => format!("{f}; then {e}"),
                    None => e.to_string(),
                }),
            ),
        };
        let check = Check {
            family,
            variant: variant.to_string(),
            ran_as: ran_as.to_string(),
            case: case.to_string(),
            worst,
            failure,
            kernels,
        };
        (self.on_check)(&check);
        self.checks.push(check);
    }

    /// Uniform values in [−1, 1) as a reference array and the same values on the device
    /// (requiring a gradient when `leaf`).
    pub(crate) fn random(&mut self, shape: &[usize], leaf: bool) -> Result<(Array, Tensor)> {
        self.uniform(shape, -1.0, 1.0, leaf)
    }

    /// [`Run::random`] with values uniform in [lo, hi).
    pub(crate) fn uniform(
        &mut self,
        shape: &[usize],
        lo: f32,
        hi: f32,
        leaf: bool,
    ) -> Result<(Array, Tensor)> {
        let n = shape.iter().product();
        let data = self.rng.vec_uniform(n, lo, hi);
        let t = Tensor::from_slice(self.gpu, &data, shape)?.requires_grad_(leaf);
        Ok((Array::from_f32(&data, shape), t))
    }
}

/// FNV-1a over the parts (with a separator): a stable seed from a check's name.
fn seed_of(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Run every check whose `family/variant` `filter` selects (texts separated by `|`, any of which
/// it contains; all when `None`) on `gpu`. Each check's inputs come from a seed of its name, so
/// two runs on one adapter, filtered or not, compare the same values.
pub fn run(gpu: &Gpu, filter: Option<&str>) -> Result<Report> {
    run_reporting(gpu, filter, false, &mut |_| {})
}

/// [`run`], calling `on_check` with each check as it ends (a command line prints it then, so a
/// run cut short, or one hung in a kernel, still shows what it had found). With
/// `record_kernels`, each check also lists the kernels it launched, through the device's
/// profiler (which this turns on for the run and then restores; a profile gathered before is
/// dropped), so a report says which entry points a variant's checks really reached.
pub fn run_reporting(
    gpu: &Gpu,
    filter: Option<&str>,
    record_kernels: bool,
    on_check: &mut dyn FnMut(&Check),
) -> Result<Report> {
    let profiling = gpu.is_profiling();
    if record_kernels {
        gpu.set_profiling(true);
    }
    let mut run = Run {
        gpu,
        rng: Rng::new(0),
        filter: filter.map(str::to_string),
        checks: Vec::new(),
        on_check,
        record_kernels,
    };
    let outcome = run_families(&mut run);
    if record_kernels {
        gpu.set_profiling(profiling);
    }
    outcome?;
    if run.checks.is_empty() {
        return Err(Error::invalid(
            "cads check",
            "a filter matching at least one family/variant (see `cads check` without one)",
            filter.unwrap_or(""),
        ));
    }
    Ok(Report {
        adapter: gpu.adapter().name.clone(),
        checks: run.checks,
    })
}

fn run_families(run: &mut Run) -> Result<()> {
    matmul::f32_variants(run)?;
    matmul::f16_variants(run)?;
    conv::conv3d_variants(run)?;
    conv::conv_transpose3d_variants(run)?;
    rows::attention_variants(run)?;
    rows::softmax_variants(run)?;
    rows::norms(run)?;
    rows::sums(run)?;
    pointwise::elementwise(run)?;
    pointwise::unary_f16(run)?;
    pointwise::gelu_linear(run)?;
    pointwise::dw_mlp(run)?;
    pointwise::pooling(run)?;
    pointwise::losses(run)?;
    drr::drr_variants(run)?;
    optim::optimizers(run)?;
    model::encoder(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::F32_ACCUM;

    #[test]
    fn comparison_keeps_the_worst_and_the_first_failure() {
        let mut cmp = Comparison::default();
        cmp.close("a", &[1.0, 2.0], &[1.0, 2.0], F32_ACCUM);
        assert_eq!(cmp.worst, 0.0);
        assert!(cmp.failure.is_none());
        cmp.close("b", &[1.0, 2.01], &[1.0, 2.0], F32_ACCUM);
        cmp.close("c", &[f32::NAN], &[0.0], F32_ACCUM);
        assert_eq!(cmp.worst, f64::INFINITY);
        let failure = cmp.failure.expect("b is out of tolerance");
        assert!(failure.starts_with("b: 1 of 2 elements"), "{failure}");
    }

    #[test]
    fn a_failed_check_names_itself_in_the_verdict() {
        let check = |failure: Option<&str>| Check {
            family: "matmul",
            variant: "vec4_4x4".into(),
            ran_as: "vec4_4x4".into(),
            case: "nn 3x4x5".into(),
            worst: Some(0.5),
            failure: failure.map(str::to_string),
            kernels: Vec::new(),
        };
        let mut report = Report {
            adapter: "test".into(),
            checks: vec![check(None), check(None)],
        };
        assert!(report.verdict().is_ok());
        report
            .checks
            .push(check(Some("forward: 1 of 15 elements out")));
        let err = report.verdict().unwrap_err().to_string();
        assert!(err.contains("1 failed"), "{err}");
        assert!(
            err.contains("matmul/vec4_4x4 (nn 3x4x5): forward: 1 of 15"),
            "{err}"
        );
    }
}
