//! The gradient all-reduce of data-parallel training, in buckets.
//!
//! After the local backward, the gradients of the parameters (in the trainer's order) are
//! grouped into buckets of at most `bucket_bytes` (a tensor larger than that is a bucket by
//! itself); per bucket, the gradients are flattened into one tensor on the GPU (one copy each),
//! read back once, summed across the ranks, divided by the rank count, and uploaded as each
//! parameter's new gradient:
//!
//! ```text
//!   g_p ← (1/N) Σ_r g_p^(r)      for every parameter p
//! ```
//!
//! One read-back per bucket instead of one per tensor (a b1 student has ~300 tensors; every
//! read-back waits for the device). The upload writes fresh tensors: a gradient's storage may be
//! shared with another tensor (an `add` passes its upstream gradient to both inputs), so it is
//! never overwritten in place.
//!
//! A parameter with no gradient on some rank (its branch was not used there) counts as a zero
//! gradient on that rank; one with no gradient on any rank keeps none, so the optimizer still
//! skips it. That presence is agreed first with one small all-reduce (one f32 per parameter).
//!
//! This is the path that runs after the whole backward pass (`CADS_DIST_OVERLAP=off`, or
//! gradients computed elsewhere); `dist::overlap` reduces the same buckets while the backward
//! pass runs (docs/distributed.md).

use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

use super::Communicator;

/// PyTorch DDP's default bucket size, 25 MiB.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// What one gradient all-reduce moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketReport {
    /// Parameters whose gradient was reduced.
    pub tensors: usize,
    pub buckets: usize,
    /// Bytes each rank contributed (gradients and the presence mask).
    pub bytes: usize,
}

/// Replace the gradients of `params` in `grads` by their mean over the ranks of `comm` (see the
/// module docs). With one rank nothing is read or changed.
pub fn all_reduce_gradients(
    comm: &dyn Communicator,
    params: &[(String, Tensor)],
    grads: &mut Gradients,
    bucket_bytes: usize,
) -> Result<BucketReport> {
    let op = "all_reduce_gradients";
    if bucket_bytes < 4 {
        return Err(Error::invalid(
            op,
            "a bucket of at least 4 bytes",
            bucket_bytes,
        ));
    }
    let size = comm.size();
    if size == 1 {
        return Ok(BucketReport::default());
    }
    // Which parameters have a gradient on any rank.
    let mut present: Vec<f32> = params
        .iter()
        .map(|(_, t)| if grads.get(t).is_some() { 1.0 } else { 0.0 })
        .collect();
    comm.all_reduce_sum(&mut present)?;
    let reduced: Vec<usize> = (0..params.len()).filter(|&i| present[i] > 0.0).collect();

    let mut report = BucketReport {
        tensors: reduced.len(),
        bytes: 4 * params.len(),
        ..BucketReport::default()
    };
    for members in split_into_buckets(&reduced, |i| params[i].1.numel(), bucket_bytes) {
        reduce_bucket(comm, params, &members, grads)?;
        report.buckets += 1;
        report.bytes += members
            .iter()
            .map(|&i| 4 * params[i].1.numel())
            .sum::<usize>();
    }
    Ok(report)
}

/// Consecutive runs of `members` (parameter indices, in the order given) of at most
/// `bucket_bytes` of f32 gradients each; a tensor larger than that is a bucket by itself.
pub(super) fn split_into_buckets(
    members: &[usize],
    numel: impl Fn(usize) -> usize,
    bucket_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in members {
        let b = 4 * numel(i);
        match buckets.last_mut() {
            Some(last) if bytes + b <= bucket_bytes => {
                last.push(i);
                bytes += b;
            }
            _ => {
                buckets.push(vec![i]);
                bytes = b;
            }
        }
    }
    buckets
}

/// One bucket: flatten on the GPU, read back once, sum over ranks, average, upload per tensor.
fn reduce_bucket(
    comm: &dyn Communicator,
    params: &[(String, Tensor)],
    members: &[usize],
    grads: &mut Gradients,
) -> Result<()> {
    let op = "all_reduce_gradients";
    let Some(&first) = members.first() else {
        return Ok(());
    };
    let gpu = params[first].1.gpu().clone();
    let flat: Vec<Tensor> = gpu.no_grad(|| {
        members
            .iter()
            .map(|&i| {
                let (name, p) = &params[i];
                match grads.get(p) {
                    Some(g) if g.shape() == p.shape() => g.reshape(&[g.numel()]),
                    Some(g) => Err(Error::shape(
                        "all_reduce_gradients (gradient of a parameter)",
                        format!("{name}: {:?}", p.shape()),
                        g.shape(),
                    )),
                    None => Tensor::zeros(&gpu, &[p.numel()]),
                }
            })
            .collect::<Result<Vec<Tensor>>>()
    })?;
    let joined = if flat.len() == 1 {
        flat[0].clone()
    } else {
        gpu.no_grad(|| Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0))?
    };
    drop(flat);
    let mut host = joined.to_vec()?;
    comm.all_reduce_sum(&mut host)?;
    let inv = 1.0 / comm.size() as f32;
    host.iter_mut().for_each(|v| *v *= inv);
    let mut offset = 0;
    for &i in members {
        let p = &params[i].1;
        let n = p.numel();
        let chunk = host.get(offset..offset + n).ok_or_else(|| {
            Error::shape(op, format!("{} reduced values", offset + n), host.len())
        })?;
        let g = Tensor::from_slice(&gpu, chunk, p.shape())?;
        grads.remove(p);
        grads.accumulate(p.id(), g)?;
        offset += n;
    }
    Ok(())
}
