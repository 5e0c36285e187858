//! Products with K % 4 ≠ 0 on a vec4 tile (src/ops/matmul_launch.rs): when the product is large
//! enough the launcher appends zero rows to both operands' K axis and runs the vec4 tile instead of
//! the scalar 4 × 4 one. Against src/reference/matmul.rs for every transpose pair, a batch with a
//! broadcast operand, the bias form, and the gradients through the tape (each again a product with
//! the odd K on one side or the other); by the kernels that ran, the padded products take the vec4
//! tile and a small one keeps the scalar tile.

mod common;

use cads::ops::{self, MatmulKernel};
use cads::reference::matmul as refmm;
use cads::util::{Rng, Tolerance, F32_ACCUM};
use common::*;

const TILE: &str = "vec4_32x4_w8";

/// A vec4 tile ran (shaders/matmul_vec4.wgsl, or the subgroup-broadcast twin of its entry) and
/// the scalar tile did not.
fn on_vec4(kernels: &[String]) -> bool {
    kernels
        .iter()
        .any(|k| k.starts_with("matmul_vec4::") || k.starts_with("matmul_vec4_sga::"))
        && !kernels.iter().any(|k| k == "matmul::matmul_tile_4x4")
}

const TOL: Tolerance = F32_ACCUM;

/// Batch dims of A and of B, then M, K, N.
type Case = (&'static [usize], &'static [usize], usize, usize, usize);

#[test]
fn odd_k_products_pad_to_the_vec4_tile_and_match_the_reference() {
    let gpu = fresh_gpu();
    let kernel = MatmulKernel::from_name(TILE).unwrap();
    let mut rng = Rng::new(51);
    // (batch of A, batch of B, M, K, N): K = 1, 2, 3 past a multiple of 4, every transpose pair,
    // a batch of A over a shared B.
    let cases: [Case; 4] = [
        (&[], &[], 256, 18, 1024),
        (&[], &[], 300, 67, 256),
        (&[], &[], 64, 1025, 68),
        (&[3], &[], 128, 33, 400),
    ];
    for &(ba, bb, m, k, n) in &cases {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let what = format!("a{ba:?} b{bb:?} M{m} K{k} N{n} ta {ta} tb {tb}");
            let a_shape: Vec<usize> = ba
                .iter()
                .copied()
                .chain(if ta { [k, m] } else { [m, k] })
                .collect();
            let b_shape: Vec<usize> = bb
                .iter()
                .copied()
                .chain(if tb { [n, k] } else { [k, n] })
                .collect();
            let (a, t_a) = random_pair(&gpu, &mut rng, &a_shape, -1.0, 1.0);
            let (b, t_b) = random_pair(&gpu, &mut rng, &b_shape, -1.0, 1.0);
            let (out, kernels) = ran(&gpu, || ops::matmul_with(&t_a, &t_b, ta, tb, kernel));
            assert!(on_vec4(&kernels), "{what}: {kernels:?}");
            let want = refmm::matmul(&a, &b, ta, tb);
            let out = out.unwrap();
            assert_eq!(out.shape(), want.shape.as_slice(), "{what}");
            assert_close(&what, &out.to_vec().unwrap(), &want.data, TOL);
        }
    }
}

#[test]
fn the_padded_bias_form_and_the_gradients_match_the_reference() {
    let gpu = fresh_gpu();
    let kernel = MatmulKernel::from_name(TILE).unwrap();
    let mut rng = Rng::new(53);
    // A linear layer over 2050 inputs: the forward pads K (on the vec4 tile's bias form); its
    // weight gradient xᵀ·g has K = the 30 rows (padded to 32); its input gradient g·wᵀ has
    // N = 2050 columns, which the scalar tile takes.
    let (m, k, n) = (30, 2050, 2048);
    let (x, tx) = random_param(&gpu, &mut rng, &[m, k], -1.0, 1.0);
    let (w, tw) = random_param(&gpu, &mut rng, &[k, n], -1.0, 1.0);
    let (bias, tbias) = random_pair(&gpu, &mut rng, &[n], -1.0, 1.0);
    let (g, tg) = random_pair(&gpu, &mut rng, &[m, n], -1.0, 1.0);
    let (y, kernels) = ran(&gpu, || {
        ops::linear_with(&tx, &tw, Some(&tbias), kernel).unwrap()
    });
    assert!(on_vec4(&kernels), "{kernels:?}");
    let grads = y.backward_with(&tg).unwrap();
    let product = refmm::matmul(&x, &w, false, false);
    let want: Vec<f64> = product
        .data
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias.data[i % n])
        .collect();
    assert_close("y", &y.to_vec().unwrap(), &want, TOL);
    let gx = refmm::matmul(&g, &w, false, true);
    let gw = refmm::matmul(&x, &g, true, false);
    let got_gx = grads.get(&tx).unwrap().to_vec().unwrap();
    let got_gw = grads.get(&tw).unwrap().to_vec().unwrap();
    assert_close("dL/dx", &got_gx, &gx.data, TOL);
    assert_close("dL/dw", &got_gw, &gw.data, TOL);
}

#[test]
fn small_odd_k_products_keep_the_scalar_tile() {
    let gpu = fresh_gpu();
    let kernel = MatmulKernel::from_name(TILE).unwrap();
    let mut rng = Rng::new(57);
    let (a, ta) = random_pair(&gpu, &mut rng, &[16, 7], -1.0, 1.0);
    let (b, tb) = random_pair(&gpu, &mut rng, &[7, 32], -1.0, 1.0);
    let (out, kernels) = ran(&gpu, || ops::matmul_with(&ta, &tb, false, false, kernel));
    assert!(
        kernels.iter().any(|k| k == "matmul::matmul_tile_4x4"),
        "{kernels:?}"
    );
    let want = refmm::matmul(&a, &b, false, false);
    assert_close("16×7×32", &out.unwrap().to_vec().unwrap(), &want.data, TOL);
}
