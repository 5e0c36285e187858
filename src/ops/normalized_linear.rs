//! `normalized_linear`: a product with a weight whose columns are scaled to unit length, as
//! PyTorch's `weight_norm(Linear(B, K, bias=False))` with the norm fixed at 1 (the DINO head's
//! last layer):
//!
//!   y = x · W,   W[:, k] = v[:, k] / max(n_k, eps),   n_k = ‖v[:, k]‖₂
//!
//! x `[..., B]`, v `[B, K]` (stored in → out like `linear`'s weight), y `[..., K]`. It equals
//! `linear(x, l2_normalize(v, 0, eps))` (the spec, and the path taken when K is not a multiple
//! of 4 or under `l2_normalize_wide::WIDE_MIN_INNER`). Where the columns are many, the product
//! runs on v and the scale goes on the few output rows instead:
//!
//!   P = x · v,   y[r, k] = P[r, k] · s_k,   s_k = 1/max(n_k, eps)
//!
//! Backward, G = ∂L/∂y, writing ∂L/∂W = xᵀG (never formed as W's gradient is):
//!   ∂L/∂x = (G·diag(s)) · vᵀ
//!   ∂L/∂v = (xᵀG)·diag(s) − v·diag(κ),   κ_k = (Σ_b v_bk (xᵀG)_bk)/n_k³ = (Σ_r G_rk P_rk)/n_k³
//! where n_k > eps; where n_k ≤ eps the clamp makes s_k the constant 1/eps and κ_k = 0. The
//! second form of κ_k sums over the output rows, so no [B, K] product is read for it.
//!
//! Why: for the DINO head ([256, 60000], a few rows) the composed path writes the normalised
//! weight W (61 MB) in every forward, keeps it on the tape, and reads W and ∂L/∂W again for κ.
//! Here, with at most 8 rows (src/ops/normalized_linear_few.rs), the [B, K] traffic is one read
//! of v for the norms and the product together, one for ∂x, and one pass that reads v and
//! writes ∂L/∂v from x and G without forming xᵀG. With more rows the norms, the products (on
//! the adapter's matmul kernel) and a row pass that rewrites xᵀG into ∂L/∂v in its own buffer
//! (the wide kernels of src/ops/l2_normalize_wide.rs) do it. Both keep `l2_normalize`'s
//! per-column eps handling and take κ from the output rows. The products are f32 under
//! autocast, as `linear`'s (docs/kernel-tuning.md has the measurements).

use super::l2_normalize_wide;
use super::loss::{l2_normalize, L2Params};
use super::matmul::{linear, matmul_launch, MatmulKernel};
use super::normalized_linear_few::{self, NlParams};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `x · (v / max(‖v[:, k]‖₂, eps) per column k)`, recorded: gradients reach x and v.
pub fn normalized_linear(x: &Tensor, v: &Tensor, eps: f32) -> Result<Tensor> {
    let op = "normalized_linear";
    if v.rank() != 2 || x.rank() == 0 || x.shape()[x.rank() - 1] != v.shape()[0] {
        return Err(Error::shape(
            op,
            format!("x [..., B] and v [B, K]; v {:?}", v.shape()),
            x.shape(),
        ));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(op, "a finite eps > 0", eps));
    }
    let (b, k) = (v.shape()[0], v.shape()[1]);
    let lead = &x.shape()[..x.rank() - 1];
    let rows: usize = lead.iter().product();
    if !l2_normalize_wide::fits(1, k) || rows == 0 || b == 0 {
        return linear(x, &l2_normalize(v, 0, eps)?, None);
    }
    let gpu = x.gpu();
    let kernel = MatmulKernel::chosen(gpu)?;
    let too_many = |_| Error::invalid(op, "extents below 2^32", format!("{rows} x {b} x {k}"));
    let (rows32, b32, k32) = (
        u32::try_from(rows).map_err(too_many)?,
        u32::try_from(b).map_err(too_many)?,
        u32::try_from(k).map_err(too_many)?,
    );
    // v's columns: one block of B rows; the output's: one block of `rows` rows.
    let over_v = L2Params {
        outer: 1,
        axis_len: b32,
        inner: k32,
        eps,
    };
    let over_rows = L2Params {
        axis_len: rows32,
        ..over_v
    };
    // A few rows (the DINO head): the fused kernels of normalized_linear_few.rs.
    let few = normalized_linear_few::fits(rows, b, k).then_some(NlParams {
        rows: rows32,
        depth: b32,
        cols: k32,
        eps,
    });
    let norms = Tensor::uninit(gpu, op, &[k])?;
    let x_rows = x.detach().reshape(&[rows, b])?;
    let y = Tensor::uninit(gpu, op, &[rows, k])?;
    let p = match &few {
        Some(nl) => {
            let p = Tensor::uninit(gpu, op, &[rows, k])?;
            normalized_linear_few::forward(nl, &x_rows, v, &y, &p, &norms)?;
            p
        }
        None => {
            l2_normalize_wide::column_norms(gpu, &over_v, v, &norms)?;
            let p = matmul_launch(&x_rows, v, false, false, kernel)?;
            l2_normalize_wide::scale_rows(gpu, &over_rows, &p, &norms, &y)?;
            p
        }
    };
    let mut out_shape = lead.to_vec();
    out_shape.push(k);
    let y = y.reshape(&out_shape)?;

    let (need_x, need_v) = (x.requires_grad(), v.requires_grad());
    // ∂x reads v; ∂v reads x, v and P. v is a parameter (no copy); P is [rows, K].
    let vc = v.detach();
    let kept_x = need_v.then_some(x_rows);
    let kept_p = need_v.then_some(p);
    let x_shape = x.shape().to_vec();
    Ok(record(y, op, &[x, v], move |g| {
        let gpu = g.gpu();
        let bwd = "normalized_linear_backward";
        if g.numel() != rows * k {
            return Err(Error::shape(bwd, [rows, k], g.shape()));
        }
        let g_rows = g.reshape(&[rows, k])?;
        let gx = if need_x {
            let gs = Tensor::uninit(gpu, bwd, &[rows, k])?;
            l2_normalize_wide::scale_rows(gpu, &over_rows, &g_rows, &norms, &gs)?;
            Some(matmul_launch(&gs, &vc, false, true, kernel)?.reshape(&x_shape)?)
        } else {
            None
        };
        let gv = match (&kept_x, &kept_p) {
            (Some(x_rows), Some(p)) => {
                let kappa = Tensor::uninit(gpu, bwd, &[k])?;
                l2_normalize_wide::column_dots(gpu, &over_rows, p, &norms, &g_rows, &kappa)?;
                Some(match &few {
                    Some(nl) => {
                        let gv = Tensor::uninit(gpu, bwd, &[b, k])?;
                        normalized_linear_few::weight_grad(
                            nl, x_rows, &g_rows, &vc, &norms, &kappa, &gv,
                        )?;
                        gv
                    }
                    None => {
                        // xᵀG, then rewritten in place into ∂v: one [B, K] buffer.
                        let gv = matmul_launch(x_rows, &g_rows, true, false, kernel)?;
                        l2_normalize_wide::backward_apply_in_place(
                            gpu, &over_v, &vc, &norms, &kappa, &gv,
                        )?;
                        gv
                    }
                })
            }
            _ => None,
        };
        Ok(vec![gx, gv])
    }))
}
