//! The one error type of the crate.
//!
//! Every variant names the operation that failed, what it expected and what it got, so a
//! message read in a log is enough to find the call that caused it.

use std::fmt;

/// Result alias used by every public function of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A shape printed as `[2, 3, 4]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Shape(pub Vec<usize>);

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(s: &[usize]) -> Self {
        Shape(s.to_vec())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that had to agree did not.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch {
        op: &'static str,
        expected: String,
        got: String,
    },

    /// An argument outside the range the operation accepts.
    #[error("{op}: invalid argument: expected {expected}, got {got}")]
    InvalidArgument {
        op: &'static str,
        expected: String,
        got: String,
    },

    /// A tensor of another element type than the operation takes (an f16 tensor given to an op
    /// that reads f32, or the reverse).
    #[error("{op}: element type mismatch: expected {expected}, got {got}")]
    DTypeMismatch {
        op: &'static str,
        expected: String,
        got: String,
    },

    /// A tensor larger than the device lets one binding or buffer be.
    #[error("{op}: tensor of {bytes} bytes exceeds the device limit of {limit} bytes ({which})")]
    TooLarge {
        op: &'static str,
        bytes: u64,
        limit: u64,
        which: &'static str,
    },

    /// A launch grid over the device's workgroup-count limit even after folding into 2-D.
    #[error("{op}: launch of {workgroups} workgroups exceeds the device limit of {limit} per dimension squared")]
    LaunchTooLarge {
        op: &'static str,
        workgroups: u64,
        limit: u64,
    },

    /// No adapter matched, or none exists.
    #[error("no GPU adapter: {reason}. {hint}")]
    NoAdapter { reason: String, hint: &'static str },

    /// The adapter refused the device request.
    #[error("device request failed on adapter '{adapter}': {reason}")]
    DeviceRequest { adapter: String, reason: String },

    /// The device was lost (driver reset, GPU removed, host destroyed it).
    #[error("{op}: the GPU device was lost: {reason}")]
    DeviceLost { op: &'static str, reason: String },

    /// wgpu reported a validation or out-of-memory error.
    #[error("{op}: GPU error: {message}")]
    Gpu { op: &'static str, message: String },

    /// The operation is not differentiable with respect to what was asked, or backward misuse.
    #[error("{op}: autograd: {message}")]
    Autograd { op: &'static str, message: String },

    /// Two collections of named tensors (modules, optimizer state, a checkpoint) that had to
    /// hold the same names with the same shapes did not; nothing was written.
    #[error(
        "{op}: named tensors do not match: {}",
        describe_name_mismatch(missing, unexpected, shapes)
    )]
    NameMismatch {
        op: &'static str,
        /// Names the receiver has and the source lacks.
        missing: Vec<String>,
        /// Names the source has and the receiver lacks.
        unexpected: Vec<String>,
        /// `(name, expected shape, got shape)` for names in both with different shapes.
        shapes: Vec<(String, Shape, Shape)>,
    },

    /// File input/output.
    #[error("{op}: {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A strict state load whose file keys do not match the module's names: `missing` are the
    /// module's names the file lacks, `unexpected` the file's keys the module does not have.
    #[error("{op}: {path}: keys do not match the module (expected exactly its {expected} names): missing {missing:?}, unexpected {unexpected:?}")]
    StateKeys {
        op: &'static str,
        path: String,
        expected: usize,
        missing: Vec<String>,
        unexpected: Vec<String>,
    },

    /// A loss, gradient norm or other value that must be finite was NaN or infinite (training
    /// diverged, or a NaN entered through the data); nothing was updated with it.
    #[error("{op}: non-finite {what}: {value}{}", if *step == u64::MAX { String::new() } else { format!(" at step {step}") })]
    NonFinite {
        op: &'static str,
        what: &'static str,
        value: f32,
        /// The training step, or `u64::MAX` when there is none.
        step: u64,
    },

    /// A collective operation of data-parallel training failed: another rank failed or left, a
    /// wait passed its bound, or the ranks called different operations.
    #[error("{op}: rank {rank} of {size}: {message}")]
    Distributed {
        op: &'static str,
        rank: usize,
        size: usize,
        message: String,
    },

    /// A file that exists but whose contents are not what the reader accepts.
    #[error("{op}: {path}: {problem}")]
    BadFile {
        op: &'static str,
        path: String,
        problem: String,
    },
}

/// At most this many names of each kind are printed; the rest are counted.
const NAMES_SHOWN: usize = 8;

fn describe_name_mismatch(
    missing: &[String],
    unexpected: &[String],
    shapes: &[(String, Shape, Shape)],
) -> String {
    fn list(items: Vec<String>) -> String {
        let n = items.len();
        let mut shown: Vec<String> = items.into_iter().take(NAMES_SHOWN).collect();
        if n > NAMES_SHOWN {
            shown.push(format!("... {} more", n - NAMES_SHOWN));
        }
        shown.join(", ")
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "missing {} [{}]",
            missing.len(),
            list(missing.to_vec())
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "unexpected {} [{}]",
            unexpected.len(),
            list(unexpected.to_vec())
        ));
    }
    if !shapes.is_empty() {
        let items = shapes
            .iter()
            .map(|(n, e, g)| format!("{n}: expected {e}, got {g}"))
            .collect();
        parts.push(format!(
            "shape differs for {} [{}]",
            shapes.len(),
            list(items)
        ));
    }
    parts.join("; ")
}

impl Error {
    /// This error, about data read from the file `path`, as a [`Error::BadFile`] that names the
    /// file (ops below the data layer never see a path; the caller that read the file adds it).
    /// An error that already names a file is returned unchanged.
    pub fn in_file(self, op: &'static str, path: impl fmt::Display) -> Self {
        match self {
            e @ (Error::BadFile { .. } | Error::Io { .. }) => e,
            e => Error::BadFile {
                op,
                path: path.to_string(),
                problem: e.to_string(),
            },
        }
    }

    /// [`Error::in_file`] for a step that mixes data checks with GPU work (preprocessing that
    /// resamples and then projects, prediction): only errors about the data (an invalid argument
    /// or a shape mismatch, such as a spacing whose resampled grid would be absurd) are wrapped to
    /// name `path`; device, GPU and limit errors keep their own variant, so a caller can still
    /// tell a lost device from a bad file.
    pub fn in_input_file(self, op: &'static str, path: impl fmt::Display) -> Self {
        match self {
            e @ (Error::InvalidArgument { .. } | Error::ShapeMismatch { .. }) => {
                e.in_file(op, path)
            }
            e => e,
        }
    }

    /// Shape mismatch from two printable shapes.
    pub fn shape(op: &'static str, expected: impl fmt::Debug, got: impl fmt::Debug) -> Self {
        Error::ShapeMismatch {
            op,
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        }
    }

    /// Invalid argument from two printable values.
    pub fn invalid(op: &'static str, expected: impl fmt::Display, got: impl fmt::Display) -> Self {
        Error::InvalidArgument {
            op,
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}
