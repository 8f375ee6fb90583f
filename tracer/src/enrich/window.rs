//! Netfilter drops whose rule only the rule counters can name wait here for a ruleset snapshot
//! taken after them. Snapshots run `iptables-save`/`nft` (seconds on a node with 30,000 rules),
//! so they are taken on a worker thread and joined back by request: the event loop, and the
//! ring reader behind it, never wait for them (except when `MAX_HELD` drops wait, see below).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::{
    Node,
    netfilter::{Attributor, Timed},
    worker::{Answer, Worker},
};
use crate::{
    model::{drop::DropRecord, hooks::Slot, time::mono_now},
    kernel::nfnl::ChainKey,
    netfilter::{
        counters::{self, Needs},
        packet::PacketInfo,
        snapshot::{self, Snapshot},
    },
    netns::Netns,
};

/// Drops waiting for attribution are bounded: past this, the loop waits for the snapshot in
/// flight. Each holds its event and bytes (~2 KiB): 4096 keep a storm of counter-attributed
/// drops (every `NETFILTER_DROP` on kernels without observers) within the memory budget.
pub const MAX_HELD: usize = 4096;
/// The bound while a namespace's rules are first read (at its first held drop: a node with
/// 50,000 rules lists them for seconds): drops that need counters then wait for that listing
/// and the next, twice as long as a window; blocking the loop at `MAX_HELD` would leave the
/// ring to fill meanwhile. ~16 MiB at most, once per namespace.
const MAX_HELD_LOADING: usize = 2 * MAX_HELD;

/// A drop waiting for the rule counters of its window.
pub struct Held {
    pub record: DropRecord,
    pub slot: Slot,
    pub packet: PacketInfo,
    /// Kernel time of the drop (`CLOCK_MONOTONIC` ns).
    pub mono: u64,
    /// The chains whose counters its window reads.
    pub needs: Needs,
}

/// Snapshots of the namespaces asked for, by namespace inode.
type Snaps = HashMap<u32, Snapshot>;
/// A namespace to list, with its latest snapshot (when its rules were read before) and the
/// chains whose counters its held drops need.
type Ask = (u32, Netns, Option<Arc<Snapshot>>, Needs);

pub struct Windows {
    /// Lists rulesets; at most one request in flight.
    worker: Worker<Vec<Ask>, Snaps>,
    held: Vec<Held>,
    /// Least time between the end of one snapshot and the next request (0: back to back).
    /// A storm of held drops otherwise lists every ruleset continuously.
    min_gap_ns: u64,
    /// When the last snapshot ended (`CLOCK_MONOTONIC` ns).
    last_end: u64,
    /// Answers still to come under `MAX_HELD_LOADING`: a namespace's first listing and the
    /// one after it (which the drops held during the first wait for).
    loading: u8,
    /// Drops held at most (twice as many while loading): `MAX_HELD` unless set lower.
    max_held: usize,
}

impl Windows {
    /// Starts the snapshot worker; it ends when this is dropped.
    pub fn new(node: Arc<dyn Node>) -> Self {
        let worker = Worker::spawn("tracer-rulesets", move |spaces: Vec<Ask>| {
            std::thread::scope(|s| {
                let node = &node;
                let handles: Vec<_> = spaces
                    .iter()
                    .map(|(inode, ns, prev, needs)| s.spawn(move || (*inode, prev.as_deref().map_or_else(|| node.rulesets(ns), |p| node.refresh(ns, p, needs)))))
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            })
        });
        Self { worker, held: Vec::new(), min_gap_ns: 0, last_end: 0, loading: 0, max_held: MAX_HELD }
    }

    /// Snapshots at most once per `gap` while drops keep coming (sooner only when `MAX_HELD`
    /// drops wait): `tracer watch`, whose every netfilter drop waits for a window, would
    /// otherwise run `iptables-save`/`nft` without pause during a storm.
    pub fn set_min_gap(&mut self, gap: std::time::Duration) {
        self.min_gap_ns = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
    }

    /// Holds at most `n` drops (`2 n` while a namespace's rules are first read): `tracer watch`,
    /// whose recorder keeps every drop it names, bounds its memory so (`--keep-bytes` + 40 MiB).
    pub fn set_max_held(&mut self, n: usize) {
        self.max_held = n.clamp(1, MAX_HELD);
    }

    pub fn hold(&mut self, h: Held) {
        self.held.push(h);
    }

    /// Time (since the Unix epoch) of the oldest drop waiting for its window.
    pub fn oldest_held(&self) -> Option<std::time::Duration> {
        self.held.iter().map(|h| h.record.ts).min()
    }

    /// Drops wait, or a listing is in flight.
    pub fn holds(&self) -> bool {
        !self.held.is_empty() || self.worker.busy()
    }

    pub fn is_full(&self) -> bool {
        self.held.len() >= if self.loading > 0 { self.max_held * (MAX_HELD_LOADING / MAX_HELD) } else { self.max_held }
    }

    /// Drops whose window closed since the last call, attributed; asks for the next snapshot
    /// when drops wait and none is in flight. `wait`: block for the snapshot in flight.
    pub fn poll(&mut self, nf: &mut Attributor, wait: bool) -> Vec<DropRecord> {
        let mut done = Vec::new();
        if let Some(a) = self.worker.answer(wait) {
            self.last_end = a.end;
            // The drops held during a first listing wait for the next one too.
            self.loading = self.loading.saturating_sub(1);
            done = self.resolve(nf, a);
        }
        // The clock is read only when a request could go out.
        if !self.worker.busy() && !self.held.is_empty() && (wait || self.is_full() || mono_now().saturating_sub(self.last_end) >= self.min_gap_ns) {
            self.request(nf);
        }
        done
    }

    /// Every drop still waiting, attributed (the capture ends; no more drops come).
    pub fn finish(&mut self, nf: &mut Attributor) -> Vec<DropRecord> {
        let mut done = Vec::new();
        while self.worker.busy() || !self.held.is_empty() {
            if !self.worker.busy() {
                self.request(nf);
                if !self.worker.busy() {
                    // No worker: emit them unattributed rather than never.
                    done.extend(self.held.drain(..).map(|h| h.record));
                    break;
                }
            }
            done.extend(self.poll(nf, true));
        }
        done
    }

    /// Lists the namespaces of the held drops: with their latest snapshot, to read only the
    /// counters when the rules stand; without, for a namespace whose rules were never read
    /// (they are read at its first drop that needs them, not at start: an idle capture on a
    /// node of 100 pods lists nothing).
    fn request(&mut self, nf: &Attributor) {
        let spaces: BTreeMap<u32, Netns> = self.held.iter().filter_map(|h| nf.netns(h.slot.netns).map(|n| (h.slot.netns, n.clone()))).collect();
        let asks: Vec<Ask> = spaces
            .into_iter()
            .map(|(inode, ns)| (inode, ns, nf.latest_shared(inode), counters::union(self.held.iter().filter(|h| h.slot.netns == inode).map(|h| &h.needs))))
            .collect();
        let first = asks.iter().any(|(_, _, prev, _)| prev.is_none());
        if self.worker.ask(asks).is_some() && first {
            // This answer and the next: the drops held during this listing wait for the next.
            self.loading = 2;
        }
    }

    /// Attributes the drops surely in `a`'s counters (before it started); those during it wait
    /// for the next snapshot (their baseline is then the one before `a`), unless `a` first
    /// read their namespace's rules and evaluation alone names the rule.
    fn resolve(&mut self, nf: &mut Attributor, a: Answer<Snaps>) -> Vec<DropRecord> {
        // The namespaces' entries first: a drop of a namespace this answer first read needs them.
        // And which counters each read (a drop whose chains it did not read waits for the next).
        let answered: HashMap<u32, Option<Arc<BTreeSet<ChainKey>>>> = a.value.iter().map(|(inode, s)| (*inode, s.fresh.clone())).collect();
        let mut missing = BTreeSet::new();
        let mut first = BTreeSet::new();
        for (inode, snap) in a.value {
            let tools = snap.missing.clone();
            if nf.advance(inode, Timed { snap: Arc::new(snap), start: a.start, end: a.end }) {
                first.insert(inode);
                missing.extend(tools);
            }
        }
        // Read at start-up the tools' absence is said then (session/start.rs); read here, now.
        snapshot::warn_missing(missing.iter().map(String::as_str));
        let mut done = Vec::new();
        for mut h in std::mem::take(&mut self.held) {
            let ns = h.slot.netns;
            let read = answered.get(&ns).is_some_and(|fresh| counters::covers(fresh.as_deref(), &h.needs));
            if read && h.mono < a.start {
                // The baseline is the newest snapshot that ended before the drop, never `a`;
                // a drop in a namespace without observers is placed with `a` (the latest).
                h.record.event.netfilter = nf.latest(ns).and_then(|now| nf.resolve_at(&nf.place(&h.slot), &h.packet, h.mono, now));
                done.push(h.record);
            } else if first.contains(&ns)
                && let Some(info) = nf.try_exact_at(&h.slot, &h.packet)
            {
                h.record.event.netfilter = Some(info);
                done.push(h.record);
            } else {
                self.held.push(h);
            }
        }
        nf.trim();
        done
    }
}
