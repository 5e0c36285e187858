//! cads: GPU-native deep learning on wgpu with hand-written WGSL compute shaders, for the CADS
//! self-supervised CT encoder and PVT-UNet 3D segmentation.
//!
//! # Dimension legend
//!
//! | letter | meaning |
//! |---|---|
//! | N | batch |
//! | C | channels (activations are channels-last: `[N, D, H, W, C]`, images `[N, H, W, C]`) |
//! | D, H, W | depth, height, width of a volume (voxels) or image (pixels) |
//! | L | tokens (`L = D·H·W` of a stage grid), so tokens `[N, L, C]` share memory with the volume |
//! | M | keys/values of attention (after spatial reduction) |
//! | E | embedding width |
//! | heads | attention heads, head dim = E / heads |
//!
//! # Layers
//!
//! A module imports only modules of its own layer or of lower layers (smaller numbers); this
//! table is the one statement of the rule, and `tests/layers.rs` parses it and fails, naming the
//! file, the line and both modules, on any `crate::` path that reaches a higher layer. Rows marked
//! *future* are layers whose module does not exist yet.
//!
//! | layer | modules | what lives there |
//! |---|---|---|
//! | 0 | `error`, `util` | the one `Error` enum; RNG, tolerance presets, checked size arithmetic, atomic file writing (import only `error`) |
//! | 1 | `gpu` | adapter/device (own or borrowed), buffer pool, kernel cache, launch, timing |
//! | 2 | `tensor`, `autograd` | ONE layer: the GPU tensor and its tape import each other (eager autograd couples them); gradients are summed in one place, with the tensor layer's own unrecorded `fill`/`add`, so neither imports `ops` |
//! | 3 | `ops` | one file per op family: validate → plan → allocate → launch → record backward; plain op configs in `ops::config` |
//! | 4 | `reference` | naive CPU twin of every op, the specification; imports nothing of `ops` but `ops::config` |
//! | 5 | `nn` | layers with parameters, named state, PyTorch layouts, safetensors |
//! | 6 | `models` | PVT encoder, DINO head, PVT-UNet, small U-Net |
//! | 7 | `infer` | inference helpers on host data (argmax classes, Dice counts) |
//! | 8 | `optim`, `dist` | SGD, AdamW, schedules, clipping; data-parallel training: communicators (threads of one process, MPI behind the `mpi` feature), the bucketed gradient all-reduce, sample windows and sharding |
//! | 9 | `data` | host-only and generic: NIfTI, orientation, resampling, crops, augmentation, loaders (imports no GPU module) |
//! | 10 | `drr` | DRR geometry (detector, pose, mm), volumes as slabs, presets; calls the op in `ops::drr` (does not import `data`) |
//! | 11 | `checkpoint` | models + optimizer + schedule + RNG + config, written atomically |
//! | 12 | `pretrain` | the CADS recipe: config and presets, views (incl. the DRR view), the DRR cache, tiling, batches, student/teacher, loss, schedules, the training step, the preprocessing cache and the run (metrics, plot, checkpoints, resume) |
//! | 13 | `train` | end-to-end training demos (toy regression, U-Net on spheres) |
//! | 14 | `segment` | the PVT-UNet recipe: datasets, plan, preprocessing, loss, augmentation, training, sliding window, prediction, metrics |
//! | 15 | `bench`, `cli`, `kernels`, `selfcheck` | the benchmark suite, the `cads` command, the list of every kernel, `cads check` (every kernel variant against `reference` on this adapter) (top floor) |
//!
//! # Axis conventions
//!
//! One volume, three index orders. A NIfTI file stores `[X, Y, Z]` voxels column-major (i, the X
//! index, fastest); [`data::Volume`] keeps that memory as read, so the same bytes are the
//! row-major tensor `[D, H, W] = [Z, Y, X]`, with W = the file's i, H = j, D = k. Nothing is
//! transposed between the file, the host arrays and the GPU tensors.
//!
//! | where | order | index → axis | fastest |
//! |---|---|---|---|
//! | NIfTI file, [`data::Volume`] (`dims = [X, Y, Z]`, `index(i, j, k)`) | `[X, Y, Z]` column-major | i → X, j → Y, k → Z (voxel axes; the affine maps `(i, j, k)` to world mm, RAS+) | i |
//! | host arrays: [`data::preprocess::Patch`], `pretrain` tiles and views | `[D, H, W]` row-major | D = k (Z), H = j (Y), W = i (X) | W |
//! | after [`data::orientation::to_canonical`] | `[D, H, W]` | D → Superior, H → Anterior, W → Right (RAS) | W |
//! | activations (tensors) | `[N, D, H, W, C]`, images `[N, H, W, C]` | D, H, W as above, channels last | C |
//! | DRR volume ([`drr::VolumeGrid`], [`drr::Volume`] slabs, `ops::drr::DrrSetup`) | `[D, H, W] = [nz, ny, nx]` | the affine maps the index `(x, y, z)` = (W, H, D index) to world mm; slabs split D | x (W) |
//! | DRR image (`drr::render` output) | `[B, H, W]` = `[pose, detector row, detector column]` | row 0 at the top (camera +z), columns along camera +x | column |
//!
//! A canonical (RAS) CT therefore renders, with the identity pose, as a frontal radiograph with
//! the head at the top (see [`drr::geometry`] for the camera frame and the pose convention).
//! Types that hold a volume link here.

pub mod autograd;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod dist;
pub mod drr;
pub mod error;
pub mod gpu;
pub mod infer;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pretrain;
pub mod reference;
pub mod segment;
pub mod selfcheck;
pub mod tensor;
pub mod train;
pub mod util;

pub use autograd::Gradients;
pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::Tensor;
