//! N replicas in one process: one thread and one `Gpu` per replica, collectives through shared
//! memory (a mutex and a condition variable).
//!
//! A collective is a round: each member deposits its contribution; the last to arrive combines
//! them (the sum in rank order 0, 1, …, so every member gets the same bits; a broadcast takes the
//! root's bytes), publishes the result and wakes the others; each member copies the result out,
//! and the next round opens once all have. Waits are bounded by the group's timeout; a member
//! that aborts (or is dropped mid-run, e.g. its thread panicked) ends every wait with an error
//! that names it; two members calling different collectives (or lengths) fail all of them.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Communicator;
use crate::error::{Error, Result};

/// What a member brings to a round.
#[derive(Clone, Debug)]
enum Contribution {
    Sum(Vec<f32>),
    Bytes(Vec<u8>),
    Arrive,
}

/// The call a round is for, checked equal on every member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    AllReduce(usize),
    Broadcast(usize),
    Barrier,
}

struct State {
    /// Rounds completed so far.
    round: u64,
    /// The current round's call (set by its first arrival).
    call: Option<Call>,
    slots: Vec<Option<Contribution>>,
    /// The last completed round's result and how many members have yet to copy it.
    result: Option<Arc<Contribution>>,
    readers_left: usize,
    /// Set by `abort` or a mismatch: every later or waiting call fails with it.
    failed: Option<String>,
    /// Members dropped (their thread ended); a wait that needs one of them fails.
    departed: Vec<bool>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    size: usize,
    timeout: Duration,
}

/// A group of `size` in-process members.
pub struct LocalGroup;

impl LocalGroup {
    /// The `size` members of a new group (give member r to replica r's thread).
    pub fn members(size: usize, timeout: Duration) -> Result<Vec<LocalComm>> {
        if size == 0 || timeout.is_zero() {
            return Err(Error::invalid(
                "LocalGroup::members",
                "at least one member and a wait bound > 0",
                format!("{size} members, {timeout:?}"),
            ));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                round: 0,
                call: None,
                slots: vec![None; size],
                result: None,
                readers_left: 0,
                failed: None,
                departed: vec![false; size],
            }),
            wake: Condvar::new(),
            size,
            timeout,
        });
        Ok((0..size)
            .map(|rank| LocalComm {
                rank,
                leave_on_drop: true,
                shared: shared.clone(),
            })
            .collect())
    }

    /// Run `replica(comm)` on `size` threads, one per member, and return their results in rank
    /// order. A replica that returns an error aborts the group with that error (the others' next
    /// collective fails naming it); a replica that panics leaves it (the same, naming the rank).
    pub fn run<T: Send>(
        size: usize,
        timeout: Duration,
        replica: impl Fn(LocalComm) -> Result<T> + Sync,
    ) -> Result<Vec<Result<T>>> {
        let members = LocalGroup::members(size, timeout)?;
        let replica = &replica;
        Ok(std::thread::scope(|scope| {
            let handles: Vec<_> = members
                .into_iter()
                .map(|comm| {
                    scope.spawn(move || {
                        let mut comm = comm;
                        let rank = comm.rank;
                        // The member leaves through the aborter, after its error is recorded:
                        // the others then see why it left, never a bare departure.
                        comm.leave_on_drop = false;
                        let aborter = comm.clone_handle();
                        let out = replica(comm);
                        if let Err(e) = &out {
                            aborter.abort(&e.to_string());
                        }
                        drop(aborter); // leaves, also when the replica panicked (unwinding)
                        (rank, out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(rank, h)| match h.join() {
                    Ok((_, out)) => out,
                    Err(_) => Err(Error::Distributed {
                        op: "LocalGroup::run",
                        rank,
                        size,
                        message: "the replica's thread panicked".into(),
                    }),
                })
                .collect()
        }))
    }
}

/// One member of a [`LocalGroup`]. Dropping it tells the others it left.
pub struct LocalComm {
    rank: usize,
    /// Whether dropping it marks the member as departed (false under `LocalGroup::run`, which
    /// marks it after recording the member's error).
    leave_on_drop: bool,
    shared: Arc<Shared>,
}

/// A second handle on a member's group that can only abort it (kept by `LocalGroup::run` to
/// abort on the member's error after the member itself was consumed). Dropping it marks the
/// member as departed, so a failure is always recorded before the departure it explains.
struct Aborter {
    rank: usize,
    shared: Arc<Shared>,
}

impl Aborter {
    fn abort(&self, reason: &str) {
        abort_group(&self.shared, self.rank, reason);
    }
}

impl Drop for Aborter {
    fn drop(&mut self) {
        leave_group(&self.shared, self.rank);
    }
}

fn leave_group(shared: &Shared, rank: usize) {
    let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    s.departed[rank] = true;
    shared.wake.notify_all();
}

fn abort_group(shared: &Shared, rank: usize, reason: &str) {
    let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if s.failed.is_none() {
        s.failed = Some(format!("rank {rank} failed: {reason}"));
    }
    shared.wake.notify_all();
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        if self.leave_on_drop {
            leave_group(&self.shared, self.rank);
        }
    }
}

impl LocalComm {
    fn clone_handle(&self) -> Aborter {
        Aborter {
            rank: self.rank,
            shared: self.shared.clone(),
        }
    }

    fn error(&self, op: &'static str, message: String) -> Error {
        Error::Distributed {
            op,
            rank: self.rank,
            size: self.shared.size,
            message,
        }
    }

    /// Why a wait cannot finish, if it cannot: the group failed, or a member this round still
    /// needs has left.
    fn broken(&self, op: &'static str, s: &State) -> Option<Error> {
        if let Some(f) = &s.failed {
            return Some(self.error(op, f.clone()));
        }
        let gone: Vec<usize> = (0..self.shared.size)
            .filter(|&r| s.departed[r] && s.slots[r].is_none())
            .collect();
        (!gone.is_empty()).then(|| {
            self.error(
                op,
                format!("rank(s) {gone:?} left the group (ended or failed) before this collective"),
            )
        })
    }

    /// Wait on the condition variable until `done(state)` or the deadline; errors name `op`.
    fn wait_until<'a>(
        &self,
        op: &'static str,
        mut s: MutexGuard<'a, State>,
        deadline: Instant,
        what: &str,
        done: impl Fn(&State) -> bool,
    ) -> Result<MutexGuard<'a, State>> {
        while !done(&s) {
            if let Some(e) = self.broken(op, &s) {
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = (0..self.shared.size)
                    .filter(|&r| s.slots[r].is_none())
                    .collect();
                let message = format!(
                    "waited {:.1} s {what} (ranks not arrived: {missing:?})",
                    self.shared.timeout.as_secs_f64()
                );
                s.failed.get_or_insert_with(|| {
                    format!("rank {} timed out in {op}: {message}", self.rank)
                });
                self.shared.wake.notify_all();
                return Err(self.error(op, message));
            }
            s = self
                .shared
                .wake
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(s)
    }

    /// One round: deposit `mine`, wait for the others, return the combined result.
    fn round(&self, op: &'static str, call: Call, mine: Contribution) -> Result<Arc<Contribution>> {
        let deadline = Instant::now() + self.shared.timeout;
        let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        // The previous round's result must be copied out by everyone before this one opens.
        let mut s = self.wait_until(
            op,
            s,
            deadline,
            "for the previous collective to drain",
            |s| s.readers_left == 0,
        )?;
        if let Some(e) = self.broken(op, &s) {
            return Err(e);
        }
        match s.call {
            None => s.call = Some(call),
            Some(c) if c != call => {
                let message = format!(
                    "ranks called different collectives: {c:?} and (rank {}) {call:?}",
                    self.rank
                );
                s.failed = Some(message.clone());
                self.shared.wake.notify_all();
                return Err(self.error(op, message));
            }
            Some(_) => {}
        }
        s.slots[self.rank] = Some(mine);
        let my_round = s.round;
        if s.slots.iter().all(Option::is_some) {
            let slots: Vec<Contribution> = s.slots.iter_mut().filter_map(Option::take).collect();
            s.result = Some(Arc::new(combine(call, slots)));
            s.readers_left = self.shared.size;
            s.call = None;
            s.round += 1;
            self.shared.wake.notify_all();
        } else {
            s = self.wait_until(op, s, deadline, "for the other ranks", |s| {
                s.round > my_round
            })?;
        }
        let result = s
            .result
            .clone()
            .ok_or_else(|| self.error(op, "the round completed without a result".into()))?;
        s.readers_left -= 1;
        if s.readers_left == 0 {
            s.result = None;
            self.shared.wake.notify_all();
        }
        Ok(result)
    }
}

/// The result of a round from every member's contribution, in rank order.
fn combine(call: Call, slots: Vec<Contribution>) -> Contribution {
    match call {
        Call::AllReduce(_) => {
            let mut it = slots.into_iter();
            let Some(Contribution::Sum(mut acc)) = it.next() else {
                return Contribution::Arrive;
            };
            for c in it {
                if let Contribution::Sum(v) = c {
                    acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
                }
            }
            Contribution::Sum(acc)
        }
        Call::Broadcast(root) => slots.into_iter().nth(root).unwrap_or(Contribution::Arrive),
        Call::Barrier => Contribution::Arrive,
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn backend(&self) -> &'static str {
        "local"
    }

    fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
        let op = "all_reduce_sum";
        let r = self.round(
            op,
            Call::AllReduce(data.len()),
            Contribution::Sum(data.to_vec()),
        )?;
        match &*r {
            Contribution::Sum(v) if v.len() == data.len() => {
                data.copy_from_slice(v);
                Ok(())
            }
            other => Err(self.error(op, format!("unexpected round result {other:?}"))),
        }
    }

    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<()> {
        let op = "broadcast_bytes";
        if root >= self.shared.size {
            return Err(self.error(op, format!("root {root} outside the group")));
        }
        let mine = if self.rank == root {
            Contribution::Bytes(std::mem::take(data))
        } else {
            Contribution::Arrive
        };
        let r = self.round(op, Call::Broadcast(root), mine)?;
        match &*r {
            Contribution::Bytes(v) => {
                data.clear();
                data.extend_from_slice(v);
                Ok(())
            }
            other => Err(self.error(op, format!("unexpected round result {other:?}"))),
        }
    }

    fn barrier(&self) -> Result<()> {
        self.round("barrier", Call::Barrier, Contribution::Arrive)
            .map(|_| ())
    }

    fn abort(&self, reason: &str) {
        abort_group(&self.shared, self.rank, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_rank_order_broadcasts_and_reuses_rounds() {
        let out = LocalGroup::run(3, Duration::from_secs(10), |comm| {
            let mut total = Vec::new();
            for round in 0..50 {
                let mut v = vec![(comm.rank() + 1) as f32 * 0.1, round as f32];
                comm.all_reduce_sum(&mut v)?;
                total.push(v);
                let mut b = if comm.rank() == 1 {
                    vec![round as u8; 3]
                } else {
                    vec![]
                };
                comm.broadcast_bytes(&mut b, 1)?;
                assert_eq!(b, vec![round as u8; 3]);
                comm.barrier()?;
            }
            Ok(total)
        })
        .unwrap();
        let first = out[0].as_ref().unwrap();
        for o in &out {
            // Every rank the same bits, summed in rank order.
            assert_eq!(o.as_ref().unwrap(), first);
        }
        let want = ((0.1f32 + 0.2f32) + 0.3f32, 3.0 * 7.0);
        assert_eq!((first[7][0], first[7][1]), want);
    }

    #[test]
    fn a_failing_member_ends_the_others_waits_with_its_error() {
        let start = Instant::now();
        let out = LocalGroup::run(2, Duration::from_secs(20), |comm| {
            if comm.rank() == 1 {
                return Err(Error::invalid("replica", "data", "a broken file"));
            }
            let mut v = vec![1.0f32];
            comm.all_reduce_sum(&mut v)?;
            Ok(())
        })
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        let msg = out[0].as_ref().unwrap_err().to_string();
        assert!(
            msg.contains("rank 1 failed") && msg.contains("a broken file"),
            "{msg}"
        );
        assert!(out[1].is_err());
    }

    #[test]
    fn a_wait_is_bounded_and_a_mismatch_is_named() {
        let out = LocalGroup::run(2, Duration::from_millis(300), |comm| {
            if comm.rank() == 1 {
                std::thread::sleep(Duration::from_millis(1500));
                return Ok(());
            }
            comm.barrier()
        })
        .unwrap();
        let msg = out[0].as_ref().unwrap_err().to_string();
        assert!(msg.contains("waited") && msg.contains("[1]"), "{msg}");

        let out = LocalGroup::run(2, Duration::from_secs(10), |comm| {
            let mut v = vec![0.0f32; 2 + comm.rank()];
            comm.all_reduce_sum(&mut v)
        })
        .unwrap();
        for o in out {
            let msg = o.unwrap_err().to_string();
            assert!(msg.contains("different collectives"), "{msg}");
        }
    }

    #[test]
    fn a_panicking_member_is_reported_as_left() {
        let out = LocalGroup::run(2, Duration::from_secs(20), |comm| {
            if comm.rank() == 0 {
                panic!("replica 0 panics (expected in this test)");
            }
            comm.barrier()
        })
        .unwrap();
        assert!(out[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("panicked"));
        let msg = out[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains("left the group"), "{msg}");
    }
}
