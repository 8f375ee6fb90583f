//! "Which table, chain and rule dropped this packet?" The observer slot gives the namespace,
//! family, hook and priority; the rulesets give the entries registered there; rule evaluation
//! against the packet, narrowed by rule counters over the window, gives the rule.
use std::collections::{HashMap, VecDeque};

use super::deltas;
use crate::{
    model::{hooks::Slot, netfilter::NetfilterInfo},
    netfilter::{
        self, Backend, Entry, capable,
        counters::Needs,
        eval::{self, Candidate},
        packet::PacketInfo,
        snapshot::Snapshot,
    },
    netns::Netns,
};

/// `Slot::hook` of a drop no observer saw: every hook is a candidate.
const ANY_HOOK: u32 = u32::MAX;
/// `Slot::hook` of a drop in a namespace without observers, until placed.
const IMPLIED_HOOK: u32 = u32::MAX - 1;
/// `Slot::hook` of a forwarded packet's drop where FORWARD and POSTROUTING have no observers
/// (`nf_slot::FORWARDED_*`), until placed.
const FORWARDED_HOOK: u32 = u32::MAX - 2;

/// A ruleset snapshot and when it was taken (`CLOCK_MONOTONIC` ns, the clock of the kernel's
/// event times): a drop before `start` is in its counters, one after `end` is not. Shared:
/// the next window's listing starts from it (`Snapshot::refresh`).
pub struct Timed {
    pub snap: std::sync::Arc<Snapshot>,
    pub start: u64,
    pub end: u64,
}

/// Snapshots kept per namespace (the latest and those before it): a drop read late, from a
/// backlog behind slow listings, still finds a baseline taken before it happened.
const HISTORY: usize = 4;

struct NsState {
    netns: Netns,
    /// Oldest first, never empty; the last is the latest. A namespace whose rules are still
    /// being read holds one empty snapshot taken at time 0: every counter zero, a baseline
    /// that rules out only the rules that never matched (sound, if less sharp).
    history: VecDeque<Timed>,
    entries: Vec<Entry>,
    /// The entries of the latest snapshot that can drop (`netfilter::capable`).
    capable: Vec<Entry>,
    /// Whether observers were placed here (else `implied` says where its drops happened).
    observed: bool,
    /// Its rules are being read (placed from the layout, see `netfilter::layout`).
    loading: bool,
}

impl NsState {
    fn latest(&self) -> &Timed {
        self.history.back().expect("a namespace always has its start-up snapshot")
    }

    /// The newest snapshot surely taken before a drop at `mono` (it ended before), else the
    /// oldest kept: the baseline of that drop's window.
    fn before(&self, mono: u64) -> &Timed {
        self.history.iter().rev().find(|t| t.end < mono).unwrap_or_else(|| self.history.front().expect("never empty"))
    }
}

pub struct Attributor {
    /// No observers (kernel without BPF netfilter links): attribute `NETFILTER_DROP`s by the
    /// rule counters of any hook.
    pub unobserved_drops: bool,
    ns: HashMap<u32, NsState>,
    slots: Vec<Slot>,
}

/// A candidate with the entry it belongs to and how much its counter moved in the window.
struct Cand<'a> {
    entry: &'a Entry,
    c: Candidate,
    /// None when the rule has no counter (native nft rules without `counter`).
    delta: Option<u64>,
}

impl Attributor {
    /// `taken`: when the start-up snapshots were taken (before any drop of the capture).
    pub fn new(snapshots: Vec<(Netns, Snapshot)>, slots: Vec<Slot>, taken: u64) -> Self {
        let ns = snapshots
            .into_iter()
            .map(|(netns, snap)| {
                let entries = netfilter::entries(&snap);
                let observed = slots.iter().any(|s| s.netns == netns.inode);
                let capable = capable::capable(&snap, &entries);
                (netns.inode, NsState { netns, history: VecDeque::from([Timed { snap: snap.into(), start: 0, end: taken }]), entries, capable, observed, loading: false })
            })
            .collect();
        Self { unobserved_drops: false, ns, slots }
    }

    /// Namespaces whose observers are placed and whose rules are still to be read (the first
    /// answer of the windows' worker brings them): their drops wait for it.
    #[must_use]
    pub fn with_loading(mut self, spaces: Vec<Netns>) -> Self {
        for netns in spaces {
            let empty = Timed { snap: Snapshot::default().into(), start: 0, end: 0 };
            let observed = self.slots.iter().any(|s| s.netns == netns.inode);
            self.ns.insert(netns.inode, NsState { netns, history: VecDeque::from([empty]), entries: Vec::new(), capable: Vec::new(), observed, loading: true });
        }
        self
    }

    pub fn entries(&self, inode: u32) -> &[Entry] {
        self.ns.get(&inode).map_or(&[], |s| s.entries.as_slice())
    }

    pub fn slot(&self, id: u32) -> Option<&Slot> {
        id.checked_sub(1).and_then(|i| self.slots.get(i as usize))
    }

    /// A drop no observer saw (kernels without BPF netfilter links, < 6.4): the candidates are
    /// every rule of every hook of the namespace for the packet's family, and only the rule
    /// counters of the window can single one out ("window"), never evaluation alone.
    pub fn unobserved(netns: u32, ipv6: bool) -> Slot {
        Slot { netns, pf: if ipv6 { netfilter::NFPROTO_IPV6 } else { netfilter::NFPROTO_IPV4 }, hook: ANY_HOOK, priority: 0, lowest: 0 }
    }

    /// A `NETFILTER_DROP` in a namespace left without observers: a slot for "its chain that can
    /// drop", placed by [`Attributor::place`] with the snapshot that closes the drop's window.
    /// `pf` 0: not known (the kernel's totals). None where observers were placed.
    pub fn implied(&self, netns: u32, pf: u32) -> Option<Slot> {
        let st = self.ns.get(&netns).filter(|st| !st.observed)?;
        Some(Slot { netns: st.netns.inode, pf, hook: IMPLIED_HOOK, priority: 0, lowest: 0 })
    }

    /// A `NETFILTER_DROP` of a packet being forwarded (`nf_slot::FORWARDED_*`, family `pf`) in
    /// a namespace whose FORWARD and POSTROUTING hooks got no observer for that family (at most
    /// one chain there could drop): a slot for "its chain there that can drop", placed by
    /// [`Attributor::place`]. None where observers sit there (their slot says more).
    pub fn forwarded(&self, netns: u32, pf: u32) -> Option<Slot> {
        let st = self.ns.get(&netns).filter(|st| st.observed)?;
        let watched = self.slots.iter().any(|s| s.netns == netns && s.pf == pf && netfilter::forwarding_hook(s.hook));
        (!watched).then_some(Slot { netns: st.netns.inode, pf, hook: FORWARDED_HOOK, priority: 0, lowest: 0 })
    }

    /// An implied slot placed: the one chain of the latest snapshot that can drop (for a
    /// forwarded slot, at FORWARD or POSTROUTING), as if an observer sat before it; else any
    /// hook of the family (counters decide). Callers advance to the snapshot that closes the
    /// drop's window first. Other slots as they are.
    pub fn place(&self, slot: &Slot) -> Slot {
        if slot.hook != IMPLIED_HOOK && slot.hook != FORWARDED_HOOK {
            return slot.clone();
        }
        let all = self.ns.get(&slot.netns).map_or(&[][..], |st| &st.capable);
        let there = |e: &&Entry| slot.hook != FORWARDED_HOOK || (e.pf == slot.pf && netfilter::forwarding_hook(e.hook));
        if capable::one_chain(all.iter().filter(there))
            && let Some(e) = all.iter().filter(there).find(|e| slot.pf == 0 || e.pf == slot.pf)
        {
            return Slot { netns: slot.netns, pf: e.pf, hook: e.hook, priority: e.priority, lowest: e.priority };
        }
        Slot { netns: slot.netns, pf: if slot.pf == 0 { netfilter::NFPROTO_IPV4 } else { slot.pf }, hook: ANY_HOOK, priority: 0, lowest: 0 }
    }

    /// Attributes a drop when evaluation alone decides; None when the rule counters of the
    /// window are needed (then `resolve_at` with a snapshot taken after the drop).
    pub fn try_exact_at(&self, slot: &Slot, p: &PacketInfo) -> Option<NetfilterInfo> {
        self.exact_or_needs(slot, p).ok()
    }

    /// [`Self::try_exact_at`], else the chains whose counters its window must read: those
    /// of its candidate rules (every chain when any hook is a candidate).
    pub fn exact_or_needs(&self, slot: &Slot, p: &PacketInfo) -> Result<NetfilterInfo, Needs> {
        let slot = &self.place(slot);
        if slot.hook == ANY_HOOK {
            return Err(None);
        }
        let Some(st) = self.ns.get(&slot.netns) else { return Err(None) };
        let mut cands = Self::candidates(st, slot, p, None);
        // Every event of a flood such a rule drops comes here: its strings are moved, not copied.
        if cands.len() == 1 && cands[0].c.certain && let Some(c) = cands.pop() {
            return Ok(info_from(c.entry, c.c, "exact", Vec::new(), None));
        }
        Err(deltas::needs(cands.iter().map(|c| (c.entry, &c.c))))
    }

    /// Final attribution of a drop at kernel time `mono` using `now` (a snapshot of the slot's
    /// namespace taken after it) for counters, from the last snapshot surely taken before it.
    /// An implied slot must be placed first ([`Attributor::place`]).
    pub fn resolve_at(&self, slot: &Slot, p: &PacketInfo, mono: u64, now: &Snapshot) -> Option<NetfilterInfo> {
        debug_assert!(slot.hook != IMPLIED_HOOK && slot.hook != FORWARDED_HOOK, "an implied slot is placed before it is resolved");
        let st = self.ns.get(&slot.netns)?;
        let base = &*st.before(mono).snap;
        let cands = Self::candidates(st, slot, p, Some((base, now)));
        let any_hook = slot.hook == ANY_HOOK;
        if cands.is_empty() {
            return (!any_hook).then(|| hook_only(slot, self.entries(slot.netns)));
        }
        if any_hook {
            // The hook is unknown: only a moving counter can tell, and only if it is alone.
            let kept: Vec<&Cand<'_>> = cands.iter().filter(|c| c.delta.is_some_and(|d| d > 0)).collect();
            let hint = if self.unobserved_drops {
                "this kernel has no BPF netfilter links (Linux < 6.4): the hook is not observed, only the rule counters of the window name the rule"
            } else {
                "no observers in this namespace (at most one chain could drop when the capture started) and more can now: only the rule counters of the window name the rule"
            }
            .to_string();
            return Some(match kept.as_slice() {
                [only] => info(only, "window", Vec::new(), Some(hint)),
                [] => info(&cands[0], "ambiguous", cands.iter().map(describe).collect(), Some(hint)),
                [first, ..] => info(first, "ambiguous", kept.iter().map(|c| describe(c)).collect(), Some(hint)),
            });
        }
        if cands.len() == 1 && cands[0].c.certain {
            return Some(info(&cands[0], "exact", Vec::new(), None));
        }
        // Rules whose counter did not move in the window did not match this packet.
        let kept: Vec<&Cand<'_>> = cands.iter().filter(|c| c.delta != Some(0)).collect();
        let names = |v: &[&Cand<'_>]| v.iter().map(|c| describe(c)).collect::<Vec<_>>();
        match kept.as_slice() {
            [] => Some(info(&cands[0],
                "ambiguous",
                cands.iter().map(describe).collect(),
                Some("no candidate rule counter moved; the ruleset may have changed during the capture".into()),
            )),
            [only] if only.delta.is_some() => Some(info(only, if only.c.definite { "counters" } else { "window" }, Vec::new(), None)),
            [first, ..] if first.c.definite && first.delta.is_some() => Some(info(first, "counters", Vec::new(), None)),
            [first, ..] => Some(info(first,
                "ambiguous",
                names(&kept),
                Some(if kept.iter().any(|c| c.delta.is_none()) {
                    "native nft rules without a `counter` cannot be told apart from the packet alone: add `counter` to the candidate rules (nft replace rule … counter …) and capture again".into()
                } else {
                    "several rules matched in the window; narrow the capture expression to one flow".into()
                }),
            )),
        }
    }

    /// `window`: the baseline and the snapshot that closes the window (for counters).
    fn candidates<'a>(st: &'a NsState, slot: &Slot, p: &PacketInfo, window: Option<(&Snapshot, &Snapshot)>) -> Vec<Cand<'a>> {
        let (base, now) = match window {
            Some((b, n)) => (b, Some(n)),
            None => (&*st.latest().snap, None),
        };
        let snap = now.unwrap_or(base);
        let mut out = Vec::new();
        let here: Vec<&Entry> = st
            .entries
            .iter()
            .filter(|e| e.pf == slot.pf && (slot.hook == ANY_HOOK || (e.hook == slot.hook && e.priority == slot.priority)))
            .collect();
        for entry in &here {
            match entry.backend {
                Backend::IptablesNft | Backend::IptablesLegacy => {
                    let save = if entry.backend == Backend::IptablesNft { snap.iptables_nft(entry.pf) } else { snap.iptables_legacy(entry.pf) };
                    let old = if entry.backend == Backend::IptablesNft { base.iptables_nft(entry.pf) } else { base.iptables_legacy(entry.pf) };
                    let found = save.table(&entry.table).map(|t| eval::candidates(t, &entry.chain, &facts_for(t, p)));
                    for c in found.unwrap_or_default() {
                        let delta = now.map(|_| deltas::iptables(old, save, &entry.table, &c));
                        out.push(Cand { entry, c, delta });
                    }
                }
                Backend::Nftables => {
                    let table = snap.nft.table(&entry.family, &entry.table);
                    for c in eval::candidates(&table, &entry.chain, &facts_for(&table, p)) {
                        let delta = now.and_then(|_| deltas::nft(&base.nft, &snap.nft, entry, &c));
                        out.push(Cand { entry, c, delta });
                    }
                }
                Backend::Conntrack => {}
            }
        }
        if out.is_empty()
            && let Some(ct) = here.iter().find(|e| e.backend == Backend::Conntrack)
        {
            out.push(Cand {
                entry: ct,
                c: Candidate {
                    chain: String::new(),
                    path: Vec::new(),
                    rule: "conntrack dropped the packet (invalid or unclassifiable)".into(),
                    verdict: "DROP".into(),
                    definite: false,
                    certain: here.len() == 1,
                    index: None,
                },
                delta: None,
            });
        }
        out
    }

    /// The namespace a snapshot must be taken in, when this namespace's rules are known.
    pub fn netns(&self, inode: u32) -> Option<&Netns> {
        self.ns.get(&inode).map(|st| &st.netns)
    }

    /// Whether drops in this namespace can be attributed at all.
    pub fn knows(&self, inode: u32) -> bool {
        self.ns.contains_key(&inode)
    }

    /// When the latest snapshot of a namespace was taken (`start`, `end`).
    pub fn taken(&self, inode: u32) -> Option<(u64, u64)> {
        self.ns.get(&inode).map(|st| (st.latest().start, st.latest().end))
    }

    /// The latest snapshot of a namespace.
    pub fn latest(&self, inode: u32) -> Option<&Snapshot> {
        self.ns.get(&inode).map(|st| &*st.latest().snap)
    }

    /// The latest snapshot of a namespace whose rules were read, to start the next from.
    pub fn latest_shared(&self, inode: u32) -> Option<std::sync::Arc<Snapshot>> {
        self.ns.get(&inode).filter(|st| !st.loading).map(|st| st.latest().snap.clone())
    }

    /// The latest snapshot of `inode` when it surely closes the window of a drop at `mono`
    /// (it started after the drop, read the counters `needs` names, and one kept before it
    /// ended before it): drops read from a backlog after a slow snapshot need no other.
    pub fn covering(&self, inode: u32, mono: u64, needs: &Needs) -> Option<&Snapshot> {
        let st = self.ns.get(&inode)?;
        let latest = st.latest();
        let baseline = st.history.iter().rev().skip(1).any(|t| t.end < mono);
        (baseline && mono < latest.start && latest.snap.reads(needs)).then_some(&*latest.snap)
    }

    /// Makes `now` the baseline of the next window of its namespace; true when it brought the
    /// namespace's rules for the first time (it was loading).
    pub fn advance(&mut self, inode: u32, now: Timed) -> bool {
        let Some(st) = self.ns.get_mut(&inode) else { return false };
        st.entries = netfilter::entries(&now.snap);
        st.capable = capable::capable(&now.snap, &st.entries);
        st.history.push_back(now);
        std::mem::replace(&mut st.loading, false)
    }

    /// Forgets the snapshots past `HISTORY` per namespace (after the drops that came before
    /// the latest were attributed: their baselines may be the oldest).
    pub fn trim(&mut self) {
        for st in self.ns.values_mut() {
            while st.history.len() > HISTORY {
                st.history.pop_front();
            }
        }
    }
}

/// The packet as `table`'s rules are evaluated against it: without the drop's marks and
/// conntrack state where a rule of the table may have changed them before the drop.
fn facts_for<'p>(table: &impl eval::Chains, p: &'p PacketInfo) -> std::borrow::Cow<'p, PacketInfo> {
    if table.sets_facts() { std::borrow::Cow::Owned(p.without_kernel_facts()) } else { std::borrow::Cow::Borrowed(p) }
}

fn describe(c: &Cand<'_>) -> String {
    format!("{} {} {}: {}", c.entry.backend.name(), c.entry.table, c.c.chain, c.c.rule)
}

fn info(c: &Cand<'_>, how: &str, candidates: Vec<String>, hint: Option<String>) -> NetfilterInfo {
    // Copies only what the record keeps: a path of one chain stays behind (`info_from`).
    let path = if c.c.path.len() > 1 { c.c.path.clone() } else { Vec::new() };
    info_from(c.entry, Candidate { chain: c.c.chain.clone(), path, rule: c.c.rule.clone(), verdict: c.c.verdict.clone(), ..c.c }, how, candidates, hint)
}

fn info_from(e: &Entry, c: Candidate, how: &str, candidates: Vec<String>, hint: Option<String>) -> NetfilterInfo {
    NetfilterInfo {
        family: e.family.clone(),
        table: e.table.clone(),
        chain: if c.chain.is_empty() { e.chain.clone() } else { c.chain },
        hook: netfilter::HOOKS.get(e.hook as usize).copied().unwrap_or("?").into(),
        priority: e.priority,
        verdict: c.verdict,
        rule: Some(c.rule),
        backend: e.backend.name().into(),
        path: if c.path.len() > 1 { c.path } else { Vec::new() },
        attribution: how.into(),
        candidates,
        hint,
    }
}

/// Only the hook is known (no entry modelled at that priority, e.g. a table added after start).
fn hook_only(slot: &Slot, entries: &[Entry]) -> NetfilterInfo {
    let tables: Vec<String> = entries
        .iter()
        .filter(|e| e.pf == slot.pf && e.hook == slot.hook && e.priority == slot.priority)
        .map(|e| format!("{} {} {}", e.backend.name(), e.table, e.chain))
        .collect();
    NetfilterInfo {
        family: netfilter::family_of_pf(slot.pf).into(),
        table: String::new(),
        chain: String::new(),
        hook: netfilter::HOOKS.get(slot.hook as usize).copied().unwrap_or("?").into(),
        priority: slot.priority,
        verdict: "DROP".into(),
        rule: None,
        backend: String::new(),
        path: Vec::new(),
        attribution: "hook".into(),
        candidates: tables,
        hint: Some("no rule that can drop this packet was found at this hook; did the ruleset change during the capture? compare `iptables-save -c` and `nft list ruleset`".into()),
    }
}
