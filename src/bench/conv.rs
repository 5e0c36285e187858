//! Conv3d cases of the convolution issue (channels-last, batch 2). FLOPs:
//! 2·N·Cout·(Cin/groups)·kD·kH·kW·Do·Ho·Wo per pass; forward + both backward passes = 3×.

use super::inputs::{random, random_param};
use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::conv3d::{conv3d, conv3d_backward_input, conv3d_backward_weight};
use crate::ops::Conv3dConfig;

struct Shape {
    cin: usize,
    cout: usize,
    dhw: [usize; 3],
    cfg: Conv3dConfig,
}

const N: usize = 2;

fn shape(case: &str) -> Shape {
    let s = |cin, cout, dhw, cfg| Shape {
        cin,
        cout,
        dhw,
        cfg,
    };
    match case {
        "c32" => s(32, 32, [32, 64, 64], Conv3dConfig::cube(3, 1, 1)),
        "stem" => s(1, 64, [32, 96, 96], Conv3dConfig::cube(7, 2, 3)),
        "c64" => s(64, 64, [16, 48, 48], Conv3dConfig::cube(3, 1, 1)),
        "embed" => s(64, 128, [16, 24, 24], Conv3dConfig::cube(3, 2, 1)),
        "sr8" => s(64, 64, [16, 24, 24], Conv3dConfig::cube(8, 8, 0)),
        _ => s(
            512,
            512,
            [8, 12, 12],
            Conv3dConfig::cube(3, 1, 1).groups(512),
        ), // dw512
    }
}

impl Shape {
    fn out(&self) -> [usize; 5] {
        let o = |a: usize| {
            (self.dhw[a] + 2 * self.cfg.padding[a] - self.cfg.kernel[a]) / self.cfg.stride[a] + 1
        };
        [N, o(0), o(1), o(2), self.cout]
    }
    fn x(&self) -> [usize; 5] {
        [N, self.dhw[0], self.dhw[1], self.dhw[2], self.cin]
    }
    fn w(&self) -> [usize; 5] {
        let k = self.cfg.kernel;
        [k[0], k[1], k[2], self.cin / self.cfg.groups, self.cout]
    }
    fn flops(&self) -> f64 {
        let [_, d, h, w, _] = self.out();
        let k = self.cfg.kernel;
        2.0 * (N * self.cout * (self.cin / self.cfg.groups) * k[0] * k[1] * k[2] * d * h * w) as f64
    }
}

#[derive(Clone, Copy)]
enum Pass {
    Forward,
    BackwardInput,
    BackwardWeight,
    All,
}

fn run(b: &Bench, case: &str, pass: Pass) -> Result<Sample> {
    let s = shape(case);
    let (xs, ws, ys, cfg) = (s.x(), s.w(), s.out(), s.cfg);
    let ms = match pass {
        Pass::Forward => b.time(
            |g, r| Ok((random(g, r, &xs)?, random(g, r, &ws)?)),
            |(x, w)| conv3d(x, w, None, &cfg).map(drop),
        )?,
        Pass::BackwardInput => b.time(
            |g, r| Ok((random(g, r, &ys)?, random(g, r, &ws)?)),
            |(gy, w)| conv3d_backward_input(gy, w, &xs, &cfg).map(drop),
        )?,
        Pass::BackwardWeight => b.time(
            |g, r| Ok((random(g, r, &ys)?, random(g, r, &xs)?)),
            |(gy, x)| conv3d_backward_weight(gy, x, &ws, &cfg).map(drop),
        )?,
        Pass::All => b.time_with_grad(
            |g, r| {
                Ok((
                    random_param(g, r, &xs)?,
                    random_param(g, r, &ws)?,
                    random(g, r, &ys)?,
                ))
            },
            |(x, w, gy)| conv3d(x, w, None, &cfg)?.backward_with(gy).map(drop),
        )?,
    };
    let work = if matches!(pass, Pass::All) {
        3.0 * s.flops()
    } else {
        s.flops()
    };
    Ok(Sample::new(ms, Work::Flops(work)))
}

macro_rules! conv_cases {
    ($($case:literal),*) => {
        vec![$(
            Case { op: "conv3d_fwd", case: $case, run: |b| run(b, $case, Pass::Forward) },
            Case { op: "conv3d_bwd_input", case: $case, run: |b| run(b, $case, Pass::BackwardInput) },
            Case { op: "conv3d_bwd_weight", case: $case, run: |b| run(b, $case, Pass::BackwardWeight) },
            Case { op: "conv3d_fwd_bwd", case: $case, run: |b| run(b, $case, Pass::All) },
        )*]
    };
}

pub(crate) fn cases() -> Vec<Case> {
    conv_cases!("c32", "stem", "c64", "embed", "sr8", "dw512")
}
