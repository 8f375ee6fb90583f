//! The flight recorder: the newest drop events (with their packet bytes) kept in memory,
//! bounded by age (`--keep`) and size (`--keep-bytes`), oldest evicted first and counted. It
//! is one more sink of the capture pipeline; dumps take a time window out of it. Records are
//! shared (`Arc`), so a dump of the whole recorder costs pointers, not a second copy.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Result;

use crate::{model::drop::DropRecord, sinks::Sink};

/// The smallest `--keep-bytes` accepted: room for a few hundred full-size drops.
pub const MIN_KEEP_BYTES: u64 = 1 << 20;

pub struct Ring {
    records: VecDeque<(Arc<DropRecord>, u64)>,
    pub bytes: u64,
    pub evicted: u64,
    keep: Duration,
    keep_bytes: u64,
}

impl Ring {
    pub fn new(keep: Duration, keep_bytes: u64) -> Self {
        Self { records: VecDeque::new(), bytes: 0, evicted: 0, keep, keep_bytes }
    }

    /// Drops held.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    pub fn push(&mut self, r: DropRecord) {
        let size = footprint(&r);
        self.records.push_back((Arc::new(r), size));
        self.bytes += size;
        while self.bytes > self.keep_bytes {
            self.pop();
        }
    }

    /// Evicts what is older than `--keep` at wall time `now` (since the Unix epoch).
    pub fn expire(&mut self, now: Duration) {
        let Some(oldest_kept) = now.checked_sub(self.keep) else { return };
        while self.records.front().is_some_and(|(r, _)| r.ts < oldest_kept) {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, size)) = self.records.pop_front() {
            self.bytes -= size;
            self.evicted += 1;
        }
    }

    /// The records with `from <= ts <= to`, oldest first.
    pub fn window(&self, from: Duration, to: Duration) -> Vec<Arc<DropRecord>> {
        self.records.iter().filter(|(r, _)| r.ts >= from && r.ts <= to).map(|(r, _)| Arc::clone(r)).collect()
    }
}

/// What one heap block of `n` bytes costs: glibc's malloc adds an 8-byte header and rounds
/// to 16, and hands out at least 32.
fn block(n: usize) -> usize {
    if n == 0 { 0 } else { (n + 8).next_multiple_of(16).max(32) }
}

/// Heap bytes of a record (its own block, strings, packet bytes, attribution) and its slot
/// here, as the allocator hands them out: what `--keep-bytes` bounds is the memory it takes.
fn footprint(r: &DropRecord) -> u64 {
    let e = &r.event;
    let s = |s: &String| block(s.capacity());
    let o = |v: &Option<String>| v.as_ref().map_or(0, s);
    let strings = [&e.time, &e.reason, &e.location, &e.ifname, &e.skb, &r.iface.ifname].into_iter().map(s).sum::<usize>();
    let pods = [&e.src_pod, &e.dst_pod, &e.pod_iface, &r.iface.pod].into_iter().map(o).sum::<usize>();
    let nf = e.netfilter.as_ref().map_or(0, |n| {
        block(std::mem::size_of_val(n)) + o(&n.rule) + s(&n.table) + s(&n.chain) + block(n.candidates.capacity() * size_of::<String>()) + n.candidates.iter().map(s).sum::<usize>() + block(n.path.capacity() * size_of::<String>()) + n.path.iter().map(s).sum::<usize>() + o(&n.hint)
    });
    let tc = e.tc.as_ref().map_or(0, |t| block(std::mem::size_of_val(t)) + s(&t.ifname) + o(&t.prog) + o(&t.prog_tag) + block(t.candidates.capacity() * size_of::<String>()) + t.candidates.iter().map(s).sum::<usize>() + o(&t.hint));
    let cilium = e.cilium.as_ref().map_or(0, |c| block(std::mem::size_of_val(c)) + 256);
    // The Arc's block (counts + record) and the ring's slot.
    let own = block(2 * size_of::<usize>() + size_of::<DropRecord>()) + size_of::<(Arc<DropRecord>, u64)>();
    (own + block(r.data.capacity()) + strings + pods + nf + tc + cilium) as u64
}

/// The ring shared by the sink (on the pipeline) and the watch loop.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Ring>>);

impl Recorder {
    pub fn new(keep: Duration, keep_bytes: u64) -> Self {
        Self(Arc::new(Mutex::new(Ring::new(keep, keep_bytes))))
    }

    pub fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding it ends the process anyway (see main.rs).
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Sink for Recorder {
    fn name(&self) -> &'static str {
        "flight recorder"
    }

    fn drop_event(&mut self, d: &DropRecord) -> Result<()> {
        let mut r = d.clone();
        // Only what a dump's pcapng holds: the snaplen's bytes (already so), no spare capacity.
        r.data.shrink_to_fit();
        self.lock().push(r);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::drop::{DropEvent, Iface};

    fn record(ts_s: u64, bytes: usize) -> DropRecord {
        let event = DropEvent {
            kind: "drop",
            time: String::new(),
            reason: "X".into(),
            location: String::new(),
            ifname: "eth0".into(),
            ifindex: 1,
            netns: 1,
            headers: crate::model::headers::Headers::default(),
            len: 0,
            caplen: 0,
            link: "ethernet",
            skb: String::new(),
            reason_code: 0,
            netfilter: None,
            tc: None,
            cilium: None,
            src_pod: None,
            dst_pod: None,
            pod_iface: None,
            packet_id: None,
            stack: None,
            mark: None,
            ct: None,
            pkt_type: None,
            mtu: None,
            mtu_from: None,
            gso: None,
        };
        DropRecord { event, iface: Iface { netns: 1, ifindex: 1, ifname: "eth0".into(), linktype: 1, pod: None }, ts: Duration::from_secs(ts_s), data: vec![0; bytes], in_pcap: false }
    }

    #[test]
    fn bounded_by_bytes_and_age() {
        let one = footprint(&record(0, 1000));
        let mut r = Ring::new(Duration::from_mins(1), one * 3);
        for t in 0..5 {
            r.push(record(t, 1000));
        }
        assert_eq!((r.records(), r.evicted), (3, 2));
        assert!(r.bytes <= one * 3);
        assert_eq!(r.window(Duration::from_secs(3), Duration::from_secs(4)).len(), 2);
        r.expire(Duration::from_secs(63) + Duration::from_millis(500));
        assert_eq!((r.records(), r.evicted), (1, 4));
    }
}
