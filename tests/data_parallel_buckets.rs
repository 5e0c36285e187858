//! Data parallel in one process (src/dist), the gradient buckets: two replicas average their
//! gradients bucket by bucket, a missing gradient counting as zero; the all-reduce overlapped with
//! the backward pass (the default) gives the bits of the one after it and learns rank 0's order;
//! a replica that fails during the overlapped all-reduce ends the other's run. The whole-run
//! equalities are in tests/data_parallel.rs.

mod common;
#[path = "common/local_group.rs"]
mod local_group;
mod replica_compare;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cads::dist::{DataParallel, LocalGroup};
use cads::Gpu;
use local_group::TIMEOUT;

/// The bucketed all-reduce on two replicas: every parameter's gradient becomes the mean of the
/// two, whatever the bucket size (several tensors per bucket, one, or one tensor over a bucket);
/// a gradient present on one rank only is averaged with zero; one present on none stays absent.
#[test]
fn gradient_buckets_average_and_treat_a_missing_gradient_as_zero() {
    let gpus: Vec<Gpu> = (0..2).map(|_| common::fresh_gpu()).collect();
    for bucket_bytes in [4, 52, 1 << 20] {
        let out = LocalGroup::run(2, TIMEOUT, |comm| {
            let rank = cads::dist::Communicator::rank(&comm);
            let gpu = &gpus[rank];
            let shapes: [&[usize]; 4] = [&[3], &[2, 5], &[7], &[1]];
            let params: Vec<(String, cads::Tensor)> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let n: usize = s.iter().product();
                    let t = cads::Tensor::parameter(gpu, &vec![0.0; n], s).unwrap();
                    (format!("p{i}"), t)
                })
                .collect();
            let mut grads = cads::Gradients::default();
            for (i, (_, p)) in params.iter().enumerate() {
                // p2 has a gradient on rank 0 only, p3 on neither.
                if i == 3 || (i == 2 && rank == 1) {
                    continue;
                }
                let v: Vec<f32> = (0..p.numel())
                    .map(|k| (rank * 100 + i * 10 + k) as f32)
                    .collect();
                let g = cads::Tensor::from_slice(gpu, &v, p.shape()).unwrap();
                grads.accumulate(p.id(), g).unwrap();
            }
            let mut dp = DataParallel::new(Arc::new(comm));
            dp.bucket_bytes = bucket_bytes;
            let report = dp.all_reduce_gradients(&params, &mut grads)?;
            let got: Vec<Option<Vec<f32>>> = params
                .iter()
                .map(|(_, p)| grads.get(p).map(|g| g.to_vec().unwrap()))
                .collect();
            Ok((report, got))
        })
        .unwrap();
        let (report, got) = out[0].as_ref().unwrap();
        assert_eq!(got, &out[1].as_ref().unwrap().1, "ranks differ");
        assert_eq!(report.tensors, 3);
        let mean = |i: usize, n: usize| -> Vec<f32> {
            (0..n)
                .map(|k| ((i * 10 + k) as f32 + (100 + i * 10 + k) as f32) / 2.0)
                .collect()
        };
        assert_eq!(got[0].as_ref().unwrap(), &mean(0, 3));
        assert_eq!(got[1].as_ref().unwrap(), &mean(1, 10));
        let half: Vec<f32> = (0..7).map(|k| (20 + k) as f32 / 2.0).collect();
        assert_eq!(got[2].as_ref().unwrap(), &half);
        assert!(got[3].is_none());
        // 4-byte buckets: one per tensor (a tensor over the size is a bucket by itself);
        // 52 bytes: the 3 and 10 floats together, the 7 alone; 1 MiB: one bucket.
        let buckets = match bucket_bytes {
            4 => 3,
            52 => 2,
            _ => 1,
        };
        assert_eq!(report.buckets, buckets, "bucket_bytes {bucket_bytes}");
        assert_eq!(report.bytes, 4 * 4 + 4 * (3 + 10 + 7));
    }
}

/// Two replicas' parameters p0..p3 (3, 10, 7 and 1 values) and a loss Σ sum(p_i · c_i) over
/// the ones this rank uses, so that d loss / d p_i = c_i, with c_i[k] = 100·rank + 10·i + k.
/// Rank 0 uses p1, p0, p2 (in that order: its gradients finalise as p2, p0, p1), rank 1 p1, p0;
/// p3 is used by neither.
fn bucket_params(gpu: &Gpu) -> Vec<(String, cads::Tensor)> {
    let shapes: [&[usize]; 4] = [&[3], &[2, 5], &[7], &[1]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n: usize = s.iter().product();
            let t = cads::Tensor::parameter(gpu, &vec![0.5; n], s).unwrap();
            (format!("p{i}"), t)
        })
        .collect()
}

fn bucket_loss(gpu: &Gpu, rank: usize, params: &[(String, cads::Tensor)]) -> cads::Tensor {
    let used: &[usize] = if rank == 0 { &[1, 0, 2] } else { &[1, 0] };
    let mut loss: Option<cads::Tensor> = None;
    for &i in used {
        let p = &params[i].1;
        let c: Vec<f32> = (0..p.numel())
            .map(|k| (rank * 100 + i * 10 + k) as f32)
            .collect();
        let c = cads::Tensor::from_slice(gpu, &c, p.shape()).unwrap();
        let term = cads::ops::sum_all(&cads::ops::mul(p, &c).unwrap()).unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => cads::ops::add(&l, &term).unwrap(),
        });
    }
    loss.unwrap()
}

/// The overlapped all-reduce (`DataParallel::backward`) gives the serial path's means, bit for
/// bit, with its semantics for missing gradients (zero on a rank without one, none where no
/// rank has one); its first step buckets the parameters reversed, the next ones in rank 0's
/// finalisation order, which every rank adopts although rank 1's own order differs.
#[test]
fn overlapped_buckets_average_like_the_serial_path_and_learn_rank_0s_order() {
    let gpus: Vec<Gpu> = (0..2).map(|_| common::fresh_gpu()).collect();
    // (bucket bytes, buckets in step 1 (reversed: p2 | p1 | p0), in step 2 (p2 p0 | p1)).
    for (bucket_bytes, first, second) in [(4, 3, 3), (40, 3, 2), (1 << 20, 1, 1)] {
        let out = LocalGroup::run(2, TIMEOUT, |comm| {
            let rank = cads::dist::Communicator::rank(&comm);
            let gpu = &gpus[rank];
            let params = bucket_params(gpu);
            let mut dp = DataParallel::new(Arc::new(comm));
            dp.bucket_bytes = bucket_bytes;
            let mut serial = dp.clone();
            serial.overlap = false;
            let read = |g: &cads::Gradients| -> Vec<Option<Vec<f32>>> {
                params
                    .iter()
                    .map(|(_, p)| g.get(p).map(|g| g.to_vec().unwrap()))
                    .collect()
            };
            let mut steps = Vec::new();
            for _ in 0..2 {
                let (g, report) = dp.backward(&bucket_loss(gpu, rank, &params), &params)?;
                let (gs, _) = serial.backward(&bucket_loss(gpu, rank, &params), &params)?;
                assert_eq!(read(&g), read(&gs), "overlapped and serial differ");
                steps.push((report, read(&g)));
            }
            let order = dp.bucket_order().unwrap();
            assert!(order.learned());
            Ok((steps, order.order().to_vec()))
        })
        .unwrap();
        let (steps, order) = out[0].as_ref().unwrap();
        assert_eq!(steps, &out[1].as_ref().unwrap().0, "ranks differ");
        // Rank 0's order: p3 (unused) first, then as its gradients finalised.
        assert_eq!(order, &vec![3, 2, 0, 1]);
        assert_eq!(&out[1].as_ref().unwrap().1, order);
        let mean = |i: usize, n: usize| -> Vec<f32> {
            (0..n)
                .map(|k| ((i * 10 + k) as f32 + (100 + i * 10 + k) as f32) / 2.0)
                .collect()
        };
        let half: Vec<f32> = (0..7).map(|k| (20 + k) as f32 / 2.0).collect();
        for (step, (report, got)) in steps.iter().enumerate() {
            assert_eq!(got[0].as_ref().unwrap(), &mean(0, 3));
            assert_eq!(got[1].as_ref().unwrap(), &mean(1, 10));
            assert_eq!(got[2].as_ref().unwrap(), &half);
            assert!(got[3].is_none());
            assert_eq!(report.tensors, 3);
            let buckets = if step == 0 { first } else { second };
            assert_eq!(report.buckets, buckets, "bucket_bytes {bucket_bytes}");
            // The marks, the 20 values and one presence flag per reduced parameter.
            assert_eq!(report.bytes, 4 * 4 + 4 * (3 + 10 + 7) + 4 * 3);
        }
    }
}

/// A replica that fails while the other's overlapped all-reduce waits for it (on the
/// communication thread, in a bucket's all-reduce): the other's backward ends at once with an
/// error naming it, not after the wait bound.
#[test]
fn a_replica_failing_during_the_overlapped_all_reduce_ends_the_other() {
    let gpus: Vec<Gpu> = (0..2).map(|_| common::fresh_gpu()).collect();
    let started = Instant::now();
    let out = LocalGroup::run(2, TIMEOUT, |comm| {
        let rank = cads::dist::Communicator::rank(&comm);
        let params = bucket_params(&gpus[rank]);
        let dp = DataParallel::new(Arc::new(comm));
        if rank == 1 {
            // Take part in the marks, then fail before the first bucket.
            let mut marks = vec![1.0f32; params.len()];
            dp.comm.all_reduce_sum(&mut marks)?;
            return Err(cads::Error::invalid(
                "replica",
                "a gradient",
                "a lost device",
            ));
        }
        dp.backward(&bucket_loss(&gpus[rank], rank, &params), &params)
            .map(drop)
    })
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let msg = out[0].as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("rank 1 failed") && msg.contains("a lost device"),
        "{msg}"
    );
}
