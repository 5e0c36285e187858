//! Wall-clock timing of conv3d forward / backward-input / backward-weight on the cases,
//! with the adapter's FMA ceiling measured in the same run. Prints one JSON line per (op, case).
//!
//! `cargo run --release --example conv_timing [case ...] [--reps N]`
//! Until the shared bench harness lands, this is the measurement; the integrator moves the cases.

use std::time::Instant;

use cads::ops::conv3d::{conv3d_backward_input, conv3d_backward_weight, conv3d_with, ConvPath};
use cads::ops::conv3d_fast::fma_peak_probe;
use cads::ops::Conv3dConfig;
use cads::util::Rng;
use cads::{Gpu, Result, Tensor};

struct Case {
    name: &'static str,
    n: usize,
    cin: usize,
    cout: usize,
    dhw: [usize; 3],
    cfg: Conv3dConfig,
}

fn cases() -> Vec<Case> {
    let c = |name, n, cin, cout, dhw, cfg| Case {
        name,
        n,
        cin,
        cout,
        dhw,
        cfg,
    };
    vec![
        c("c32", 2, 32, 32, [32, 64, 64], Conv3dConfig::cube(3, 1, 1)),
        c("stem", 2, 1, 64, [32, 96, 96], Conv3dConfig::cube(7, 2, 3)),
        c("c64", 2, 64, 64, [16, 48, 48], Conv3dConfig::cube(3, 1, 1)),
        c(
            "embed",
            2,
            64,
            128,
            [16, 24, 24],
            Conv3dConfig::cube(3, 2, 1),
        ),
        c("sr8", 2, 64, 64, [16, 24, 24], Conv3dConfig::cube(8, 8, 0)),
        c(
            "dw512",
            2,
            512,
            512,
            [8, 12, 12],
            Conv3dConfig::cube(3, 1, 1).groups(512),
        ),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds of `f` (recorded, then submitted and waited on) after one warm-up.
fn time(gpu: &Gpu, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    gpu.synchronize()?;
    let mut t = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        gpu.synchronize()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let naive = args.iter().any(|a| a == "--naive");
    let wanted: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .collect();
    // CADS_CONV_TILE=m16n8 / CADS_CONV_BW_TILE=n8 force tile variants (read once, before any thread).
    let (ft, bt) = (
        std::env::var("CADS_CONV_TILE").ok(),
        std::env::var("CADS_CONV_BW_TILE").ok(),
    );
    cads::ops::conv3d_fast::set_tile_override(ft.as_deref(), bt.as_deref());
    let gpu = Gpu::new()?;
    let adapter = gpu.adapter().name.clone();
    let mut flop = 0.0;
    let peak_s = time(&gpu, reps, || {
        flop = fma_peak_probe(&gpu, 65_536, 256)?;
        Ok(())
    })?;
    let peak = flop / peak_s / 1e9;
    println!(
        "{{\"op\":\"fma_peak\",\"adapter\":\"{adapter}\",\"gflops\":{peak:.1},\"ms\":{:.3}}}",
        peak_s * 1e3
    );
    let path = if naive {
        ConvPath::Naive
    } else {
        ConvPath::Fast
    };
    let mut rng = Rng::new(7);
    for case in cases() {
        if !wanted.is_empty() && !wanted.iter().any(|w| *w == case.name) {
            continue;
        }
        let cfg = case.cfg;
        let xs = [case.n, case.dhw[0], case.dhw[1], case.dhw[2], case.cin];
        let ws = [
            cfg.kernel[0],
            cfg.kernel[1],
            cfg.kernel[2],
            case.cin / cfg.groups,
            case.cout,
        ];
        let x = Tensor::from_slice(&gpu, &rng.vec_uniform(xs.iter().product(), -1.0, 1.0), &xs)?;
        let w = Tensor::from_slice(&gpu, &rng.vec_uniform(ws.iter().product(), -0.1, 0.1), &ws)?;
        let y = gpu.no_grad(|| conv3d_with(&x, &w, None, &cfg, path))?;
        let ys = y.shape().to_vec();
        let g = Tensor::from_slice(&gpu, &rng.vec_uniform(y.numel(), -1.0, 1.0), &ys)?;
        let fl = 2.0
            * (y.numel() * (case.cin / cfg.groups) * cfg.kernel.iter().product::<usize>()) as f64;
        let tf = time(&gpu, reps, || {
            gpu.no_grad(|| conv3d_with(&x, &w, None, &cfg, path))
                .map(|_| ())
        })?;
        let ti = time(&gpu, reps, || {
            conv3d_backward_input(&g, &w, &xs, &cfg).map(|_| ())
        })?;
        let tw = time(&gpu, reps, || {
            conv3d_backward_weight(&g, &x, &ws, &cfg).map(|_| ())
        })?;
        let shape = format!(
            "N{} {}->{} {:?} k{:?} s{:?} p{:?} g{}",
            case.n, case.cin, case.cout, case.dhw, cfg.kernel, cfg.stride, cfg.padding, cfg.groups
        );
        for (op, secs, f) in [
            ("conv3d_fwd", tf, fl),
            ("conv3d_bwd_input", ti, fl),
            ("conv3d_bwd_weight", tw, fl),
            ("conv3d_fwd_bwd", tf + ti + tw, 3.0 * fl),
        ] {
            let gf = f / secs / 1e9;
            println!(
                "{{\"op\":\"{op}\",\"case\":\"{}\",\"shape\":\"{shape}\",\"path\":\"{path:?}\",\"ms\":{:.3},\"gflops\":{gf:.2},\"pct_peak\":{:.1}}}",
                case.name,
                secs * 1e3,
                100.0 * gf / peak
            );
        }
    }
    Ok(())
}
