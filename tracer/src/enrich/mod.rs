//! "Who dropped it": pods (CNI cache), the tc program (tc.rs), the netfilter rule
//! (netfilter.rs, window.rs) and Cilium's own reason (cilium/) of a drop. Enrichment asks the node through [`Node`], which the
//! session implements over the probes and the tests over fixtures; what needs the node for
//! long (ruleset listings) runs on a worker (window.rs).
pub mod cilium;
mod deltas;
pub mod netfilter;
pub mod tc;
pub mod window;
pub mod worker;

use tracer_common::{PacketEvent, nf_slot};

use self::{
    cilium::CiliumAttributor,
    netfilter::Attributor,
    tc::TcAttributor,
    window::{Held, Windows},
};
use crate::{
    model::{
        drop::{DropEvent, DropRecord},
        headers::Proto,
        hooks::Hook,
    },
    netfilter::{
        counters::Needs,
        packet::{CtState, PacketInfo},
        snapshot::Snapshot,
    },
    netns::Netns,
    pods::Pods,
};

/// Drops waiting for the tc worker at most, before the loop waits for its answer: each
/// waits ~100 µs (one bpf call or netlink dump) unless the node is struggling.
const MAX_TC_HELD: usize = 4096;

/// What enrichment asks of the node.
pub trait Node: Send + Sync {
    /// Whether BPF program `id` is still loaded.
    fn prog_exists(&self, id: u32) -> bool;
    /// The tc programs on a hook now (None when there are none or the lookup failed).
    fn tc_hook(&self, ns: &Netns, ifindex: u32, egress: bool) -> Option<Hook>;
    /// A namespace's rulesets now (runs `iptables-save`/`nft`: slow on big rulesets).
    fn rulesets(&self, ns: &Netns) -> Snapshot;
    /// A window's rulesets after `prev` (this namespace's latest), with the counters of
    /// `needs`' chains at least: by default listed again.
    fn refresh(&self, ns: &Netns, _prev: &Snapshot, _needs: &Needs) -> Snapshot {
        self.rulesets(ns)
    }
}

/// A node that answers nothing: programs are taken as loaded, no hook is looked up, rulesets
/// are empty.
pub struct Offline;

impl Node for Offline {
    fn prog_exists(&self, _id: u32) -> bool {
        true
    }

    fn tc_hook(&self, _ns: &Netns, _ifindex: u32, _egress: bool) -> Option<Hook> {
        None
    }

    fn rulesets(&self, _ns: &Netns) -> Snapshot {
        Snapshot::default()
    }
}

/// Reason values this kernel gives the drops enrichment explains.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReasonCodes {
    pub netfilter_drop: Option<u32>,
    pub tc_ingress: Option<u32>,
    pub tc_egress: Option<u32>,
}

pub struct Enricher {
    pub pods: Pods,
    pub tc: Option<TcAttributor>,
    /// Drops waiting for the tc worker's answer (with their wire header, for what follows).
    tc_held: Vec<(DropRecord, PacketEvent)>,
    /// Netfilter attribution and its windows, when observers are attached (or counters serve).
    pub nf: Option<(Attributor, Windows)>,
    /// Cilium's reason for drops by `cil_*` programs, when its maps are pinned.
    pub cilium: Option<CiliumAttributor>,
    pub codes: ReasonCodes,
    /// Name a netfilter rule only from a snapshot taken after the drop (`tracer watch`: the
    /// rulesets change while it runs, so the latest snapshot may lack the rule, or hold a
    /// since-deleted one that matches too).
    pub window_only: bool,
    /// Every drop the kernel recorded before this time (`CLOCK_MONOTONIC` ns) has been
    /// handed to the enricher: the run loop sets it from the ring reader before each batch.
    pub caught_up: u64,
}

impl Enricher {
    pub fn new(pods: Pods, codes: ReasonCodes) -> Self {
        Self { pods, tc: None, tc_held: Vec::new(), nf: None, cilium: None, codes, window_only: false, caught_up: u64::MAX }
    }

    /// Direction of a `TC_INGRESS` (false) / `TC_EGRESS` (true) reason; None for other reasons.
    pub fn tc_direction(&self, reason: u32) -> Option<bool> {
        match (self.codes.tc_ingress, self.codes.tc_egress) {
            (Some(r), _) if r == reason => Some(false),
            (_, Some(r)) if r == reason => Some(true),
            _ => None,
        }
    }

    /// Pods and tc program of a drop; its netfilter rule when evaluation alone names it. The
    /// drops whose tc program needs the node's answer, or whose rule needs the counters of
    /// their window, come back later from [`Self::poll`].
    pub fn drop(&mut self, mut r: DropRecord, h: &PacketEvent) -> Option<DropRecord> {
        if let (Some(egress), Some(tc)) = (self.tc_direction(h.reason), &mut self.tc) {
            let Some(info) = tc.resolve((h.netns, h.ifindex, h.ts_ns), &r.event.ifname, egress, h.tc_code) else {
                self.tc_held.push((r, *h));
                return None;
            };
            r.event.tc = Some(info);
        }
        self.after_tc(r, h)
    }

    /// Pods, Cilium's reason and the netfilter rule, once the tc program is known.
    fn after_tc(&mut self, mut r: DropRecord, h: &PacketEvent) -> Option<DropRecord> {
        let ev = &mut r.event;
        ev.src_pod = ev.headers.src.and_then(|a| self.pods.by_ip(a)).map(|p| p.key.clone());
        ev.dst_pod = ev.headers.dst.and_then(|a| self.pods.by_ip(a)).map(|p| p.key.clone());
        ev.pod_iface = self.pods.by_iface(h.netns, h.ifindex).map(|p| p.key.clone());
        let by_cilium = ev.tc.as_ref().is_some_and(cilium::is_cilium);
        r.iface.pod.clone_from(&ev.pod_iface);
        if let Some(c) = &mut self.cilium
            && by_cilium
        {
            c.hold(r, h.ts_ns);
            return None;
        }
        let Some((nf, windows)) = &mut self.nf else { return Some(r) };
        // Where the packet died: a forwarded packet's, in a namespace without observers at
        // the forwarding hooks, at its one chain there that can drop; else the observer slot it
        // passed last (a stale ring entry from another namespace is not this packet's
        // history), else, on kernels without observers, any hook of its namespace, else, in a
        // namespace left without observers, its one chain that can drop.
        let netfilter_drop = Some(h.reason) == self.codes.netfilter_drop;
        let ipv6 = ev.headers.src.is_some_and(|a| a.is_ipv6());
        let forwarded = if netfilter_drop { forwarded(nf, h.nf_slot, h.netns) } else { None };
        let slot = match nf.slot(h.nf_slot & nf_slot::ID) {
            _ if forwarded.is_some() => forwarded.clone(),
            Some(s) if s.netns == h.netns => Some(s.clone()),
            _ if h.nf_slot & nf_slot::ID == 0 && nf.unobserved_drops && netfilter_drop => Some(Attributor::unobserved(h.netns, ipv6)),
            // A namespace left without observers (at most one chain could drop there).
            _ if netfilter_drop => nf.implied(h.netns, if ipv6 { crate::netfilter::NFPROTO_IPV6 } else { crate::netfilter::NFPROTO_IPV4 }),
            _ => None,
        };
        let Some(slot) = slot.filter(|s| nf.knows(s.netns)) else { return Some(r) };
        // A forwarded slot is placed now for the packet's devices (in at FORWARD, out at
        // POSTROUTING); the rules' own placement waits for the window like an implied one's.
        let packet = packet_info(&r.event, if forwarded.is_some() { nf.place(&slot).hook } else { slot.hook });
        let needs = match nf.exact_or_needs(&slot, &packet) {
            Ok(info) if !self.window_only => {
                r.event.netfilter = Some(info);
                return Some(r);
            }
            // Named whatever the counters say (watch holds it for its window anyway).
            Ok(_) => Some(std::collections::BTreeSet::new()),
            Err(needs) => needs,
        };
        if let Some(now) = nf.covering(slot.netns, h.ts_ns, &needs) {
            // `now` is the latest snapshot, the one `place` reads.
            r.event.netfilter = nf.resolve_at(&nf.place(&slot), &packet, h.ts_ns, now);
            return Some(r);
        }
        windows.hold(Held { record: r, slot, packet, mono: h.ts_ns, needs });
        None
    }

    /// Held drops whose window closed. `wait`: when too many wait, block until the snapshot
    /// in flight is back (the ring reader runs on regardless).
    pub fn poll(&mut self) -> Vec<DropRecord> {
        let mut done = self.poll_tc(false);
        // Drops still in the ring, or waiting for their tc answer, are not in Cilium's count yet.
        let upstream = self.tc_held.iter().map(|(_, h)| h.ts_ns).min().unwrap_or(u64::MAX).min(self.caught_up);
        if let Some(c) = &mut self.cilium {
            let full = c.is_full();
            done.extend(c.poll(full, upstream));
            if full && c.is_full() {
                done.extend(c.poll(true, upstream));
            }
        }
        let Some((nf, windows)) = &mut self.nf else { return done };
        let full = windows.is_full();
        done.extend(windows.poll(nf, full));
        if full && windows.is_full() {
            // Every held drop came after the snapshot that was in flight: wait for the next.
            done.extend(windows.poll(nf, true));
        }
        done
    }

    /// Drops whose tc answer came in, on through the rest of enrichment; `finish`: wait for
    /// the worker (the capture ends).
    fn poll_tc(&mut self, finish: bool) -> Vec<DropRecord> {
        let mut done = Vec::new();
        let Some(tc) = &mut self.tc else { return done };
        if self.tc_held.is_empty() {
            return done;
        }
        tc.absorb(self.tc_held.len() >= MAX_TC_HELD);
        for (mut r, h) in std::mem::take(&mut self.tc_held) {
            let Some(tc) = &mut self.tc else { break };
            let egress = self.codes.tc_egress == Some(h.reason);
            let at = (h.netns, h.ifindex, h.ts_ns);
            let info = if finish { Some(tc.resolve_now(at, &r.event.ifname, egress, h.tc_code)) } else { tc.resolve(at, &r.event.ifname, egress, h.tc_code) };
            match info {
                Some(info) => {
                    r.event.tc = Some(info);
                    done.extend(self.after_tc(r, &h));
                }
                None => self.tc_held.push((r, h)),
            }
        }
        done
    }

    /// Time of the oldest drop still waiting for its netfilter window or tc answer.
    pub fn oldest_held(&self) -> Option<std::time::Duration> {
        let tc = self.tc_held.iter().map(|(r, _)| r.ts).min();
        self.nf.as_ref().and_then(|(_, w)| w.oldest_held()).into_iter().chain(tc).min()
    }

    /// Whether drops wait (for a tc answer, a Cilium or netfilter window): the loop then runs
    /// as often as records come.
    pub fn holds(&self) -> bool {
        !self.tc_held.is_empty() || self.nf.as_ref().is_some_and(|(_, w)| w.holds()) || self.cilium.as_ref().is_some_and(CiliumAttributor::holds)
    }

    /// True when held drops reached their bound (the caller polls at once).
    pub fn must_poll(&self) -> bool {
        self.tc_held.len() >= MAX_TC_HELD || self.nf.as_ref().is_some_and(|(_, w)| w.is_full()) || self.cilium.as_ref().is_some_and(CiliumAttributor::is_full)
    }

    /// Every held drop, attributed (the capture ends).
    pub fn finish(&mut self) -> Vec<DropRecord> {
        // Drops the tc worker held may go on to wait for Cilium's or netfilter's windows.
        let mut done = self.poll_tc(true);
        done.extend(self.cilium.as_mut().map(CiliumAttributor::finish).unwrap_or_default());
        if let Some((nf, windows)) = &mut self.nf {
            done.extend(windows.finish(nf));
        }
        done
    }

    /// Pod and tc program of a row of the kernel's exact statistics (at the end of a capture).
    pub fn row_owner(&mut self, k: &tracer_common::DropKey, ifname: &str) -> (Option<String>, Option<crate::model::tc::TcInfo>) {
        let pod = self.pods.by_iface(k.netns, k.ifindex).map(|p| p.key.clone());
        let tc = match (self.tc_direction(k.reason), &mut self.tc) {
            (Some(egress), Some(tc)) => Some(tc.resolve_now((k.netns, k.ifindex, crate::model::time::mono_now()), ifname, egress, k.tc_code)),
            _ => None,
        };
        (pod, tc)
    }
}

/// The slot of a netfilter drop flagged `nf_slot::FORWARDED_*` where the attributor trusts
/// the flag (no observer at the forwarding hooks of that namespace and family).
pub fn forwarded(nf: &Attributor, nf_slot: u32, netns: u32) -> Option<crate::model::hooks::Slot> {
    let pf = if nf_slot & nf_slot::FORWARDED_IPV4 != 0 {
        crate::netfilter::NFPROTO_IPV4
    } else if nf_slot & nf_slot::FORWARDED_IPV6 != 0 {
        crate::netfilter::NFPROTO_IPV6
    } else {
        return None;
    };
    nf.forwarded(netns, pf)
}

/// What rule evaluation needs from an event; the device at the drop point is the input
/// interface up to FORWARD and the output interface from OUTPUT on.
fn packet_info(ev: &DropEvent, hook: u32) -> PacketInfo {
    let h = &ev.headers;
    let dev = (!ev.ifname.is_empty()).then(|| ev.ifname.clone());
    let proto = h.proto.as_ref().map(Proto::number);
    PacketInfo {
        src: h.src,
        dst: h.dst,
        proto,
        sport: h.sport,
        dport: h.dport,
        icmp_type: h.icmp_type,
        icmp_code: h.icmp_code,
        // An unobserved drop (any hook) may have happened on either side of the route.
        in_iface: if hook <= 2 { dev.clone() } else { None },
        out_iface: if (3..=4).contains(&hook) { dev } else { None },
        // The skb at the drop: its mark and conntrack entry are what the dropping table saw
        // (`eval::Chains::sets_facts` says where they may not be).
        ct_state: ev.ct.as_ref().and_then(|c| CtState::parse(c.state)),
        mark: ev.mark,
        ct_mark: ev.ct.as_ref().and_then(|c| c.mark),
        ct_zone: ev.ct.as_ref().and_then(|c| c.zone),
    }
}
