//! What the capture starts beside the drop probe: netfilter observers and the attributor over
//! the start-up rulesets, tc observers, the pods of the CNI cache, and the [`Node`] through
//! which enrichment asks the probes and the node.
use std::{path::Path, sync::Arc};

use anyhow::{Result, bail};

use crate::{
    args::CaptureArgs,
    enrich::{Node, netfilter::Attributor, tc::TcAttributor},
    model::{hooks::Hook, time::mono_now},
    netfilter::{
        self, capable,
        counters::Needs,
        snapshot::{self, Snapshot},
    },
    netns::Netns,
    pods::Pods,
    probes::{self, loader::PodSelection, netfilter::NfObservers},
};

/// The probes and the node, as enrichment sees them.
pub struct ProbeNode;

impl Node for ProbeNode {
    fn prog_exists(&self, id: u32) -> bool {
        crate::kernel::bpf::prog_exists(id)
    }

    fn tc_hook(&self, ns: &Netns, ifindex: u32, egress: bool) -> Option<Hook> {
        probes::tc::hook_now(ns, ifindex, egress).map_err(|e| log::debug!("tc hook lookup failed: {e:#}")).ok().flatten()
    }

    fn rulesets(&self, ns: &Netns) -> Snapshot {
        Snapshot::take(&ns.path)
    }

    fn refresh(&self, ns: &Netns, prev: &Snapshot, needs: &Needs) -> Snapshot {
        Snapshot::refresh(&ns.path, prev, needs)
    }
}

/// Netfilter observers before every hook entry of every namespace in scope, and the attributor
/// over them. Placement needs only the hook points (`netfilter::layout`: base chains and
/// legacy tables, no rules), so the capture is ready at once whatever the ruleset's size; the
/// rules are read on the windows' worker (enrich/window.rs), and drops wait for them there.
/// Without BPF netfilter links (< 6.4) there are no observers and drops are attributed by the
/// rule counters alone, from a baseline read here, before any drop of the capture.
/// `forward`: whether the drop probe tells forwarded packets by their route, for IPv4 and IPv6
/// (`Config::forward_input_v4`).
pub fn start_netfilter(ctx_skb: Option<u32>, ebpf: &aya::Ebpf, only: u32, path: Option<probes::loader::MapFds>, forward: (bool, bool)) -> Result<Option<(NfObservers, Attributor)>> {
    let mut spaces = crate::netns::known();
    if only != 0 {
        spaces.retain(|n| n.inode == only);
    }
    let Some(ctx_skb) = ctx_skb else {
        // No observers: each drop is attributed by the rule counters of its window, any hook.
        log::info!("this kernel has no BPF netfilter programs (Linux < 6.4): netfilter drops are attributed by rule counters only");
        let snapshots = in_parallel(&spaces, |ns| Snapshot::take(&ns.path));
        snapshot::warn_missing(snapshots.iter().flat_map(|(_, s)| s.missing.iter().map(String::as_str)));
        let mut attributor = Attributor::new(snapshots, Vec::new(), mono_now());
        attributor.unobserved_drops = true;
        return Ok(Some((NfObservers::default(), attributor)));
    };
    // Where `nft` cannot list the chains the whole ruleset is read now (quick: without nft
    // there is little to read), and its missing tools said now. A small ruleset (a pod's, a
    // small node's) is read now too, for the first `EARLY_READS` namespaces with at most
    // `EARLY_CHAINS` chains (a kube-proxy node's FORWARD reaches thousands): its rules say
    // whether conntrack runs there (else no observer goes before conntrack's priority: one
    // program run less per packet) and, without --path, whether a lone chain can drop (else
    // no observers at all). Every other namespace is read after ready and observed from its
    // layout (without base chains there is nothing to observe).
    let (mut loaded, mut loading) = (Vec::new(), Vec::new());
    for (ns, layout) in in_parallel(&spaces, |ns| crate::netfilter::layout::read(&ns.path)) {
        match layout {
            Some((l, chains))
                if netfilter::entries(&l).is_empty() || loaded.len() >= EARLY_READS || chains.is_none_or(|n| n > EARLY_CHAINS) =>
            {
                loading.push((ns, l));
            }
            _ => loaded.push(ns),
        }
    }
    let snapshots = in_parallel(&loaded, |ns| Snapshot::take(&ns.path));
    snapshot::warn_missing(snapshots.iter().flat_map(|(_, s)| s.missing.iter().map(String::as_str)));
    let maps = probes::netfilter::asm::Maps {
        ring: probes::loader::fd(ebpf, tracer_common::names::NF_RING)?,
        // With --path the observers also report hops of followed packets.
        path: path.map(|f| probes::netfilter::asm::PathMaps { track: f.path_track, events: f.events, counters: f.counters, live: f.path_live }),
    };
    let plans = snapshots
        .iter()
        .map(|(ns, snap)| (ns.clone(), placement(ns, snap, true, maps.path.is_some(), forward)))
        .chain(loading.iter().map(|(ns, layout)| (ns.clone(), placement(ns, layout, false, maps.path.is_some(), forward))))
        .collect();
    let observers = probes::netfilter::attach(plans, i16::try_from(ctx_skb)?, maps)?;
    for f in &observers.failures {
        eprintln!("tracer: warning: no netfilter observers in namespace {f}; its netfilter drops carry no rule");
    }
    log::info!("{} netfilter observers in {} namespaces ({} with their rules still to read)", observers.links(), spaces.len(), loading.len());
    let attributor = Attributor::new(snapshots, observers.slots.clone(), mono_now()).with_loading(loading.into_iter().map(|(ns, _)| ns).collect());
    Ok(Some((observers, attributor)))
}

/// Namespaces with one base chain whose rules are read before ready (the rest after): bounds
/// what start-up spends on them (a node with a hundred pods that each have a chain of rules).
const EARLY_READS: usize = 8;
/// Chains (base and regular) a namespace read before ready may have: its rules are read in
/// well under the time start-up takes anyway (a node with 20,000 rules in 5,000 chains, read
/// early, took 1.06 s to ready against 0.46 s).
const EARLY_CHAINS: usize = 64;

/// Where the observers of one namespace go. Without --path (whose hops they also report), a
/// namespace with at most one place that can drop needs none: its `NETFILTER_DROP`s happened
/// there (`Attributor::implied`). With its rules read (`rules`), places are the chains that can
/// drop and conntrack where it runs; from the layout alone (base chains, no rules), base
/// chains, and where observers go conntrack's entries are assumed (its use is in the rules).
/// Where the drop probe tells forwarded packets (`forward`, per family), FORWARD and
/// POSTROUTING need none when at most one place there can drop (`Attributor::forwarded`):
/// a forwarded packet, most of a node's, then passes no observer.
fn placement(ns: &Netns, snap: &Snapshot, rules: bool, follow: bool, forward: (bool, bool)) -> Vec<crate::model::hooks::Slot> {
    let entries = netfilter::entries(snap);
    let capable = if rules { capable::capable(snap, &entries) } else { entries.clone() };
    // Without the rules, one base chain is not enough to go without: conntrack may run too.
    let lone = if rules { capable::chains(&capable) <= 1 } else { entries.is_empty() };
    if !follow && lone {
        return Vec::new();
    }
    let mut entries = if rules { entries } else { netfilter::with_conntrack(entries) };
    for (pf, told) in [(netfilter::NFPROTO_IPV4, forward.0), (netfilter::NFPROTO_IPV6, forward.1)] {
        let there = |e: &netfilter::Entry| e.pf == pf && netfilter::forwarding_hook(e.hook);
        let droppers: Vec<netfilter::Entry> = capable.iter().filter(|e| there(e)).cloned().collect();
        if told && !follow && capable::chains(&droppers) <= 1 {
            entries.retain(|e| !there(e));
        }
    }
    probes::netfilter::plan(ns.inode, &entries)
}

/// `f` for every namespace, each on a thread of its own (most of the time is spent waiting
/// for the tools each runs).
pub fn in_parallel<T: Send>(spaces: &[Netns], f: impl Fn(&Netns) -> T + Sync) -> Vec<(Netns, T)> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = spaces.iter().map(|ns| s.spawn(move || (ns.clone(), f(ns)))).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// Places tc observers on every hook in scope that runs BPF programs (after removing leftovers
/// of a killed earlier run). Without observers (`--no-tc`, or the kernel refused them), tc drops
/// are still attributed from the programs on their hook when a drop is seen there.
pub fn start_tc(ebpf: &mut aya::Ebpf, netns: u32, ifaces: &[tracer_common::IfacePattern], off: bool) -> (Option<probes::tc::TcObservers>, TcAttributor) {
    let spaces = crate::netns::known();
    if off {
        return (None, TcAttributor::new(Vec::new(), spaces).with_node(Arc::new(ProbeNode)));
    }
    let scope = probes::tc::Scope { netns, ifaces: ifaces.to_vec() };
    match probes::tc::attach(ebpf, &spaces, &scope) {
        Ok(obs) => {
            if obs.cleaned > 0 {
                eprintln!("tracer: removed {} tc observer filters left by a killed earlier run", obs.cleaned);
            }
            log::info!("{} tc observers on {} hooks", obs.count(), obs.hooks.len());
            let attributor = TcAttributor::new(obs.hooks.clone(), spaces).with_node(Arc::new(ProbeNode));
            (Some(obs), attributor)
        }
        Err(e) => {
            eprintln!("tracer: warning: no tc observers ({e:#}); a tc drop names its program only when it is alone on its hook");
            (None, TcAttributor::new(Vec::new(), spaces).with_node(Arc::new(ProbeNode)))
        }
    }
}

/// The CNI cache: required (an error when unreadable) with --pod or --cni-cache-dir, else
/// best effort (a node without one just has no pod names).
pub fn load_pods(args: &CaptureArgs) -> Result<Pods> {
    match &args.cni_cache_dir {
        Some(dir) => Pods::load(dir),
        None if !args.pods.is_empty() => Pods::load(Path::new(crate::args::DEFAULT_CNI_CACHE_DIR)),
        None => Ok(Pods::load(Path::new(crate::args::DEFAULT_CNI_CACHE_DIR)).unwrap_or_else(|e| {
            log::info!("no pod names: {e:#}");
            Pods::default()
        })),
    }
}

/// `--pod` → what the kernel filter matches: namespaces, host-side interfaces, addresses.
pub fn select_pods(pods: &Pods, specs: &[String]) -> Result<PodSelection> {
    let mut sel = PodSelection::default();
    for spec in specs {
        let p = pods.select(spec)?;
        if p.netns.is_empty() && p.host_ifs.is_empty() && p.ips.is_empty() {
            bail!("pod {spec} has no network namespace, interface or IP in the CNI cache; is it running on this node?");
        }
        if !p.live {
            eprintln!("tracer: warning: pod {spec} has no live network namespace (stale CNI cache entry); matching its IPs only");
        }
        sel.netns.extend(&p.netns);
        sel.ifaces.extend(p.host_ifs.iter().map(|&(_, ifindex, netns)| tracer_common::PodIfKey { netns, ifindex }));
        sel.addrs.extend(p.ips.iter().map(|ip| match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        }));
    }
    if sel.netns.len() > 256 || sel.ifaces.len() > 256 || sel.addrs.len() > 1024 {
        bail!("too many pods selected: at most 256 namespaces, 256 interfaces and 1024 addresses");
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::iptables::Save;

    /// (hook, priority) of the observers `placement` plans for a legacy IPv4 ruleset.
    fn planned(save: &str, follow: bool, forward: bool) -> Vec<(u32, i32)> {
        let ns = Netns { inode: 7, path: "/proc/self/ns/net".into(), name: "node".into() };
        let snap = Snapshot { legacy_v4: Save::parse(save), ..Snapshot::default() };
        placement(&ns, &snap, true, follow, (forward, forward)).iter().map(|s| (s.hook, s.priority)).collect()
    }

    const INPUT_AND_FORWARD: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 10255 -j DROP\n-A FORWARD -p udp --dport 9999 -j DROP\nCOMMIT\n";

    #[test]
    fn forwarding_hooks_go_unobserved_when_the_route_tells_their_one_chain() {
        // OUTPUT keeps its observer (its chain cannot drop now, but may once rules change).
        assert_eq!(planned(INPUT_AND_FORWARD, false, true), [(1, 0), (3, 0)]);
        assert_eq!(planned(INPUT_AND_FORWARD, false, false), [(1, 0), (2, 0), (3, 0)], "the probe cannot tell forwarded packets");
        assert_eq!(planned(INPUT_AND_FORWARD, true, true), [(1, 0), (2, 0), (3, 0)], "--path reports every hook's hop");
        // Two chains at FORWARD that can drop: only an observer between them tells which.
        let two = format!("{INPUT_AND_FORWARD}*mangle\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p udp --dport 9 -j DROP\nCOMMIT\n");
        assert_eq!(planned(&two, false, true), [(1, 0), (2, -150), (2, 0), (3, 0)]);
    }
}
