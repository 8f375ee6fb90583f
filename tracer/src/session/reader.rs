//! The ring buffer is read on its own thread, whatever the event loop is doing: records wait
//! in a queue for the loop instead of in the ring, so a slow step downstream (a ruleset
//! listing, a full disk) costs memory here before it costs events there. The queue is bounded
//! too: past as many bytes as the ring holds, the reader leaves records in the ring, which
//! then holds as much again before the kernel counts events lost (exactly, as always).
//!
//! Waking: the probes let the kernel wake the reader only for a record that lands in an empty
//! ring (its default: at most one wakeup per drain), and the reader, once woken, sleeps up to
//! `POLL` between drains, so a busy ring is read in batches and an idle capture costs no
//! wakeups but one per `IDLE`. Records coming fast enough to fill an eighth of the ring within
//! `POLL` (a burst of large packets with a large snaplen fills 8 MiB in ten milliseconds)
//! shorten the sleep to that time, and a drain that shows no rate yet (a burst's start, a lone
//! record) to `FIRST` (`Pace`).
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
/// How long records may gather after a drain that shows no rate yet: the first since a wait (a
/// burst's start) or one that read a lone record (a burst's first, read as it came, or one of
/// a trickle, which then costs a second wakeup each).
const FIRST: Duration = Duration::from_millis(1);
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
    /// Record bytes queued before the reader pauses (the ring then buffers), so the peak
    /// memory stays bounded by it: half the ring for a capture (4 MiB), the ring's size for a
    /// watch (2 MiB).
    max_queued: usize,
    /// The ring's size, which the reader's pace is reckoned in.
    ring_bytes: usize,
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
    /// Reads `ring` (of `ring_bytes`) on a thread of its own, queueing at most `max_queued`
    /// bytes of records for the event loop.
    pub fn spawn(ring: RingBuf<MapData>, ring_bytes: usize, max_queued: usize) -> std::io::Result<Self> {
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
            ring_bytes,
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
    let mut pace = Pace::default();
    loop {
        // Read after the flag: whatever the detached probes wrote is in the ring by then.
        let last = s.stop.load(Ordering::Acquire);
        let started = crate::model::time::mono_now();
        let mut sent = 0usize;
        let mut bytes = 0usize;
        let (mut oldest_ns, mut newest_ns) = (0u64, 0u64);
        let mut emptied = false;
        // The last drain takes everything: no more records come.
        while last || s.queued.load(Ordering::Relaxed) < s.max_queued {
            let Some(item) = ring.next() else {
                s.drained.store(started, Ordering::Release);
                emptied = true;
                break;
            };
            s.queued.fetch_add(item.len(), Ordering::Relaxed);
            // Every record starts with its kernel time stamp (`PacketEvent::ts_ns`).
            newest_ns = item.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes);
            if sent == 0 {
                oldest_ns = newest_ns;
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
            let p = pace.after(bytes, (oldest_ns, newest_ns), crate::model::time::mono_now(), s.ring_bytes);
            log::trace!("read {sent} records ({bytes} bytes, stamped over {} us); next read in {p:?}", newest_ns.saturating_sub(oldest_ns) / 1_000);
            std::thread::sleep(p);
        } else if !emptied {
            // The queue is full: the event loop takes from it meanwhile.
            std::thread::sleep(POLL);
        } else {
            // A burst that resumes after a wait wakes the reader with its first record, whose
            // drain finds the rate again.
            pace = Pace::default();
            wait(&ring, s);
        }
    }
}

/// How fast records came lately, in bytes per millisecond: the rate of the last drain, or half
/// the one remembered if that is more. A burst whose sender stalls for a drain (descheduled
/// while the reader and the event loop take its CPU) and then resumes at full rate would
/// otherwise find the reader asleep for the slow drain's long pause. Reset by a wait.
#[derive(Default)]
struct Pace {
    bytes_per_ms: u64,
    /// Drains since the last wait: the first one's records are a burst's start, which comes
    /// slower than the burst (the sender's first packets resolve neighbours and fill caches).
    drains: u32,
}

impl Pace {
    /// How long records may gather after a drain that read `bytes` of them, stamped from
    /// `oldest_ns` to `newest_ns` (monotonic, like `now_ns`): `POLL`, or the time they take at
    /// the remembered rate to fill an eighth of a `ring_bytes` ring, if shorter. The rate goes
    /// by the stamps, not by the time of the drain: a reader woken by a burst's first records
    /// reads them within tens of microseconds of their stamps, which would make the burst look
    /// several times slower than it is. The eighth leaves room for a sleep that overruns and a
    /// burst that speeds up.
    fn after(&mut self, bytes: usize, (oldest_ns, newest_ns): (u64, u64), now_ns: u64, ring_bytes: usize) -> Duration {
        // No rate shown yet (see FIRST; stamps out of order count as a lone record): look
        // again soon, the next drain tells.
        let mut most = if self.drains == 0 || newest_ns <= oldest_ns { FIRST } else { POLL };
        self.drains = self.drains.saturating_add(1);
        let mut rate = self.bytes_per_ms / 2;
        // A stamp from the future or none: only the remembered rate to go by.
        if oldest_ns != 0 && newest_ns > oldest_ns && newest_ns <= now_ns {
            // At least a microsecond: records stamped within it say little about a rate.
            let span = u128::from((newest_ns - oldest_ns).max(1_000));
            rate = rate.max(u64::try_from(bytes as u128 * 1_000_000 / span).unwrap_or(u64::MAX));
        }
        self.bytes_per_ms = rate;
        if rate > 0 {
            let eighth = (ring_bytes as u128 / 8) * 1_000_000 / u128::from(rate);
            most = u64::try_from(eighth).map_or(most, |ns| most.min(Duration::from_nanos(ns)));
        }
        most
    }
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

    /// A drain past the first since a wait.
    fn after(bytes: usize, stamps: (u64, u64), now: u64) -> Duration {
        Pace { drains: 1, ..Pace::default() }.after(bytes, stamps, now, RING)
    }

    #[test]
    fn a_burst_shortens_the_pause_and_a_trickle_does_not() {
        let now = 10_000_000_000;
        // 14 records of 1,562 bytes stamped over 26 us, read 64 us after the first (a burst of
        // 1,400-byte datagrams at 500,000 a second, snaplen 2048): an eighth of the ring in
        // about 1.25 ms, where the time since the first stamp would have said 6 ms.
        let burst = after(21_868, (now - 64_000, now - 38_000), now);
        assert!(burst > Duration::from_micros(1_200) && burst < Duration::from_micros(1_300), "{burst:?}");
        // 60 kB over 10 ms (20,000 events a second of 300 bytes): POLL.
        assert_eq!(after(60_000, (now - 10_000_000, now - 50_000), now), POLL);
        // A lone record, or stamps out of order: no rate, a short look again.
        assert_eq!(after(1_562, (now - 100_000, now - 100_000), now), FIRST);
        assert_eq!(after(100_000, (now - 100_000, 0), now), FIRST);
        // No stamp: as a lone record. Stamps from the future: no rate, nothing remembered.
        assert_eq!(after(550_000, (0, 0), now), FIRST);
        assert_eq!(after(550_000, (now + 1, now + 2), now), POLL);
        // Stamped within a microsecond: the rate counts at least one.
        assert_eq!(after(1_000_000, (now - 10, now - 5), now), Duration::from_nanos(1_048));
    }

    #[test]
    fn the_first_drain_after_a_wait_looks_again_soon() {
        let now = 10_000_000_000;
        // Two records 81 us apart, a burst's start (as a reader logged it): at their rate the
        // reader would sleep POLL, while the burst then filled the ring within 11 ms.
        let mut pace = Pace::default();
        assert_eq!(pace.after(3_124, (now - 100_000, now - 19_000), now, RING), FIRST);
        // The next drain goes by its rate.
        assert_eq!(pace.after(3_124, (now - 100_000, now - 19_000), now, RING), POLL);
    }

    #[test]
    fn a_stalled_drain_keeps_half_the_rate_before_it() {
        // Three drains of a burst of 1,400-byte datagrams, snaplen 2048, as a reader logged
        // them: the third came while the sender was stalled; at its own rate it would sleep
        // 6.2 ms, while the sender, resumed, fills the ring in 11.
        let (mut pace, mut t) = (Pace::default(), 10_000_000_000);
        for (bytes, span_us) in [(110_902, 135), (1_880_648, 2_406)] {
            t += span_us * 1_000;
            assert!(pace.after(bytes, (t - span_us * 1_000, t), t + 10_000, RING) < Duration::from_millis(2));
        }
        t += 5_695_000;
        let stalled = pace.after(960_630, (t - 5_695_000, t), t + 10_000, RING);
        assert!(stalled > Duration::from_micros(2_600) && stalled < Duration::from_micros(2_750), "{stalled:?}");
        // The remembered rate fades: trickling drains reach POLL again.
        let p = (0..10).map(|i| pace.after(3_000, (t + i * 10_000_000, t + i * 10_000_000 + 9_000_000), t + (i + 1) * 10_000_000, RING)).last();
        assert_eq!(p, Some(POLL));
    }
}
