//! Reads that do not stall the stream (src/gpu/readback.rs): values, order, and threads that
//! share one device while they read.

mod common;

use cads::{ops, Tensor};
use common::*;

/// An async read sees exactly the work recorded before it, not what is recorded after it, and
/// its values arrive whether or not `ready` was asked first.
#[test]
fn an_async_read_sees_the_work_recorded_before_it() {
    let gpu = fresh_gpu();
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let y = ops::add_scalar(&x, 10.0).unwrap();
    let pending = y.to_vec_async().unwrap();
    // Recorded after the read: overwrites y's buffer in stream order.
    y.assign(&x).unwrap();
    let later = ops::add_scalar(&y, 1.0).unwrap();
    while !pending.ready().unwrap() {
        std::thread::yield_now();
    }
    assert_eq!(pending.wait().unwrap(), [11.0, 12.0, 13.0]);
    assert_eq!(later.to_vec().unwrap(), [2.0, 3.0, 4.0]);
    let unasked = ops::add_scalar(&x, 5.0).unwrap().to_vec_async().unwrap();
    assert_eq!(unasked.wait().unwrap(), [6.0, 7.0, 8.0]);
}

/// Several threads record, read asynchronously and wait on one shared device. Any thread's poll
/// may run another read's map callback, and may still be about to run it when the waiting
/// thread finds the queue idle: every wait must still return its own values, never a "lost"
/// error.
#[test]
fn threads_sharing_a_device_each_get_their_async_reads() {
    let gpu = fresh_gpu();
    let n = 64;
    let base: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let x = Tensor::from_slice(&gpu, &base, &[n]).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (x, base) = (&x, &base);
            s.spawn(move || {
                for i in 0..2000 {
                    let shift = (t * 1000 + i) as f32;
                    let y = ops::add_scalar(x, shift).unwrap();
                    let pending = y.to_vec_async().unwrap();
                    // More work behind the read, as a training loop records its next step.
                    let _next = ops::add_scalar(&y, 1.0).unwrap();
                    if i % 3 == 0 {
                        let _ = pending.ready().unwrap();
                    }
                    let got = pending
                        .wait()
                        .unwrap_or_else(|e| panic!("thread {t}, read {i}: {e}"));
                    let want: Vec<f32> = base.iter().map(|v| v + shift).collect();
                    assert_eq!(got, want, "thread {t}, read {i}");
                }
            });
        }
    });
}
