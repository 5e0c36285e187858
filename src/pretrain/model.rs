//! The CADS student and teacher (../shared/CADS.md, "Heads and loss"), named as the authors'
//! `MultiCropWrapper_v5` / `MultiCropWrapper_v5_tea`:
//!
//! - student: `backbone.` (PVTv2 with the 2D path) and four DINO heads on the global-average-
//!   pooled outputs of stages 1..4: `head.` (stage 4), `head_1.`, `head_2.`, `head_3.` (stages
//!   1-3), listed in that order (the wrapper's registration order);
//! - teacher: `backbone.` and `head.` (stage 4) only; initialised as a copy of the student's
//!   tensors of the same names, then moved by EMA, never differentiated.
//!
//! The authors' EMA pairs `zip(student.parameters(), teacher.parameters())` by position; their
//! student and teacher backbones are the same class and `head.` is registered right after
//! `backbone.`, so the zip (truncated at the teacher's end) pairs exactly the tensors of equal
//! name. Pairing by name here is the same pairing, and fails loudly instead of silently on any
//! architecture mismatch.
//!
//! Both forwards run the backbone once per modality group and the heads once on the
//! concatenated pooled features, as the wrapper does (the heads act row by row, so this equals
//! running them per view).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::dino_head::DinoHead;
use crate::models::pvt::{Modality, PvtEncoder};
use crate::nn::{self, Module, StateEntry, StateKind};
use crate::ops;
use crate::tensor::Tensor;
use crate::util::Rng;

use super::config::CadsConfig;

/// Student prefixes of the heads on stages 1..4.
pub const STUDENT_HEAD_PREFIXES: [&str; 4] = ["head_1.", "head_2.", "head_3.", "head."];

/// Logits of the student's four heads on one forward.
pub struct StudentOutput {
    /// `[rows, K]` per stage 1..4; rows = the volume batch then the image batch, in order.
    pub logits: [Tensor; 4],
}

pub struct CadsStudent {
    pub encoder: PvtEncoder,
    /// Heads on stages 1..4 (index 3 is `head.`).
    pub heads: [DinoHead; 4],
}

pub struct CadsTeacher {
    pub encoder: PvtEncoder,
    /// The stage-4 head, `head.`.
    pub head: DinoHead,
}

/// Teacher output of one forward.
pub struct TeacherOutput {
    /// `[rows, K]` logits of the stage-4 head.
    pub logits: Tensor,
    /// `[rows, C₄]` pooled stage-4 features (for the collapse monitor).
    pub features: Tensor,
}

/// `[N, *spatial, C]` → `[N, C]` for each stage.
fn pooled(stages: &[Tensor]) -> Result<Vec<Tensor>> {
    stages.iter().map(ops::global_avg_pool).collect()
}

impl CadsStudent {
    /// Encoder from `config.encoder`, heads seeded from `config.seed`.
    pub fn new(gpu: &Gpu, config: &CadsConfig) -> Result<Self> {
        config.validate()?;
        let mut encoder = PvtEncoder::new(gpu, config.encoder.clone())?;
        // Only the student records a tape; the teacher runs under no_grad, where a checkpointed
        // block would be a plain forward anyway.
        encoder.checkpoint_blocks = config.checkpoint_blocks;
        let mut rng = Rng::new(config.seed ^ 0x00DE_AD00_4EAD);
        let dims = config.encoder.embed_dims;
        let heads = [
            DinoHead::new(gpu, dims[0], config.head, &mut rng)?,
            DinoHead::new(gpu, dims[1], config.head, &mut rng)?,
            DinoHead::new(gpu, dims[2], config.head, &mut rng)?,
            DinoHead::new(gpu, dims[3], config.head, &mut rng)?,
        ];
        Ok(CadsStudent { encoder, heads })
    }

    /// Run the backbone on each `(input, modality)` group (e.g. the CT views x1, x2 as one
    /// volume batch, then the DRRs), concatenate the pooled features of each stage over the
    /// groups, and run head k on stage k. `training`: drop path on.
    pub fn forward(
        &self,
        groups: &[(&Tensor, Modality)],
        training: bool,
        rng: &mut Rng,
    ) -> Result<StudentOutput> {
        if groups.is_empty() {
            return Err(Error::invalid(
                "CadsStudent::forward",
                "at least one input",
                0,
            ));
        }
        let mut per_stage: [Vec<Tensor>; 4] = Default::default();
        for (x, modality) in groups {
            let out = self.encoder.forward(x, *modality, training, rng)?;
            for (k, f) in pooled(&out.stages)?.into_iter().enumerate() {
                per_stage[k].push(f);
            }
        }
        let mut logits = Vec::with_capacity(4);
        for (k, features) in per_stage.iter().enumerate() {
            let f = if features.len() == 1 {
                features[0].clone()
            } else {
                Tensor::concat(&features.iter().collect::<Vec<_>>(), 0)?
            };
            logits.push(self.heads[k].forward(&f)?);
        }
        let logits: [Tensor; 4] = logits
            .try_into()
            .map_err(|_| Error::invalid("CadsStudent::forward", "four stage outputs", "fewer"))?;
        Ok(StudentOutput { logits })
    }

    /// The parameters the teacher follows, as `(name, tensor)`: `backbone.*` and `head.*`.
    pub fn teacher_pairs(&self) -> Vec<(String, Tensor)> {
        teacher_view(&self.named_state())
    }

    /// Whether a student parameter name belongs to a head's last layer (frozen at the start).
    pub fn is_last_layer(name: &str) -> bool {
        name.contains("last_layer")
    }
}

/// Entries named `backbone.*` or `head.*` (the teacher's names), kinds kept as `(name, tensor)`
/// of parameters and buffers alike.
fn teacher_view(state: &[StateEntry]) -> Vec<(String, Tensor)> {
    state
        .iter()
        .filter(|e| e.name.starts_with("backbone.") || e.name.starts_with("head."))
        .map(|e| (e.name.clone(), e.tensor.clone()))
        .collect()
}

impl Module for CadsStudent {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.encoder.state(&format!("{prefix}backbone."), out);
        self.heads[3].state(&format!("{prefix}head."), out);
        for (k, head) in self.heads[..3].iter().enumerate() {
            head.state(&format!("{prefix}head_{}.", k + 1), out);
        }
    }
}

impl CadsTeacher {
    /// A teacher of `config`'s architecture holding a copy of `student`'s `backbone.` and
    /// `head.` state (the authors' `teacher.load_state_dict(student.state_dict())`).
    pub fn new(gpu: &Gpu, config: &CadsConfig, student: &CadsStudent) -> Result<Self> {
        let encoder = PvtEncoder::new(gpu, config.encoder.clone())?;
        let mut rng = Rng::new(config.seed ^ 0x7EAC_4E00);
        let head = DinoHead::new(gpu, config.encoder.embed_dims[3], config.head, &mut rng)?;
        let teacher = CadsTeacher { encoder, head };
        teacher.copy_from(student)?;
        Ok(teacher)
    }

    /// Overwrite the whole teacher state with the student's tensors of the same names.
    pub fn copy_from(&self, student: &CadsStudent) -> Result<()> {
        let mine = teacher_view(&self.named_state());
        nn::ema::copy_named(&mine, &student.teacher_pairs())
    }

    /// θ_t ← m·θ_t + (1 − m)·θ_s for every teacher parameter (by name; buffers untouched), on
    /// the GPU in place.
    pub fn ema_from(&self, student: &CadsStudent, momentum: f64) -> Result<()> {
        let mine: Vec<(String, Tensor)> = self
            .named_state()
            .into_iter()
            .filter(|e| e.kind == StateKind::Parameter)
            .map(|e| (e.name, e.tensor))
            .collect();
        let theirs: Vec<(String, Tensor)> = student
            .named_state()
            .into_iter()
            .filter(|e| {
                e.kind == StateKind::Parameter
                    && (e.name.starts_with("backbone.") || e.name.starts_with("head."))
            })
            .map(|e| (e.name, e.tensor))
            .collect();
        nn::ema::ema_update_named(&mine, &theirs, momentum)
    }

    /// Run the backbone on one volume batch (x1 and x2 stacked) and the stage-4 head on its
    /// pooled features. Records nothing: the caller runs it under `no_grad`, and the teacher's
    /// tensors never require gradients.
    pub fn forward(&self, x: &Tensor, training: bool, rng: &mut Rng) -> Result<TeacherOutput> {
        let out = self.encoder.forward(x, Modality::Volume, training, rng)?;
        let features = ops::global_avg_pool(&out.stages[3])?;
        let logits = self.head.forward(&features)?;
        Ok(TeacherOutput { logits, features })
    }
}

impl Module for CadsTeacher {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.encoder.state(&format!("{prefix}backbone."), out);
        self.head.state(&format!("{prefix}head."), out);
    }
}

/// Student and teacher together.
pub struct CadsModel {
    pub student: CadsStudent,
    pub teacher: CadsTeacher,
}

impl CadsModel {
    /// A fresh student (seeded) and its teacher copy. The teacher's leaves are parameters like
    /// the student's, but only ever run under `no_grad` (see `step`), so no tape reaches them.
    pub fn new(gpu: &Gpu, config: &CadsConfig) -> Result<Self> {
        let student = CadsStudent::new(gpu, config)?;
        let teacher = CadsTeacher::new(gpu, config, &student)?;
        Ok(CadsModel { student, teacher })
    }
}
