//! The ring buffer is read on its own thread, every `POLL`, whatever the event loop is doing:
//! records wait in a queue for the loop instead of in the ring, so a slow step downstream
//! (a ruleset listing, a full disk) costs memory here before it costs events there. The queue
//! is bounded too: past as many bytes as the ring holds, the reader leaves records in the ring,
//! which then holds as much again before the kernel counts events lost (exactly, as always).
use std::{
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

/// How often the ring buffer is drained (programs do not wake us; see bench/README).
pub const POLL: Duration = Duration::from_millis(10);

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
    /// `CLOCK_MONOTONIC` ns when the reader last started a drain that emptied the ring: every
    /// record committed before then has been queued.
    drained: AtomicU64,
}

impl Reader {
    pub fn spawn(ring: RingBuf<MapData>, max_queued: usize) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let shared = Arc::new(Shared { queued: AtomicUsize::new(0), max_queued, stop: AtomicBool::new(false), drained: AtomicU64::new(0) });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("tracer-ring".into()).spawn(move || read(ring, &tx, &s))?;
        Ok(Self { rx, shared, thread: Some(thread) })
    }

    /// The records read so far into the pipeline, which then has every drop the kernel
    /// recorded before the reader last emptied the ring (a record is committed within
    /// microseconds of its time stamp): what Cilium's windows wait for.
    pub fn feed(&self, pipe: &mut Pipeline) {
        pipe.enrich.caught_up = self.shared.drained.load(Ordering::Acquire);
        self.take(|r| pipe.handle(r));
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
        // The last drain takes everything: no more records come.
        while last || s.queued.load(Ordering::Relaxed) < s.max_queued {
            let Some(item) = ring.next() else {
                s.drained.store(started, Ordering::Release);
                break;
            };
            s.queued.fetch_add(item.len(), Ordering::Relaxed);
            if tx.send(item.to_vec()).is_err() {
                return;
            }
        }
        if last {
            return;
        }
        std::thread::sleep(POLL);
    }
}
