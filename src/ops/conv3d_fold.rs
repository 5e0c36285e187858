//! conv3d forward with few input channels (Cin % 4 ≠ 0: a CT's single channel, the first conv of
//! every encoder and U-Net) on the row kernels of CPU adapters (conv3d_rows.rs), by folding the
//! innermost kernel axes into the channels.
//!
//! Why: the row kernels read input channels as vec4s, so they refuse Cin = 1, and such a conv fell
//! to the register tiles, whose lanes over voxels make every input load a per-lane gather on
//! lavapipe.
//!
//! The identity: fold axis W of the kernel into the channels,
//!   x′[n, d, h, ow, kw·Cin + ci] = x[n, d, h, ow·sw − pw + kw·dw, ci]   (0 in the padding)
//!   w′[kd, kh, 0, kw·Cin + ci, co] = w[kd, kh, kw, ci, co]
//! then conv(x, w) with kernel (kD, kH, kW) equals conv(x′, w′) with kernel (kD, kH, 1), stride
//! (sd, sh, 1), padding (pd, ph, 0), dilation (dd, dh, 1): both sum the same products
//! x[.., ow·sw − pw + kw·dw, ci]·w[.., kw, ci, co]. Axis H, then D, fold the same way (the folded
//! channel index runs (kd, kh, kw, ci) row-major, which is w's own layout, so w′ is w with zero
//! rows appended up to a multiple of 4). Folding stops once the folded channels reach
//! [`FOLD_TARGET`] (7³: W and H, 49 → 52 channels; 3³: W and H, 9 → 12).
//!
//! Only the forward folds (and the flipped-conv input gradient of a conv with Cout % 4 ≠ 0, which
//! is such a forward). The weight gradient stays on the register tiles: on lavapipe the row
//! kernel's gradient of w′ measured slower than `conv3d_backward_weight_tiled_n32_c1` for the 7³
//! stem (docs/kernel-tuning.md). x′ holds about kH·kW/(sh·sw) values per input value (kW/sw when
//! W alone folds): 12–13× x for the 7³ stride-2 stem, a transient of the forward.

use super::conv3d::{Conv3dConfig, Geometry};
use super::conv3d_rows;
use crate::error::{Error, Result};
use crate::tensor::{contiguous_strides, copy_region_any_rank, Tensor};

/// Fold kernel axes until the folded channel count reaches this (two vec4s per tap of the row
/// kernel's inner loop) or every axis is folded. Measured on lavapipe (docs/kernel-tuning.md):
/// folding W alone of the 7³ stem (7 → 8 channels) was slower than W and H, and folding all
/// three axes of a 3³ conv (27 → 28) slower than W and H.
const FOLD_TARGET: usize = 8;

/// The largest x′ the fold makes (bytes). x′ is about kH·kW/(sh·sw) times x (13× for the 7³
/// stride-2 stem), so a whole CT volume through the stem would need gigabytes; such convs stay
/// on the register tiles, which need no copy.
const MAX_FOLDED_BYTES: usize = 256 << 20;

/// Whether the shapes alone allow the fold: groups 1, Cout in fours (the row kernels' lanes),
/// Cin not in fours (else the row kernels run the conv as it is).
fn shape_fits(geo: &Geometry) -> bool {
    geo.cfg.groups == 1 && !geo.x[4].is_multiple_of(4) && geo.out[4].is_multiple_of(4)
}

/// Whether `geo` takes the folded row kernels: [`shape_fits`], and an x′ of at most
/// [`MAX_FOLDED_BYTES`].
pub(crate) fn fits(geo: &Geometry) -> bool {
    shape_fits(geo)
        && Fold::new(geo).is_ok_and(|f| {
            f.folded
                .x
                .iter()
                .try_fold(4usize, |acc, &e| acc.checked_mul(e))
                .is_some_and(|bytes| bytes <= MAX_FOLDED_BYTES)
        })
}

/// One fold of a convolution: the kernel axes folded into the channels and the conv that remains.
#[derive(Clone, Debug)]
pub(crate) struct Fold {
    /// The original convolution.
    geo: Geometry,
    /// Folded spatial axes: the last `axes` of (D, H, W).
    axes: usize,
    /// Folded channels before padding: Cin · Π folded kernel extents.
    channels: usize,
    /// The conv on the folded input (x′ `[N, D′, H′, W′, C′]`, w′ `[k′, C′, Cout]`).
    pub folded: Geometry,
}

impl Fold {
    pub(crate) fn new(geo: &Geometry) -> Result<Fold> {
        if !shape_fits(geo) {
            return Err(Error::invalid(
                "conv3d (folded kernel axes)",
                "groups 1, Cin not a multiple of 4, Cout a multiple of 4",
                format!("Cin {}, Cout {}, {:?}", geo.x[4], geo.out[4], geo.cfg),
            ));
        }
        let c = &geo.cfg;
        let (mut axes, mut channels) = (0, geo.x[4]);
        while axes < 3 && channels < FOLD_TARGET {
            channels *= c.kernel[2 - axes];
            axes += 1;
        }
        let padded = channels.next_multiple_of(4);
        let mut x = geo.x;
        let mut cfg = Conv3dConfig {
            kernel: c.kernel,
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            groups: 1,
        };
        for a in 3 - axes..3 {
            x[a + 1] = geo.out[a + 1];
            cfg.kernel[a] = 1;
            cfg.stride[a] = 1;
            cfg.padding[a] = 0;
            cfg.dilation[a] = 1;
        }
        x[4] = padded;
        let w = [
            cfg.kernel[0],
            cfg.kernel[1],
            cfg.kernel[2],
            padded,
            geo.out[4],
        ];
        let folded = Geometry::new("conv3d (folded kernel axes)", &x, &w, &cfg)?;
        if folded.out != geo.out {
            return Err(Error::shape(
                "conv3d (folded kernel axes)",
                geo.out,
                format!("{:?} from the folded conv", folded.out),
            ));
        }
        Ok(Fold {
            geo: *geo,
            axes,
            channels,
            folded,
        })
    }

    /// Spatial axes (0 = D) folded into the channels.
    fn folded_axes(&self) -> std::ops::Range<usize> {
        3 - self.axes..3
    }

    /// x′ from x `[N, D, H, W, Cin]`: the folded axes zero-padded (one copy into a zeroed
    /// tensor), then one strided copy whose source strides step by stride and dilation.
    pub(crate) fn input(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "conv3d (folding kernel axes into channels)";
        let (geo, c) = (&self.geo, &self.geo.cfg);
        let gpu = x.gpu();
        // Pad the folded axes only; the conv that remains pads the others itself.
        let mut padded = geo.x;
        let mut corner = [0usize; 5];
        for a in self.folded_axes() {
            padded[a + 1] += 2 * c.padding[a];
            corner[a + 1] = c.padding[a];
        }
        let xp_strides = contiguous_strides(&padded);
        let xp = if corner == [0; 5] {
            x.clone()
        } else {
            let xp = Tensor::zeros(gpu, &padded)?;
            let offset = (0..5).map(|i| corner[i] * xp_strides[i]).sum();
            copy_region_any_rank(
                OP,
                x,
                0,
                &contiguous_strides(&geo.x),
                &xp,
                offset,
                &xp_strides,
                &geo.x,
            )?;
            xp
        };
        let xu_shape = self.folded.x;
        let xu = if self.channels == xu_shape[4] {
            Tensor::uninit(gpu, OP, &xu_shape)?
        } else {
            Tensor::zeros(gpu, &xu_shape)? // the appended channels stay 0
        };
        let xu_strides = contiguous_strides(&xu_shape);
        // Region axes: N, the three spatial axes (output positions where folded), then the
        // folded kernel axes and Cin, which together run along x′'s channel axis.
        let mut shape = vec![geo.x[0]];
        let mut src = vec![xp_strides[0]];
        let mut dst = vec![xu_strides[0]];
        for a in 0..3 {
            shape.push(xu_shape[a + 1]);
            let step = if self.folded_axes().contains(&a) {
                c.stride[a]
            } else {
                1
            };
            src.push(xp_strides[a + 1] * step);
            dst.push(xu_strides[a + 1]);
        }
        let mut inner = geo.x[4];
        let mut kernel_axes = Vec::new();
        for a in self.folded_axes().rev() {
            kernel_axes.push((c.kernel[a], xp_strides[a + 1] * c.dilation[a], inner));
            inner *= c.kernel[a];
        }
        for &(k, s, d) in kernel_axes.iter().rev() {
            shape.push(k);
            src.push(s);
            dst.push(d);
        }
        shape.push(geo.x[4]);
        src.push(1);
        dst.push(1);
        copy_region_any_rank(OP, &xp, 0, &src, &xu, 0, &dst, &shape)?;
        Ok(xu)
    }

    /// w′ `[k′D, k′H, k′W, C′, Cout]` from w: per tap of the unfolded axes, w's rows (folded
    /// kernel axes, Cin) with zero rows appended up to C′.
    pub(crate) fn weight(&self, w: &Tensor) -> Result<Tensor> {
        let wu = Tensor::zeros(w.gpu(), &self.folded.w_shape())?;
        let taps: usize = self.folded.cfg.kernel.iter().product();
        let cout = self.geo.out[4];
        copy_region_any_rank(
            "conv3d (folding the weight)",
            w,
            0,
            &[self.channels * cout, 1],
            &wu,
            0,
            &[self.folded.x[4] * cout, 1],
            &[taps, self.channels * cout],
        )?;
        Ok(wu)
    }
}

/// y = conv3d(x, w) + b on the row kernels of the `lanes` family through the fold.
pub(crate) fn forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    geo: &Geometry,
    lanes: conv3d_rows::RowsLanes,
) -> Result<()> {
    let fold = Fold::new(geo)?;
    let xu = fold.input(x)?;
    let wu = fold.weight(w)?;
    let tile = conv3d_rows::RowsTile::for_geometry(&fold.folded, lanes);
    conv3d_rows::forward(&xu, &wu, bias, y, &fold.folded, lanes, tile)
}

#[cfg(test)]
mod tests {
    use super::Fold;
    use crate::ops::conv3d::{Conv3dConfig, Geometry};

    fn fold(x: [usize; 5], cout: usize, cfg: Conv3dConfig) -> Fold {
        let w = [cfg.kernel[0], cfg.kernel[1], cfg.kernel[2], x[4], cout];
        Fold::new(&Geometry::new("test", &x, &w, &cfg).unwrap()).unwrap()
    }

    /// Which axes fold, and the conv that remains, from the shapes alone.
    #[test]
    fn folds_from_w_inward_until_eight_channels() {
        // The PVT stem: 7³ stride 2, Cin 1 → W (7 channels, fewer than 8), then H (49 → 52).
        let f = fold([2, 16, 48, 48, 1], 64, Conv3dConfig::cube(7, 2, 3));
        assert_eq!((f.axes, f.channels), (2, 49));
        assert_eq!(f.folded.x, [2, 16, 24, 24, 52]);
        assert_eq!(f.folded.cfg.kernel, [7, 1, 1]);
        assert_eq!(f.folded.cfg.stride, [2, 1, 1]);
        assert_eq!(f.folded.cfg.padding, [3, 0, 0]);
        // 3³ Cin 1: W and H (9 → 12 channels).
        let f = fold([1, 5, 6, 7, 1], 8, Conv3dConfig::cube(3, 1, 1));
        assert_eq!((f.axes, f.channels), (2, 9));
        assert_eq!(f.folded.x, [1, 5, 6, 7, 12]);
        assert_eq!(f.folded.cfg.kernel, [3, 1, 1]);
        // 1×1×1, Cin 2: every axis folds (extent 1), the channels pad 2 → 4.
        let f = fold([1, 3, 4, 5, 2], 8, Conv3dConfig::new([1, 1, 1]));
        assert_eq!((f.axes, f.channels, f.folded.x), (3, 2, [1, 3, 4, 5, 4]));
        // Cin 6: W alone (kernel width 3: 18 → 20 channels), stride 2 along W.
        let f = fold(
            [1, 5, 6, 9, 6],
            8,
            Conv3dConfig::new([3, 3, 3]).stride([1, 1, 2]),
        );
        assert_eq!((f.axes, f.channels, f.folded.x[4]), (1, 18, 20));
        assert_eq!(f.folded.x[3], 4);
    }

    /// A whole CT through the stem would fold into gigabytes: the plan keeps the tiles there.
    #[test]
    fn an_oversized_fold_does_not_fit() {
        let cfg = Conv3dConfig::cube(7, 2, 3);
        let geo = |x: [usize; 5]| Geometry::new("test", &x, &[7, 7, 7, 1, 64], &cfg).unwrap();
        // 2×16×48×48: x′ 2·16·24·24·52 floats (3.8 MB).
        assert!(super::fits(&geo([2, 16, 48, 48, 1])));
        // 1×300×512×512: x′ 300·256·256·52 floats (4 GB).
        let big = geo([1, 300, 512, 512, 1]);
        assert!(Fold::new(&big).is_ok());
        assert!(!super::fits(&big));
    }

    #[test]
    fn refuses_what_the_row_kernels_take_as_it_is() {
        let cfg = Conv3dConfig::cube(3, 1, 1);
        let geo = Geometry::new("test", &[1, 4, 4, 4, 8], &[3, 3, 3, 8, 8], &cfg).unwrap();
        assert!(Fold::new(&geo).is_err());
        let geo = Geometry::new("test", &[1, 4, 4, 4, 1], &[3, 3, 3, 1, 6], &cfg).unwrap();
        assert!(Fold::new(&geo).is_err());
    }
}
