//! Transposed 3D convolution (groups = 1), channels-last, with two fast paths for kernels that
//! tile the output without overlap: for kernel 2 / stride 2 / padding 0 — the U-Net
//! up-sampling — kernels that treat each of the 8 output parity classes as a plain GEMM (no
//! zero-stuffing, no gather over a dilated input), and for any kernel = stride one matmul and a
//! shuffle (src/ops/conv_transpose3d_patches.rs); for k2s2 the faster of the two on the adapter
//! runs (src/ops/conv_transpose3d_tune.rs). Kernels: shaders/conv_transpose3d.wgsl (general,
//! also the oracle of the fast paths) and shaders/conv_transpose3d_k2s2.wgsl. Reference:
//! src/reference/conv_transpose3d.rs.
//!
//! Weight layout: `[kD, kH, kW, Ci, Co]` (Co fastest, so the fast kernel loads vec4 over output
//! channels). PyTorch's `ConvTranspose3d.weight` is `[Ci, Co, kD, kH, kW]`: convert with
//! `nn::pytorch_layout`.

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::{Saved, Tensor};

pub use super::config::ConvTranspose3dConfig;

crate::gpu::shader_params! {
    struct ConvTParams {
        n: u32,
        dhw: [u32; 3] => [d, h, w],
        ci: u32,
        out: [u32; 3] => [dout, hout, wout],
        co: u32,
        total: u32,
        _pad0: [u32; 2],
        k: [i32; 3] => [kd, kh, kw],
        _pad1: i32,
        s: [i32; 3] => [sd, sh, sw],
        _pad2: i32,
        p: [i32; 3] => [pd, ph, pw],
        _pad3: i32,
        dil: [i32; 3] => [dd, dh, dw],
        _pad4: i32,
    }
}

crate::gpu::shader_params! {
    struct UpParams {
        n: u32,
        dhw: [u32; 3] => [d, h, w],
        ci: u32,
        co: u32,
        voxels: u32,
        tiles: u32,
        chunk: u32,
        chunks: u32,
        _pad: [u32; 2],
    }
}

const GENERAL_SOURCE: &str = include_str!("../../shaders/conv_transpose3d.wgsl");
const GENERAL_FORWARD: KernelSpec = KernelSpec {
    shader: "conv_transpose3d",
    source: GENERAL_SOURCE,
    entry: "forward",
    inputs: 2,
    outputs: 1,
    params: ConvTParams::LAYOUT,
    constants: &[],
};
const GENERAL_BACKWARD_INPUT: KernelSpec = KernelSpec {
    entry: "backward_input",
    ..GENERAL_FORWARD
};
const GENERAL_BACKWARD_WEIGHT: KernelSpec = KernelSpec {
    entry: "backward_weight",
    ..GENERAL_FORWARD
};

const UP2_SOURCE: &str = include_str!("../../shaders/conv_transpose3d_k2s2.wgsl");
const UP2_FORWARD: KernelSpec = KernelSpec {
    shader: "conv_transpose3d_k2s2",
    source: UP2_SOURCE,
    entry: "forward",
    inputs: 2,
    outputs: 1,
    params: UpParams::LAYOUT,
    constants: &[],
};
const UP2_BACKWARD_INPUT: KernelSpec = KernelSpec {
    entry: "backward_input",
    ..UP2_FORWARD
};
const UP2_BACKWARD_WEIGHT: KernelSpec = KernelSpec {
    entry: "backward_weight",
    ..UP2_FORWARD
};

pub(crate) const KERNELS: &[KernelSpec] = &[
    GENERAL_FORWARD,
    GENERAL_BACKWARD_INPUT,
    GENERAL_BACKWARD_WEIGHT,
    UP2_FORWARD,
    UP2_BACKWARD_INPUT,
    UP2_BACKWARD_WEIGHT,
];

/// Voxels per split-K chunk of the fast weight gradient.
const WEIGHT_CHUNK: usize = 256;

/// Which implementation to run. `Auto` takes, for kernel 2 / stride 2 with Ci % 4 == 0 and
/// Co % 8 == 0, the one measured faster on this adapter of the k2s2 kernels and the patch path
/// (src/ops/conv_transpose3d_tune.rs; `CADS_KERNEL_CONV_TRANSPOSE3D=k2s2|patches`); for any other
/// kernel that tiles the output without overlap the patch path; else the general kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvTransposePath {
    Auto,
    General,
    /// The k2s2 kernels (shaders/conv_transpose3d_k2s2.wgsl): each output parity class a GEMM.
    /// Configs they do not cover take the general kernels.
    K2s2,
    /// Kernel = stride, no padding, output padding or dilation (every input voxel writes its
    /// own kD × kH × kW block of the output): one matmul and a shuffle of its columns into the
    /// blocks, recorded as such (src/ops/conv_transpose3d_patches.rs). Other configs take
    /// the general kernels.
    Patches,
}

struct Geometry {
    n: usize,
    dhw: [usize; 3],
    ci: usize,
    co: usize,
    out: [usize; 3],
    cfg: ConvTranspose3dConfig,
    fast: bool,
}

impl Geometry {
    fn general_params(&self, total: usize) -> ConvTParams {
        let c = &self.cfg;
        ConvTParams {
            n: self.n as u32,
            dhw: self.dhw.map(|v| v as u32),
            ci: self.ci as u32,
            out: self.out.map(|v| v as u32),
            co: self.co as u32,
            total: total as u32,
            _pad0: [0; 2],
            k: c.kernel.map(|v| v as i32),
            _pad1: 0,
            s: c.stride.map(|v| v as i32),
            _pad2: 0,
            p: c.padding.map(|v| v as i32),
            _pad3: 0,
            dil: c.dilation.map(|v| v as i32),
            _pad4: 0,
        }
    }
    fn voxels(&self) -> usize {
        self.n * self.dhw.iter().product::<usize>()
    }
    fn up_params(&self, tiles: usize) -> UpParams {
        let voxels = self.voxels();
        UpParams {
            n: self.n as u32,
            dhw: self.dhw.map(|v| v as u32),
            ci: self.ci as u32,
            co: self.co as u32,
            voxels: voxels as u32,
            tiles: tiles as u32,
            chunk: WEIGHT_CHUNK as u32,
            chunks: voxels.div_ceil(WEIGHT_CHUNK) as u32,
            _pad: [0; 2],
        }
    }
}

/// `y = conv_transpose3d(x, w) + bias`, x `[N, D, H, W, Ci]`, w `[kD, kH, kW, Ci, Co]`,
/// bias `[Co]`.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose3dConfig,
) -> Result<Tensor> {
    conv_transpose3d_with(x, w, bias, cfg, ConvTransposePath::Auto)
}

/// As [`conv_transpose3d`], choosing the implementation (tests and benchmarks compare them).
pub fn conv_transpose3d_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose3dConfig,
    path: ConvTransposePath,
) -> Result<Tensor> {
    let op = "conv_transpose3d";
    x.check_same_gpu(op, w)?;
    let [n, d, h, wd, ci] = *x.shape() else {
        return Err(Error::shape(op, "x of rank 5 [N, D, H, W, Ci]", x.shape()));
    };
    let [kd, kh, kw, wci, co] = *w.shape() else {
        return Err(Error::shape(
            op,
            "weight of rank 5 [kD, kH, kW, Ci, Co]",
            w.shape(),
        ));
    };
    if [kd, kh, kw] != cfg.kernel || wci != ci {
        return Err(Error::shape(
            op,
            format!("weight [{:?}.., {ci}, Co]", cfg.kernel),
            w.shape(),
        ));
    }
    let out = cfg.output_dims(op, [d, h, wd])?;
    if let Some(b) = bias {
        if b.shape() != [co] {
            return Err(Error::shape(op, format!("bias [{co}]"), b.shape()));
        }
    }
    let path = resolve_path(x.gpu(), cfg, ci, co, path)?;
    let fast = path == ConvTransposePath::K2s2;
    if path == ConvTransposePath::Patches {
        return super::conv_transpose3d_patches::forward(x, w, bias, cfg, [n, d, h, wd, ci], co);
    }
    let geo = Geometry {
        n,
        dhw: [d, h, wd],
        ci,
        co,
        out,
        cfg: *cfg,
        fast,
    };
    let y = Tensor::uninit(x.gpu(), op, &[n, out[0], out[1], out[2], co])?;
    if geo.fast {
        let tiles = geo.voxels().div_ceil(2) * (co / 4);
        x.gpu().dispatch(
            &UP2_FORWARD,
            &geo.up_params(tiles),
            &[x.buffer(), w.buffer()],
            &[y.buffer()],
            Grid::cover(tiles as u64, 64),
        )?;
    } else {
        x.gpu().dispatch(
            &GENERAL_FORWARD,
            &geo.general_params(y.numel()),
            &[x.buffer(), w.buffer()],
            &[y.buffer()],
            Grid::cover(y.numel() as u64, 64),
        )?;
    }
    // dx reads the weight and dw the input: keep each only when the other's gradient is wanted.
    // The input is kept in f16 under autocast (src/tensor/saved.rs), the weight always in f32.
    let wc = x.requires_grad().then(|| w.detach());
    let xc = w
        .requires_grad()
        .then(|| Saved::keep_autocast(op, x))
        .transpose()?;
    let y = record(y, op, &[x, w], move |g| {
        let gx = match &wc {
            Some(wc) => Some(backward_input(&geo, g, wc)?),
            None => None,
        };
        let gw = match &xc {
            Some(xc) => Some(backward_weight(&geo, &xc.value(op)?, g)?),
            None => None,
        };
        Ok(vec![gx, gw])
    });
    match bias {
        None => Ok(y),
        Some(b) => super::add(&y, b),
    }
}

/// The implementation `path` runs for `cfg` with `ci` → `co` channels on `gpu`: `K2s2`,
/// `Patches` or `General`, each only where it applies (see [`ConvTransposePath`]).
pub fn resolve_path(
    gpu: &crate::Gpu,
    cfg: &ConvTranspose3dConfig,
    ci: usize,
    co: usize,
    path: ConvTransposePath,
) -> Result<ConvTransposePath> {
    let up2 = cfg.is_up2() && ci.is_multiple_of(4) && co.is_multiple_of(8);
    let path = match path {
        ConvTransposePath::Auto if up2 => super::conv_transpose3d_tune::up2_path(gpu)?,
        ConvTransposePath::Auto => ConvTransposePath::Patches,
        path => path,
    };
    Ok(match path {
        ConvTransposePath::K2s2 if up2 => path,
        ConvTransposePath::Patches if cfg.tiles_without_overlap() => path,
        _ => ConvTransposePath::General,
    })
}

fn backward_input(geo: &Geometry, g: &Tensor, w: &Tensor) -> Result<Tensor> {
    let [d, h, wd] = geo.dhw;
    let gx = Tensor::uninit(
        g.gpu(),
        "conv_transpose3d_backward_input",
        &[geo.n, d, h, wd, geo.ci],
    )?;
    if geo.fast {
        let tiles = geo.voxels().div_ceil(4) * (geo.ci / 4);
        g.gpu().dispatch(
            &UP2_BACKWARD_INPUT,
            &geo.up_params(tiles),
            &[g.buffer(), w.buffer()],
            &[gx.buffer()],
            Grid::cover(tiles as u64, 64),
        )?;
    } else {
        g.gpu().dispatch(
            &GENERAL_BACKWARD_INPUT,
            &geo.general_params(gx.numel()),
            &[g.buffer(), w.buffer()],
            &[gx.buffer()],
            Grid::cover(gx.numel() as u64, 64),
        )?;
    }
    Ok(gx)
}

fn backward_weight(geo: &Geometry, x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let k = geo.cfg.kernel;
    let shape = [k[0], k[1], k[2], geo.ci, geo.co];
    if geo.fast {
        let chunks = geo.voxels().div_ceil(WEIGHT_CHUNK);
        let partial = Tensor::uninit(
            g.gpu(),
            "conv_transpose3d_backward_weight",
            &[chunks, 8 * geo.ci * geo.co],
        )?;
        let tiles = chunks * 8 * (geo.ci / 4) * (geo.co / 8);
        g.gpu().dispatch(
            &UP2_BACKWARD_WEIGHT,
            &geo.up_params(tiles),
            &[x.buffer(), g.buffer()],
            &[partial.buffer()],
            Grid::cover(tiles as u64, 64),
        )?;
        // Second pass of the split-K reduction: sum the chunk partials (no float atomics).
        super::sum(&partial, &[0], false)?.reshape(&shape)
    } else {
        let gw = Tensor::uninit(g.gpu(), "conv_transpose3d_backward_weight", &shape)?;
        g.gpu().dispatch(
            &GENERAL_BACKWARD_WEIGHT,
            &geo.general_params(gw.numel()),
            &[x.buffer(), g.buffer()],
            &[gw.buffer()],
            Grid::cover(gw.numel() as u64, 64),
        )?;
        Ok(gw)
    }
}
