//! iptables state of the node, from `iptables-save` of both back ends (`nf_tables` and legacy)
//! and both families: Cilium's and kube-proxy's chains still hooked into the built-in chains
//! (incident 1: a `NetworkManager` restart wiped rules Cilium installs only once), FORWARD
//! letting pod traffic through, and the two back ends not both carrying rules.
use std::{collections::BTreeSet, fmt, net::IpAddr};

use super::{
    node,
    report::{Finding, Outcome, Severity},
};
use crate::netfilter::{
    eval::{self, Verdict},
    iptables::{Save, Table},
    packet::{CtState, PacketInfo},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesVariant {
    Nft,
    Legacy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone)]
pub struct Dump {
    pub backend: IptablesVariant,
    pub family: Family,
    pub ruleset: Save,
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = match self.backend {
            IptablesVariant::Nft => "nft",
            IptablesVariant::Legacy => "legacy",
        };
        let t = match self.family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        write!(f, "{t}-{b}")
    }
}

#[derive(Debug, Default)]
pub struct Netfilter {
    pub dumps: Vec<Dump>,
    /// Dumps that could not be taken, with why.
    pub errors: Vec<String>,
}

/// Takes every dump this node has tools for. Read-only: `*-save` only lists.
pub fn collect() -> Netfilter {
    let mut nf = Netfilter::default();
    let wanted = [
        (IptablesVariant::Nft, Family::V4, "iptables-nft-save", "iptables-save"),
        (IptablesVariant::Nft, Family::V6, "ip6tables-nft-save", "ip6tables-save"),
        (IptablesVariant::Legacy, Family::V4, "iptables-legacy-save", "iptables-save"),
        (IptablesVariant::Legacy, Family::V6, "ip6tables-legacy-save", "ip6tables-save"),
    ];
    for (backend, family, tool, generic) in wanted {
        match node::run(tool, &[]) {
            Ok(Some(text)) => nf.dumps.push(Dump { backend, family, ruleset: Save::parse(&text) }),
            Ok(None) => {
                // Older distributions ship only the generic tool: use it for the back end it is.
                if let Ok(Some(text)) = node::run(generic, &[]) {
                    let is_nft = text.lines().next().is_some_and(|l| l.contains("nf_tables"));
                    if is_nft == (backend == IptablesVariant::Nft) && !nf.dumps.iter().any(|d| d.backend == backend && d.family == family) {
                        nf.dumps.push(Dump { backend, family, ruleset: Save::parse(&text) });
                    }
                }
            }
            Err(e) => nf.errors.push(format!("{e:#}")),
        }
    }
    nf
}

impl Netfilter {
    fn detail(&self) -> String {
        let mut parts: Vec<String> = self.dumps.iter().map(|d| format!("{d}: {} rules", d.ruleset.rule_count())).collect();
        parts.extend(self.errors.iter().map(|e| format!("not read: {e}")));
        parts.join("; ")
    }

    fn unusable(&self) -> Option<Outcome> {
        if self.dumps.iter().any(|d| d.family == Family::V4) {
            return None;
        }
        Some(if self.errors.is_empty() {
            Outcome::Skipped("no iptables-save on this node (install the iptables package)".into())
        } else {
            Outcome::Error(format!("cannot read the IPv4 ruleset: {}", self.errors.join("; ")))
        })
    }
}

/// One of Cilium's chains: (chain, table, built-in hook, also installed for IPv6).
/// From `pkg/datapath/iptables/custom_chain.go` `ciliumChains`, identical in Cilium 1.14–1.16.
const CILIUM_CHAINS: [(&str, &str, &str, bool); 10] = [
    ("CILIUM_INPUT", "filter", "INPUT", true),
    ("CILIUM_OUTPUT", "filter", "OUTPUT", true),
    ("CILIUM_OUTPUT_raw", "raw", "OUTPUT", true),
    ("CILIUM_POST_nat", "nat", "POSTROUTING", true),
    ("CILIUM_OUTPUT_nat", "nat", "OUTPUT", false),
    ("CILIUM_PRE_nat", "nat", "PREROUTING", false),
    ("CILIUM_POST_mangle", "mangle", "POSTROUTING", false),
    ("CILIUM_PRE_mangle", "mangle", "PREROUTING", true),
    ("CILIUM_PRE_raw", "raw", "PREROUTING", true),
    ("CILIUM_FORWARD", "filter", "FORWARD", true),
];

fn has_cilium_chains(rs: &Save) -> bool {
    rs.tables.iter().any(|t| t.chains.iter().any(|c| c.name.starts_with("CILIUM_")))
}

/// Whether a rule of `from` jumps (or goes) to `to`.
fn jumps(t: &Table, from: &str, to: &str) -> bool {
    t.rules_in(from).iter().any(|r| r.target.chain() == Some(to))
}

/// `datapath`: why we believe Cilium runs here (a `cilium_host` device, pinned maps), if so.
pub fn check_cilium(nf: &Netfilter, datapath: Option<&str>) -> Outcome {
    if let Some(o) = nf.unusable() {
        return o;
    }
    let mut unhooked = Vec::new();
    let mut missing = Vec::new();
    let mut empty = Vec::new();
    for d in nf.dumps.iter().filter(|d| has_cilium_chains(&d.ruleset)) {
        for (chain, table, hook, v6) in CILIUM_CHAINS {
            if d.family == Family::V6 && !v6 {
                continue;
            }
            let Some(t) = d.ruleset.table(table).filter(|t| t.chain(chain).is_some()) else {
                missing.push(format!("{d} {table}: chain {chain} is missing (Cilium creates it and jumps to it from {hook})"));
                continue;
            };
            let rules = t.rules_in(chain).len();
            if !jumps(t, hook, chain) {
                let others: BTreeSet<&str> = t.jumps_to(chain).map(|(from, _)| from).collect();
                let also = if others.is_empty() { String::new() } else { format!(" (only from {})", others.into_iter().collect::<Vec<_>>().join(", ")) };
                unhooked.push(format!(
                    "{d} {table}: {chain} ({rules} rules) is not jumped to from {hook}{also}; expected `-A {hook} -m comment --comment \"cilium-feeder: {chain}\" -j {chain}`"
                ));
            }
            if chain == "CILIUM_FORWARD" && rules == 0 {
                empty.push(format!("{d} {table}: CILIUM_FORWARD has no rules (Cilium always installs its forward ACCEPT rules there)"));
            }
        }
    }
    let any_v4 = nf.dumps.iter().any(|d| d.family == Family::V4 && has_cilium_chains(&d.ruleset));
    if !any_v4 && let Some(why) = datapath {
        missing.push(format!("Cilium's datapath is present ({why}) but no IPv4 ruleset (nft or legacy) has any CILIUM_* chain"));
    }
    let action = "Cilium installs these rules once at start and does not re-synchronise them; something (a NetworkManager/firewalld restart, an `iptables-restore` of an old file) removed them. Restart the cilium agent on this node (kubectl -n kube-system delete pod <cilium pod on this node>) to reinstall them, then find what flushed them. Ignore hooks you disabled on purpose (--disable-iptables-feeder-rules, --install-iptables-rules=false).";
    let mut findings = Vec::new();
    if !unhooked.is_empty() {
        findings.push(Finding::new(
            "netfilter.cilium-chain-unhooked",
            Severity::Critical,
            format!("{} Cilium chains exist but the built-in chains no longer jump to them", unhooked.len()),
            unhooked,
            action,
        ));
    }
    if !missing.is_empty() {
        findings.push(Finding::new("netfilter.cilium-chain-missing", Severity::Critical, format!("{} Cilium chains are missing", missing.len()), missing, action));
    }
    if !empty.is_empty() {
        findings.push(Finding::new("netfilter.cilium-chain-empty", Severity::Warning, "CILIUM_FORWARD is empty: its rules were flushed", empty, action));
    }
    let with: Vec<String> = nf.dumps.iter().filter(|d| has_cilium_chains(&d.ruleset)).map(ToString::to_string).collect();
    let detail = if with.is_empty() {
        format!("no CILIUM_* chains; {}", datapath.map_or_else(|| "no Cilium datapath seen either".to_string(), |w| format!("Cilium datapath: {w}")))
    } else {
        format!("Cilium chains in {}", with.join(", "))
    };
    Outcome::checked(detail, findings)
}

/// kube-proxy's entry chains: (table, chain, built-in chains that must jump to it; empty =
/// at least one rule anywhere must).
const KUBE_HOOKS: [(&str, &str, &[&str]); 9] = [
    ("nat", "KUBE-SERVICES", &["PREROUTING", "OUTPUT"]),
    ("nat", "KUBE-POSTROUTING", &["POSTROUTING"]),
    ("nat", "KUBE-NODEPORTS", &[]),
    ("filter", "KUBE-FORWARD", &["FORWARD"]),
    ("filter", "KUBE-SERVICES", &[]),
    ("filter", "KUBE-EXTERNAL-SERVICES", &[]),
    ("filter", "KUBE-NODEPORTS", &[]),
    ("filter", "KUBE-FIREWALL", &[]),
    ("filter", "KUBE-PROXY-FIREWALL", &[]),
];

pub fn check_kube(nf: &Netfilter) -> Outcome {
    if let Some(o) = nf.unusable() {
        return o;
    }
    let mut unhooked = Vec::new();
    let mut present = Vec::new();
    for d in &nf.dumps {
        let mut seen = false;
        for (table, chain, hooks) in KUBE_HOOKS {
            let Some(t) = d.ruleset.table(table).filter(|t| t.chain(chain).is_some()) else { continue };
            seen = true;
            if hooks.is_empty() {
                if t.jumps_to(chain).next().is_none() {
                    unhooked.push(format!("{d} {table}: {chain} ({} rules) is not jumped to from anywhere", t.rules_in(chain).len()));
                }
            } else {
                for hook in hooks.iter().filter(|h| !jumps(t, h, chain)) {
                    unhooked.push(format!("{d} {table}: {chain} is not jumped to from {hook} (kube-proxy hooks it there, e.g. comment \"kubernetes service portals\")"));
                }
            }
        }
        // The canary chain says kube-proxy (iptables mode) runs and owns this back end.
        let canary = d.ruleset.tables.iter().any(|t| t.chain("KUBE-PROXY-CANARY").is_some());
        if canary && d.ruleset.table("nat").is_none_or(|t| t.chain("KUBE-SERVICES").is_none()) {
            unhooked.push(format!("{d} nat: KUBE-PROXY-CANARY exists but KUBE-SERVICES is missing"));
        }
        if seen || canary {
            present.push(d.to_string());
        }
    }
    if present.is_empty() {
        return Outcome::Skipped("no KUBE-* chains (kube-proxy not in iptables mode here, or replaced by Cilium)".into());
    }
    let findings = if unhooked.is_empty() {
        Vec::new()
    } else {
        vec![Finding::new(
            "netfilter.kube-chain-unhooked",
            Severity::Critical,
            format!("{} kube-proxy hooks are missing", unhooked.len()),
            unhooked,
            "kube-proxy re-creates its hooks on its next sync (every 30 s to 1 h depending on --iptables-sync-period); if they stay missing, restart kube-proxy on this node and find what removed them.",
        )]
    };
    Outcome::checked(format!("kube-proxy chains in {}", present.join(", ")), findings)
}

pub fn check_backends(nf: &Netfilter) -> Outcome {
    if let Some(o) = nf.unusable() {
        return o;
    }
    let used = |b: IptablesVariant| nf.dumps.iter().filter(|d| d.backend == b && !d.ruleset.is_pristine()).collect::<Vec<_>>();
    let (nft, legacy) = (used(IptablesVariant::Nft), used(IptablesVariant::Legacy));
    let findings = if !nft.is_empty() && !legacy.is_empty() {
        let evidence = nft
            .iter()
            .chain(&legacy)
            .map(|d| {
                let tables: Vec<&str> = d.ruleset.tables.iter().filter(|t| t.chains.iter().any(|c| !c.rules.is_empty() || c.policy.is_none())).map(|t| t.name.as_str()).collect();
                format!("{d}: {} rules in tables {}", d.ruleset.rule_count(), tables.join(","))
            })
            .collect();
        vec![Finding::new(
            "netfilter.legacy-and-nft",
            Severity::Warning,
            "both iptables back ends (legacy and nf_tables) carry rules",
            evidence,
            "Packets traverse both rule sets; a component writing to one back end (Cilium, kube-proxy, a CNI, the host firewall) cannot see or fix rules in the other. Make every component use the back end the host uses (`iptables --version` shows it) and remove the other's rules.",
        )]
    } else {
        Vec::new()
    };
    Outcome::checked(nf.detail(), findings)
}

/// Synthetic flows of a pod on this node, in both directions.
pub struct PodProbe {
    pub pod_iface: String,
    pub pod_ip: Option<IpAddr>,
}

/// A synthetic flow as the evidence names it.
fn describe(p: &PacketInfo) -> String {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let a = |v: &Option<IpAddr>| v.map_or_else(|| "?".into(), |a| a.to_string());
    format!("new TCP flow {} → {} (in {}, out {})", a(&p.src), a(&p.dst), s(&p.in_iface), s(&p.out_iface))
}

/// An address of TEST-NET-2 (RFC 5737) standing for "somewhere outside the node".
const OUTSIDE: &str = "198.51.100.10";

pub fn check_forward(nf: &Netfilter, probe: Option<&PodProbe>) -> Outcome {
    if let Some(o) = nf.unusable() {
        return o;
    }
    let Some(probe) = probe else {
        return Outcome::Skipped("no pod interfaces or pod IPs on this node".into());
    };
    let outside: IpAddr = OUTSIDE.parse().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let uplink = node::route_dev(outside);
    let to_pod = probe.pod_ip.and_then(node::route_dev).or_else(|| Some(probe.pod_iface.clone()));
    // New TCP flows (conntrack state NEW): pod → outside, and outside → pod.
    let new_tcp = |in_iface, out_iface, src, dst| PacketInfo { in_iface, out_iface, src, dst, proto: Some(6), ct_state: Some(CtState::New), ..PacketInfo::default() };
    let packets = [new_tcp(Some(probe.pod_iface.clone()), uplink.clone(), probe.pod_ip, Some(outside)), new_tcp(uplink, to_pod, Some(outside), probe.pod_ip)];
    let mut dropped = Vec::new();
    let mut conditional = Vec::new();
    let mut walked = 0;
    for d in nf.dumps.iter().filter(|d| d.family == Family::V4) {
        let Some(filter) = d.ruleset.table("filter") else { continue };
        for p in &packets {
            walked += 1;
            match eval::verdict(filter, "FORWARD", p) {
                Verdict::Drop { by, maybe_accepts } if maybe_accepts.is_empty() => {
                    let hint = if filter.chain("CILIUM_FORWARD").is_some() && !jumps(filter, "FORWARD", "CILIUM_FORWARD") {
                        " — CILIUM_FORWARD, which would accept it, is not jumped to"
                    } else {
                        ""
                    };
                    dropped.push(format!("{d} filter/FORWARD: {} ends at `{by}`{hint}", describe(p)));
                }
                Verdict::Drop { by, maybe_accepts } => {
                    conditional.push(format!("{d} filter/FORWARD: {} is accepted only if `{}` matches, else `{by}`", describe(p), maybe_accepts.join("` or `")));
                }
                Verdict::Accept(_) | Verdict::Unknown(_) => {}
            }
        }
    }
    let mut findings = Vec::new();
    let action = "New pod connections die in FORWARD. Restore the accept path: restart the cilium agent (reinstalls CILIUM_FORWARD and its feeder rule) or kube-proxy (KUBE-FORWARD); if a host firewall or Docker set `FORWARD DROP`, allow the pod interfaces (`-i lxc+`/`-o lxc+`) or the pod CIDR there.";
    if !dropped.is_empty() {
        findings.push(Finding::new("netfilter.forward-drops-pods", Severity::Critical, "new flows to/from pods are dropped in FORWARD", dropped, action));
    }
    if !conditional.is_empty() {
        findings.push(Finding::new(
            "netfilter.forward-conditional",
            Severity::Warning,
            "FORWARD drops pod flows unless narrow rules match",
            conditional,
            "Check that the conditional ACCEPT rules cover the pods' traffic (ports, marks, sets); otherwise restore a general accept path for the pod interfaces or CIDR.",
        ));
    }
    Outcome::checked(format!("{walked} synthetic pod flows walked through FORWARD (pod interface {})", probe.pod_iface), findings)
}
