//! A thread for enrichment's node I/O (ruleset listings, Cilium map reads, bpf and netlink
//! queries), so the event loop, and the ring reader behind it, never wait for the node: a
//! request goes out with an id, its answer comes back in order, stamped with when the work
//! started and ended (`CLOCK_MONOTONIC` ns) so a drop can tell whether the answer saw it.
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

use crate::model::time::mono_now;

pub struct Answer<A> {
    pub id: u64,
    /// When the work started and ended (`CLOCK_MONOTONIC` ns).
    pub start: u64,
    pub end: u64,
    pub value: A,
}

pub struct Worker<Q, A> {
    requests: Sender<(u64, Q)>,
    answers: Receiver<Answer<A>>,
    /// Requests sent and not answered yet.
    pending: usize,
    next_id: u64,
}

impl<Q: Send + 'static, A: Send + 'static> Worker<Q, A> {
    /// Starts the thread; it ends when this is dropped. Without a thread (the system refused
    /// one) every [`Self::ask`] answers `None` and the callers carry on without the node.
    pub fn spawn(name: &str, mut work: impl FnMut(Q) -> A + Send + 'static) -> Self {
        let (requests, rx) = channel::<(u64, Q)>();
        let (tx, answers) = channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for (id, q) in rx {
                    let start = mono_now();
                    let value = work(q);
                    if tx.send(Answer { id, start, end: mono_now(), value }).is_err() {
                        break;
                    }
                }
            })
            .map_or_else(|e| log::warn!("no {name} thread: {e}"), drop);
        Self { requests, answers, pending: 0, next_id: 1 }
    }

    /// Sends a request: its id, or `None` when the thread is gone.
    pub fn ask(&mut self, q: Q) -> Option<u64> {
        let id = self.next_id;
        self.requests.send((id, q)).ok()?;
        self.next_id += 1;
        self.pending += 1;
        Some(id)
    }

    /// Whether an answer is still to come.
    pub fn busy(&self) -> bool {
        self.pending > 0
    }

    /// The next answer, if one came; `wait`: block until it comes (while one is pending).
    pub fn answer(&mut self, wait: bool) -> Option<Answer<A>> {
        if self.pending == 0 {
            return None;
        }
        let got = if wait {
            self.answers.recv().ok()
        } else {
            match self.answers.try_recv() {
                Ok(a) => Some(a),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            }
        };
        match got {
            Some(_) => self.pending -= 1,
            // The thread is gone: nothing pending will ever come.
            None => self.pending = 0,
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_in_order_with_their_ids() {
        let mut w = Worker::spawn("test-worker", |q: u32| q * 2);
        assert!(!w.busy());
        let ids: Vec<u64> = (1..=3).map(|q| w.ask(q).unwrap()).collect();
        assert!(w.busy());
        let got: Vec<(u64, u32)> = (0..3).map(|_| w.answer(true).map(|a| (a.id, a.value)).unwrap()).collect();
        assert_eq!(got, vec![(ids[0], 2), (ids[1], 4), (ids[2], 6)]);
        assert!(!w.busy());
        assert!(w.answer(true).is_none(), "nothing pending: no wait");
    }

    #[test]
    fn a_dead_thread_ends_the_wait() {
        let mut w = Worker::spawn("test-worker", |q: u32| {
            assert!(q != 1, "worker dies");
            q
        });
        w.ask(1).unwrap();
        assert!(w.answer(true).is_none());
        assert!(!w.busy());
    }
}
