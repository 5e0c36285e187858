//! One conv3d against the reference: forward (with bias) and the gradients of x, w and b on a
//! chosen path, and the kernels one conv launches (shared by the per-family conv tests:
//! tests/conv3d_igemm.rs, tests/conv3d_rows.rs, tests/conv3d_depthwise_rows.rs,
//! tests/conv3d_fold.rs).

use cads::ops::conv3d::{conv3d_with, ConvPath};
use cads::ops::Conv3dConfig;
use cads::reference::conv3d as rc;
use cads::util::{Rng, Tolerance, F32_ACCUM};
use cads::Gpu;

use super::{assert_close, random_pair, random_param};

/// The weight shape of a conv of `x` to `cout` channels: [kD, kH, kW, Cin / groups, Cout].
pub fn w_shape(x: &[usize; 5], cout: usize, cfg: &Conv3dConfig) -> [usize; 5] {
    let k = cfg.kernel;
    [k[0], k[1], k[2], x[4] / cfg.groups, cout]
}

/// Forward within F32_ACCUM, the three gradients within `grad_tol`; `label` names the path in
/// failure messages.
#[allow(clippy::too_many_arguments)]
pub fn check_conv(
    gpu: &Gpu,
    rng: &mut Rng,
    label: &str,
    path: ConvPath,
    x_shape: [usize; 5],
    cout: usize,
    cfg: Conv3dConfig,
    grad_tol: Tolerance,
) {
    let ws = w_shape(&x_shape, cout, &cfg);
    let (x, tx) = random_param(gpu, rng, &x_shape, -1.0, 1.0);
    let (w, tw) = random_param(gpu, rng, &ws, -1.0, 1.0);
    let (b, tb) = random_param(gpu, rng, &[cout], -1.0, 1.0);
    let what = format!("{label} {x_shape:?}→{cout} {cfg:?}");
    let y = conv3d_with(&tx, &tw, Some(&tb), &cfg, path).unwrap();
    let want = rc::conv3d(&x, &w, Some(&b), &cfg);
    assert_eq!(y.shape(), want.shape.as_slice(), "{what}");
    assert_close(
        &format!("{what} forward"),
        &y.to_vec().unwrap(),
        &want.data,
        F32_ACCUM,
    );
    let (g, tg) = random_pair(gpu, rng, y.shape(), -1.0, 1.0);
    let grads = y.backward_with(&tg).unwrap();
    assert_close(
        &format!("{what} grad x"),
        &grads.get(&tx).unwrap().to_vec().unwrap(),
        &rc::conv3d_backward_input(&g, &w, &x_shape, &cfg).data,
        grad_tol,
    );
    assert_close(
        &format!("{what} grad w"),
        &grads.get(&tw).unwrap().to_vec().unwrap(),
        &rc::conv3d_backward_weight(&g, &x, &ws, &cfg).data,
        grad_tol,
    );
    assert_close(
        &format!("{what} grad b"),
        &grads.get(&tb).unwrap().to_vec().unwrap(),
        &rc::conv3d_backward_bias(&g).data,
        grad_tol,
    );
}

/// The kernels one forward + backward of a conv of `x` to `cout` channels launched on `path`, by
/// `shader::entry`, sorted.
pub fn conv_kernels_run(
    gpu: &Gpu,
    path: ConvPath,
    x: [usize; 5],
    cout: usize,
    cfg: Conv3dConfig,
) -> Vec<String> {
    let mut rng = Rng::new(173);
    let (_, tx) = random_param(gpu, &mut rng, &x, -1.0, 1.0);
    let (_, tw) = random_param(gpu, &mut rng, &w_shape(&x, cout, &cfg), -1.0, 1.0);
    gpu.set_profiling(true);
    let y = conv3d_with(&tx, &tw, None, &cfg, path).unwrap();
    let (_, tg) = random_pair(gpu, &mut rng, y.shape(), -1.0, 1.0);
    y.backward_with(&tg).unwrap();
    gpu.synchronize().unwrap();
    gpu.set_profiling(false);
    let mut names: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
    names.sort();
    names
}
