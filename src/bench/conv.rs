//! Conv3d cases of the convolution issue (channels-last, batch 2). FLOPs:
//! 2·N·Cout·(Cin/groups)·kD·kH·kW·Do·Ho·Wo per pass; forward + both backward passes = 3×.
//!
//! `conv3d_<pass>/<case>` runs the kernel family chosen for the adapter (`ConvPath::chosen`),
//! `conv3d_<pass>/c32_<variant>` a named one (`tiled`, `igemm_64x64`, `igemm_128x32`, `rows`,
//! `rows_c4`, `rows_c4_m24`, `rows_w16`). Every line names in `"variant"` the kernels that ran: the
//! family, or for forward + backward where the passes differ (a shape one kernel does not fit),
//! `forward+input+weight`.

use super::inputs::{random, random_param};
use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::ops::conv3d::{
    backward_input_raw, backward_weight_raw, conv3d_with, forward_raw, ConvPath, ConvPlan, Geometry,
};
use crate::ops::{conv3d_rows, Conv3dConfig};

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

/// One pass of `case` on `path` (`None`: the adapter's choice).
fn run(b: &Bench, case: &str, pass: Pass, path: Option<ConvPath>) -> Result<Sample> {
    let s = shape(case);
    let (xs, ws, ys, cfg) = (s.x(), s.w(), s.out(), s.cfg);
    let path = match path {
        Some(p) => p.runs_as(b.gpu()),
        None => ConvPath::chosen(b.gpu())?,
    };
    let plan = ConvPlan::new(Geometry::new("conv3d", &xs, &ws, &cfg)?, path)?;
    let ms = match pass {
        Pass::Forward => b.time(
            |g, r| Ok((random(g, r, &xs)?, random(g, r, &ws)?)),
            |(x, w)| forward_raw(x, w, None, &plan).map(drop),
        )?,
        Pass::BackwardInput => b.time(
            |g, r| Ok((random(g, r, &ys)?, random(g, r, &ws)?)),
            |(gy, w)| backward_input_raw(gy, w, &plan).map(drop),
        )?,
        Pass::BackwardWeight => b.time(
            |g, r| Ok((random(g, r, &ys)?, random(g, r, &xs)?)),
            |(gy, x)| backward_weight_raw(gy, x, &plan).map(drop),
        )?,
        Pass::All => b.time_with_grad(
            |g, r| {
                Ok((
                    random_param(g, r, &xs)?,
                    random_param(g, r, &ws)?,
                    random(g, r, &ys)?,
                ))
            },
            |(x, w, gy)| {
                conv3d_with(x, w, None, &cfg, path)?
                    .backward_with(gy)
                    .map(drop)
            },
        )?,
    };
    let work = if matches!(pass, Pass::All) {
        3.0 * s.flops()
    } else {
        s.flops()
    };
    let mut sample = Sample::new(ms, Work::Flops(work));
    let sga = conv3d_rows::runs_twins(b.gpu())?;
    sample.variant = Some(variant_name(&plan, pass, sga));
    Ok(sample)
}

/// What ran, from the plan: the pass's kernel family, or for all three passes the family when
/// they agree, else `forward+input+weight`; then `+sga` when a pass ran the row kernels'
/// subgroup-broadcast twins (`sga`: they run on this context).
fn variant_name(plan: &ConvPlan, pass: Pass, sga: bool) -> String {
    let [forward, input, weight] = plan.kernel_names();
    let [rows_forward, rows_input, rows_weight] = plan.row_kernel_passes();
    let any = rows_forward || rows_input || rows_weight;
    let (name, twins) = match pass {
        Pass::Forward => (forward.into(), rows_forward),
        Pass::BackwardInput => (input.into(), rows_input),
        Pass::BackwardWeight => (weight.into(), rows_weight),
        Pass::All if forward == input && input == weight => (forward.into(), any),
        Pass::All => (format!("{forward}+{input}+{weight}"), any),
    };
    if sga && twins {
        format!("{name}+sga")
    } else {
        name
    }
}

macro_rules! conv_cases {
    ($($case:literal),*) => {
        vec![$(
            Case { op: "conv3d_fwd", case: $case, run: |b| run(b, $case, Pass::Forward, None) },
            Case { op: "conv3d_bwd_input", case: $case, run: |b| run(b, $case, Pass::BackwardInput, None) },
            Case { op: "conv3d_bwd_weight", case: $case, run: |b| run(b, $case, Pass::BackwardWeight, None) },
            Case { op: "conv3d_fwd_bwd", case: $case, run: |b| run(b, $case, Pass::All, None) },
        )*]
    };
}

/// `conv3d_<pass>/c32_<variant>`: the c32 case on one named kernel family.
macro_rules! variant_cases {
    ($($variant:literal),*) => {
        vec![$(
            Case { op: "conv3d_fwd", case: concat!("c32_", $variant), run: |b| run(b, "c32", Pass::Forward, Some(ConvPath::from_name($variant)?)) },
            Case { op: "conv3d_bwd_input", case: concat!("c32_", $variant), run: |b| run(b, "c32", Pass::BackwardInput, Some(ConvPath::from_name($variant)?)) },
            Case { op: "conv3d_bwd_weight", case: concat!("c32_", $variant), run: |b| run(b, "c32", Pass::BackwardWeight, Some(ConvPath::from_name($variant)?)) },
            Case { op: "conv3d_fwd_bwd", case: concat!("c32_", $variant), run: |b| run(b, "c32", Pass::All, Some(ConvPath::from_name($variant)?)) },
        )*]
    };
}

pub(crate) fn cases() -> Vec<Case> {
    let mut cases = conv_cases!("c32", "stem", "c64", "embed", "sr8", "dw512");
    cases.extend(variant_cases!(
        "tiled",
        "igemm_64x64",
        "igemm_128x32",
        "rows",
        "rows_c4",
        "rows_c4_m24",
        "rows_w16"
    ));
    cases
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv3d::RowsLanes;
    use crate::ops::conv3d_igemm::IgemmTile;

    #[test]
    fn every_kernel_family_has_c32_cases_for_every_pass() {
        let cases = cases();
        let families = std::iter::once(ConvPath::Fast)
            .chain(IgemmTile::ALL.map(ConvPath::Igemm))
            .chain(
                [
                    RowsLanes::Two,
                    RowsLanes::Four,
                    RowsLanes::FourDeep,
                    RowsLanes::Wide,
                ]
                .map(ConvPath::Rows),
            );
        for path in families {
            let case = format!("c32_{}", path.name());
            for op in [
                "conv3d_fwd",
                "conv3d_bwd_input",
                "conv3d_bwd_weight",
                "conv3d_fwd_bwd",
            ] {
                assert!(
                    cases.iter().any(|c| c.op == op && c.case == case),
                    "no bench case {op}/{case}"
                );
            }
        }
    }
}
