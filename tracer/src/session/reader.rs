//! The ring buffer is read on its own thread, whatever the event loop is doing: records wait
//! in a queue for the loop instead of in the ring, so a slow step downstream (a ruleset
//! listing, a full disk) costs memory here before it costs events there. The queue is bounded
//! too: past as many bytes as the ring holds, the reader leaves records in the ring, which
//! then holds as much again before the kernel counts events lost (exactly, as always).
//!
//! Waking: the probes let the kernel wake the reader only for a record that lands in an empty
//! ring (its default: at most one wakeup per drain), and the reader, once woken, sleeps `POLL`
//! before draining again, so a busy ring is read in batches and an idle capture costs no
//! wakeups but one per `IDLE`. Records coming fast enough to fill a quarter of the ring within
//! `POLL` (a burst of large packets with a large snaplen fills 8 MiB in a few milliseconds)
//! shorten the sleep to that time (`pause`).
use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{Receiver, Sender, TryRecvError, channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};

use crate::pipeline::Pipeline;

/// How long the reader lets records gather after a drain that found some.
pub const POLL: Duration = Duration::from_millis(10);
/// The longest an idle reader waits before draining again (how stale the "every record
/// before this time is read" mark that Cilium's windows wait for can get), and the event
/// loop's pace when nothing comes and nothing waits (progress, Cilium's baselines).
pub const IDLE: Duration = Duration::from_millis(100);

pub struct Reader {
    rx: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queued: AtomicUsize,
    /// Record bytes queued before the reader pauses: as much again as the ring holds (8 MiB
    /// for a capture, 2 MiB for a watch), so the peak memory stays bounded by it.
    max_queued: usize,
    /// Set once the probes are detached: drain what is left and end.
    stop: AtomicBool,
    /// Written to wake the reader out of its wait when `stop` is set.
    stop_fd: OwnedFd,
    /// `CLOCK_MONOTONIC` ns when the reader last started a drain that emptied the ring: every
    /// record committed before then has been queued.
    drained: AtomicU64,
    /// Told after every drain that queued records: what the event loop waits for.
    queued_some: tokio::sync::Notify,
}

impl Reader {
    pub fn spawn(ring: RingBuf<MapData>, max_queued: usize) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        // SAFETY: eventfd has no memory preconditions; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let stop_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            max_queued,
            stop: AtomicBool::new(false),
            stop_fd,
            drained: AtomicU64::new(0),
            queued_some: tokio::sync::Notify::new(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("tracer-ring".into()).spawn(move || read(ring, &tx, &s))?;
        Ok(Self { rx, shared, thread: Some(thread) })
    }

    /// Resolves once the reader has queued records since the last call (at once if it did
    /// meanwhile): the event loop's cue.
    pub async fn records(&self) {
        self.shared.queued_some.notified().await;
    }

    /// The records read so far into the pipeline, which then has every drop the kernel
    /// recorded before the reader last emptied the ring (a record is committed within
    /// microseconds of its time stamp): what Cilium's windows wait for. Answers how long the
    /// loop may wait before the next feed (records also wake it): `POLL` while records come or
    /// drops wait for their windows, else `IDLE`.
    pub fn feed(&self, pipe: &mut Pipeline) -> Duration {
        pipe.enrich.caught_up = self.shared.drained.load(Ordering::Acquire);
        let mut fed = false;
        self.take(|r| {
            fed = true;
            pipe.handle(r);
        });
        if fed || pipe.enrich.holds() { POLL } else { IDLE }
    }

    /// The probes are detached: every record left into the pipeline, which then has them all.
    pub fn finish_into(self, pipe: &mut Pipeline) {
        self.finish(|r| pipe.handle(r));
        pipe.enrich.caught_up = u64::MAX;
    }

    /// The records read so far, in ring order, without waiting.
    pub fn take(&self, mut each: impl FnMut(&[u8])) {
        loop {
            match self.rx.try_recv() {
                Ok(r) => {
                    self.shared.queued.fetch_sub(r.len(), Ordering::Relaxed);
                    each(&r);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// The probes are detached: reads the ring to its end, then hands over every record left.
    pub fn finish(mut self, each: impl FnMut(&[u8])) {
        self.shared.stop.store(true, Ordering::Release);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd. A failure only leaves the
        // reader to notice the flag at its next wake (at most `IDLE`).
        let _ = unsafe { libc::write(self.shared.stop_fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.take(each);
    }
}

fn read(mut ring: RingBuf<MapData>, tx: &Sender<Vec<u8>>, s: &Shared) {
    loop {
        // Read after the flag: whatever the detached probes wrote is in the ring by then.
        let last = s.stop.load(Ordering::Acquire);
        let started = crate::model::time::mono_now();
        let mut sent = 0usize;
        let mut bytes = 0usize;
        let mut oldest_ns = 0u64;
        let mut emptied = false;
        // The last drain takes everything: no more records come.
        while last || s.queued.load(Ordering::Relaxed) < s.max_queued {
            let Some(item) = ring.next() else {
                s.drained.store(started, Ordering::Release);
                emptied = true;
                break;
            };
            s.queued.fetch_add(item.len(), Ordering::Relaxed);
            if sent == 0 {
                // Every record starts with its kernel time stamp (`PacketEvent::ts_ns`).
                oldest_ns = item.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes);
            }
            bytes += item.len();
            if tx.send(item.to_vec()).is_err() {
                return;
            }
            sent += 1;
        }
        if sent > 0 {
            s.queued_some.notify_one();
        }
        if last {
            return;
        }
        if sent > 0 {
            // Records came (more are likely): let them gather.
            std::thread::sleep(pause(bytes, oldest_ns, crate::model::time::mono_now(), s.max_queued));
        } else if !emptied {
            // The queue is full: the event loop takes from it meanwhile.
            std::thread::sleep(POLL);
        } else {
            wait(&ring, s);
        }
    }
}

/// How long records may gather after a drain that read `bytes` of them, the oldest stamped
/// `oldest_ns` (monotonic, like `now_ns`): `POLL`, or the time they take at that rate to fill
/// a quarter of a `ring_bytes` ring, if shorter.
fn pause(bytes: usize, oldest_ns: u64, now_ns: u64, ring_bytes: usize) -> Duration {
    // A stamp from the future or none: no rate to go by.
    if oldest_ns == 0 || oldest_ns > now_ns {
        return POLL;
    }
    // At least a microsecond: records read as soon as they came say little about a rate.
    let span = u128::from((now_ns - oldest_ns).max(1_000));
    let quarter = span * (ring_bytes as u128 / 4) / (bytes.max(1) as u128);
    u64::try_from(quarter).map_or(POLL, |ns| POLL.min(Duration::from_nanos(ns)))
}

/// Until the ring has a record, the reader is told to stop, or `IDLE` passes.
fn wait(ring: &RingBuf<MapData>, s: &Shared) {
    let mut fds = [
        libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: s.stop_fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    #[expect(clippy::cast_possible_truncation, reason = "IDLE is 100 ms")]
    let timeout = IDLE.as_millis() as libc::c_int;
    // SAFETY: two initialised pollfd entries, both descriptors alive while `s` and `ring` are.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
    if n < 0 {
        // EINTR or worse: fall back to a plain pause rather than spin.
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: usize = 8 << 20;

    #[test]
    fn a_burst_shortens_the_pause_and_a_trickle_does_not() {
        let now = 10_000_000_000;
        // 550 kB in 0.7 ms (a burst of 1,400-byte datagrams, snaplen 2048): a quarter of the
        // ring in about 2.7 ms.
        let burst = pause(550_000, now - 700_000, now, RING);
        assert!(burst < Duration::from_millis(3) && burst > Duration::from_millis(2), "{burst:?}");
        // 60 kB over 10 ms (20,000 events a second of 300 bytes): POLL.
        assert_eq!(pause(60_000, now - 10_000_000, now, RING), POLL);
        // No stamp, or one from the future: POLL.
        assert_eq!(pause(550_000, 0, now, RING), POLL);
        assert_eq!(pause(550_000, now + 1, now, RING), POLL);
        // Read the instant they came: the rate counts at least a microsecond.
        assert_eq!(pause(1_000_000, now, now, RING), Duration::from_nanos(2_097));
    }
}
