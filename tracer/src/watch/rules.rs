//! The `rule` label of `tracer_drops_total`, exact or empty. In watch mode the kernel keeps
//! each `NETFILTER_DROP`'s observer slot in its `DROP_STATS` key (`Config::stats_nf_slot`), so
//! the count per slot is exact whatever the event rate limit let through. A slot's count
//! moved between two reads of the kernel totals is given to a rule only when that is certain:
//! among the rules that can drop at the slot's hook (rule evaluation with nothing known of the
//! packets), exactly one rule's own counter moved between a ruleset snapshot taken before
//! the first read and one taken after the second (the attributor's "exact", "counters" and
//! "window" cases). Otherwise the drops count with `rule=""` and in
//! `tracer_netfilter_unattributed_drops_total`: a rule that appeared and vanished between two
//! snapshots, two rules dropping in the same second at the same hook, nft rules without
//! `counter`.
//!
//! Rulesets are read on a thread: every namespace's once right after ready (until then, and
//! for counts before that read, the baseline is an empty snapshot: every counter zero), then
//! for each window the counters of the chains its counts' candidate rules are in.
use std::{
    collections::{BTreeSet, HashSet},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use crate::{
    enrich::netfilter::{Attributor, Timed},
    model::{hooks::Slot, time::mono_now},
    netfilter::{
        counters::{self, Needs},
        packet::PacketInfo,
        snapshot::Snapshot,
    },
    netns::Netns,
};

use super::metrics::DropLabels;

/// Counts waiting for the snapshot that closes their window.
struct Pending {
    labels: DropLabels,
    slot: Slot,
    netns: u32,
    n: u64,
    /// `CLOCK_MONOTONIC` of the reads the count moved between.
    from: u64,
    to: u64,
    since: Instant,
    /// The chains whose counters its window reads.
    needs: Needs,
}

/// A namespace to read: its latest snapshot (None: list its rules) and the chains to read.
type Request = (Netns, Option<Arc<Snapshot>>, Needs);

/// A pending count is given up (rule "") when no snapshot closed its window this long.
const GIVE_UP: Duration = Duration::from_mins(2);
/// Pending counts kept at most (one per key and read; past it they count unattributed).
const MAX_PENDING: usize = 10_000;

pub struct Rules {
    attributor: Attributor,
    pending: Vec<Pending>,
    requests: mpsc::Sender<Request>,
    results: mpsc::Receiver<(u32, Timed)>,
    in_flight: HashSet<u32>,
    /// The chains each observer slot's counts need, until its namespace's next snapshot: the
    /// evaluation behind it walks every rule at the hook, and a slot's counts come every second.
    needs: Vec<(Slot, Needs)>,
}

impl Rules {
    /// `attributor`: the slots of the attached observers, `spaces` loading in it (their rules
    /// are listed now, in the background). Snapshots are taken on a thread of their own
    /// (`iptables-save`/`nft` may take seconds on a node with 50,000 rules).
    pub fn new(attributor: Attributor, spaces: Vec<Netns>) -> std::io::Result<Self> {
        let (requests, rx) = mpsc::channel::<Request>();
        let (tx, results) = mpsc::channel();
        std::thread::Builder::new().name("tracer-rules".into()).spawn(move || {
            for (ns, prev, needs) in rx {
                let start = mono_now();
                let snap = prev.map_or_else(|| Snapshot::take(&ns.path), |p| Snapshot::refresh(&ns.path, &p, &needs));
                let end = mono_now();
                if tx.send((ns.inode, Timed { snap: snap.into(), start, end })).is_err() {
                    break;
                }
            }
        })?;
        let mut rules = Self { attributor, pending: Vec::new(), requests, results, in_flight: HashSet::new(), needs: Vec::new() };
        for ns in spaces {
            rules.request(ns.inode);
        }
        Ok(rules)
    }

    /// `n` drops at observer `slot` between the reads at `from` and `to`; they come back from
    /// [`Rules::poll`] with their rule once a snapshot after `to` is taken.
    /// Slot 0 (or another namespace's): no observer saw them here; in a namespace left without
    /// observers they happened in its one chain that can drop, if it is one
    /// (`Attributor::implied`); flagged forwarded, where the forwarding hooks have none, in its
    /// one chain there (`Attributor::forwarded`).
    pub fn add(&mut self, labels: DropLabels, slot: u32, netns: u32, n: u64, (from, to): (u64, u64)) -> Option<(DropLabels, u64)> {
        // A forwarded packet's drop where the forwarding hooks have no observer: its one chain
        // there that can drop (`nf_slot::FORWARDED_*`). A slot of another namespace is a stale
        // ring entry (the skb's memory was another packet's), not this drop's history.
        let slot = crate::enrich::forwarded(&self.attributor, slot, netns)
            .or_else(|| self.attributor.slot(slot & tracer_common::nf_slot::ID).filter(|s| s.netns == netns).cloned())
            .or_else(|| self.attributor.implied(netns, 0));
        let Some(slot) = slot.filter(|_| self.attributor.knows(netns) && self.pending.len() < MAX_PENDING) else {
            return Some((labels, n));
        };
        let needs = self.needs_of(&slot);
        self.pending.push(Pending { labels, slot, netns, n, from, to, since: Instant::now(), needs });
        self.request(netns);
        None
    }

    /// The chains `slot`'s counts need. Nothing is known of the packets: the candidates are
    /// every rule that can drop there.
    fn needs_of(&mut self, slot: &Slot) -> Needs {
        if let Some((_, needs)) = self.needs.iter().find(|(s, _)| s == slot) {
            return needs.clone();
        }
        let needs = self.attributor.exact_or_needs(slot, &PacketInfo::default()).map_or_else(|needs| needs, |_| Some(BTreeSet::new()));
        self.needs.push((slot.clone(), needs.clone()));
        needs
    }

    /// Reads `netns`' rulesets, unless a read is in flight: the counters of the chains its
    /// pending counts need (listed again if the rules changed), or, first, its rules.
    fn request(&mut self, netns: u32) {
        if self.in_flight.contains(&netns) {
            return;
        }
        let needs = counters::union(self.pending.iter().filter(|p| p.netns == netns).map(|p| &p.needs));
        if let Some(ns) = self.attributor.netns(netns).cloned()
            && self.requests.send((ns, self.attributor.latest_shared(netns), needs)).is_ok()
        {
            self.in_flight.insert(netns);
        }
    }

    /// Drops counted and waiting for their window to close.
    pub fn pending(&self) -> u64 {
        self.pending.iter().map(|p| p.n).sum()
    }

    /// Counts whose window closed: (labels with the rule or "", count, attributed, read time).
    pub fn poll(&mut self) -> Vec<(DropLabels, u64, bool, u64)> {
        let mut out = Vec::new();
        while let Ok((inode, timed)) = self.results.try_recv() {
            self.in_flight.remove(&inode);
            let (start, snap) = (timed.start, timed.snap.clone());
            // The new snapshot first (as the capture's windows do): it is what places drops of a
            // namespace without observers; baselines are those that ended before each window.
            self.attributor.advance(inode, timed);
            self.needs.retain(|(s, _)| s.netns != inode);
            let mut again = false;
            let mut keep = Vec::with_capacity(self.pending.len());
            for p in std::mem::take(&mut self.pending) {
                if p.netns != inode {
                    keep.push(p);
                } else if p.to < start && snap.reads(&p.needs) {
                    out.push(self.resolve(p));
                } else {
                    again = true;
                    keep.push(p);
                }
            }
            self.pending = keep;
            self.attributor.trim();
            if again {
                self.request(inode);
            }
        }
        let (old, young): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending).into_iter().partition(|p| p.since.elapsed() > GIVE_UP);
        self.pending = young;
        out.extend(old.into_iter().map(|p| (p.labels, p.n, false, p.to)));
        out
    }

    /// `p`'s window closed with the latest snapshot of its namespace.
    fn resolve(&self, p: Pending) -> (DropLabels, u64, bool, u64) {
        let Some(now) = self.attributor.latest(p.netns) else { return (p.labels, p.n, false, p.to) };
        // Without observers in its namespace: the chain that could drop when the window closed.
        let slot = &self.attributor.place(&p.slot);
        // Nothing is known of the packets: every rule that can drop at the hook is a
        // candidate, and only the rule counters of the window single one out.
        let info = self.attributor.resolve_at(slot, &PacketInfo::default(), p.from, now);
        log::debug!("{} drops at {slot:?}: {info:?}", p.n);
        let rule = info.filter(|i| matches!(i.attribution.as_str(), "exact" | "counters" | "window")).and_then(|i| i.rule);
        let attributed = rule.is_some();
        let mut labels = p.labels;
        labels.rule = rule.unwrap_or_default();
        (labels, p.n, attributed, p.to)
    }
}
