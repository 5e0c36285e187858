//! The validated geometry of one convolution (shapes, groups, output extents, with checked
//! arithmetic) and the params struct every conv kernel reads, built from it.

use super::config::Conv3dConfig;
use crate::error::{Error, Result};

crate::gpu::shader_params! {
    /// Mirrors `ConvParams` in the three conv shaders.
    #[derive(Debug)]
    pub(crate) struct ConvParams {
        pub n: u32,
        pub d: u32,
        pub h: u32,
        pub w: u32,
        pub cin: u32,
        pub cout: u32,
        pub cin_g: u32,
        pub cout_g: u32,
        pub od: u32,
        pub oh: u32,
        pub ow: u32,
        pub has_bias: u32,
        pub kd: u32,
        pub kh: u32,
        pub kw: u32,
        /// Invocations that do work (the bounds guard).
        pub total: u32,
        pub sd: u32,
        pub sh: u32,
        pub sw: u32,
        pub splits: u32,
        pub pd: u32,
        pub ph: u32,
        pub pw: u32,
        pub chunk: u32,
        pub dd: u32,
        pub dh: u32,
        pub dw: u32,
        /// N·Do·Ho·Wo.
        pub m_total: u32,
    }
}

/// Validated geometry of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub x: [usize; 5],
    pub out: [usize; 5],
    pub cfg: Conv3dConfig,
    pub cin_g: usize,
    pub cout_g: usize,
}

/// The output shape `[N, oD, oH, oW, Cout]` of `conv3d(x, w, cfg)` for input `x` `[N, D, H, W, Cin]`
/// and weight `w` `[kD, kH, kW, Cin/groups, Cout]`, with the validation the op runs (checked
/// arithmetic: no size wraps).
pub fn conv3d_output_shape(x: &[usize], w: &[usize], cfg: &Conv3dConfig) -> Result<[usize; 5]> {
    Ok(Geometry::new("conv3d", x, w, cfg)?.out)
}

impl Geometry {
    pub fn new(op: &'static str, x: &[usize], w: &[usize], cfg: &Conv3dConfig) -> Result<Geometry> {
        if x.len() != 5 {
            return Err(Error::shape(op, "input of rank 5 [N, D, H, W, Cin]", x));
        }
        if w.len() != 5 {
            return Err(Error::shape(
                op,
                "weight of rank 5 [kD, kH, kW, Cin/groups, Cout]",
                w,
            ));
        }
        let g = cfg.groups;
        let (cin, cout) = (x[4], w[4]);
        if g == 0 || cin % g != 0 {
            return Err(Error::invalid(
                op,
                format!("input channels divisible by groups = {g}"),
                format!("Cin = {cin}"),
            ));
        }
        if cout % g != 0 {
            return Err(Error::invalid(
                op,
                format!("output channels divisible by groups = {g}"),
                format!("Cout = {cout}"),
            ));
        }
        let want_w = [cfg.kernel[0], cfg.kernel[1], cfg.kernel[2], cin / g, cout];
        if w != want_w {
            return Err(Error::shape(op, want_w, w));
        }
        if cfg.stride.contains(&0) || cfg.dilation.contains(&0) || cfg.kernel.contains(&0) {
            return Err(Error::invalid(
                op,
                "kernel, stride and dilation >= 1",
                format!("{cfg:?}"),
            ));
        }
        // The kernels index in 32-bit arithmetic (`o·s − p + k·dil`), and a padding near
        // usize::MAX / 4 used to wrap `x + 2p` into an absurd output shape: every extent and
        // parameter is checked to fit, and every sum and product below is checked.
        super::config::check_conv_fits_u32(
            op,
            &[&cfg.kernel, &cfg.stride, &cfg.padding, &cfg.dilation, x],
        )?;
        let mut out = [x[0], 0, 0, 0, cout];
        for a in 0..3 {
            let span = super::config::dilated_span(op, cfg.kernel[a], cfg.dilation[a])?;
            let padded = super::config::padded_extent(op, x[a + 1], cfg.padding[a])?;
            if span > padded {
                return Err(Error::invalid(
                    op,
                    format!("kernel extent (dilated) <= padded input on axis {a}"),
                    format!("kernel extent {span} > padded input {padded}"),
                ));
            }
            out[a + 1] = (padded - span) / cfg.stride[a] + 1;
        }
        if out.contains(&0) {
            return Err(Error::invalid(
                op,
                "a non-empty output",
                format!("output shape {out:?}"),
            ));
        }
        Ok(Geometry {
            x: [x[0], x[1], x[2], x[3], x[4]],
            out,
            cfg: *cfg,
            cin_g: cin / g,
            cout_g: cout / g,
        })
    }

    pub fn w_shape(&self) -> [usize; 5] {
        let k = self.cfg.kernel;
        [k[0], k[1], k[2], self.cin_g, self.out[4]]
    }

    pub fn m_total(&self) -> usize {
        self.out[0] * self.out[1] * self.out[2] * self.out[3]
    }

    pub fn params(&self, total: usize, has_bias: bool) -> ConvParams {
        let c = &self.cfg;
        let u = |v: usize| v as u32;
        ConvParams {
            n: u(self.x[0]),
            d: u(self.x[1]),
            h: u(self.x[2]),
            w: u(self.x[3]),
            cin: u(self.x[4]),
            cout: u(self.out[4]),
            cin_g: u(self.cin_g),
            cout_g: u(self.cout_g),
            od: u(self.out[1]),
            oh: u(self.out[2]),
            ow: u(self.out[3]),
            has_bias: has_bias as u32,
            kd: u(c.kernel[0]),
            kh: u(c.kernel[1]),
            kw: u(c.kernel[2]),
            total: u(total),
            sd: u(c.stride[0]),
            sh: u(c.stride[1]),
            sw: u(c.stride[2]),
            splits: 1,
            pd: u(c.padding[0]),
            ph: u(c.padding[1]),
            pw: u(c.padding[2]),
            chunk: 0,
            dd: u(c.dilation[0]),
            dh: u(c.dilation[1]),
            dw: u(c.dilation[2]),
            m_total: u(self.m_total()),
        }
    }
}
