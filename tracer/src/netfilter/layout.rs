//! What placing observers needs, read without listing a single rule: the base chains of
//! `nf_tables` (over netlink, kernel/nfnl.rs: names, hooks and priorities only, no process;
//! `nft -j list chains` where netlink fails; `nft -j list ruleset` takes 1.5 s at 20,000
//! rules) and the iptables-legacy tables the kernel lists for the namespace. The rules
//! themselves are read later, on a worker, while the capture already runs (enrich/window.rs).
use std::{fmt::Write as _, path::Path, process::Stdio};

use super::{
    CHAINS, HOOKS, NFPROTO_IPV4, NFPROTO_IPV6,
    iptables::Save,
    legacy_priority,
    nft::{NftChain, Ruleset},
    snapshot::Snapshot,
};
use crate::{kernel::nfnl::BaseChain, netns};

/// `NFPROTO_INET` (uapi `netfilter.h`).
const NFPROTO_INET: u32 = 1;

/// A snapshot with the base chains and legacy tables of the namespace and no rules: exactly
/// what [`super::entries`] reads to name the hook points (their backends stay unknown until
/// the rules are read, which placement does not need), and the number of `nf_tables` chains
/// (regular ones too: a measure of the ruleset's size, None when `nft` listed them). None when
/// `nft` cannot list the chains (not installed, or it failed): the caller then reads the whole
/// snapshot.
pub fn read(ns_path: &Path) -> Option<(Snapshot, Option<usize>)> {
    let (nft, chains) = match crate::kernel::nfnl::Nfnl::open_in(ns_path).and_then(|mut n| Ok(n.base_chains()?)) {
        Ok((base, all)) => (Ruleset { chains: base.into_iter().filter_map(base_chain).collect() }, Some(all)),
        Err(e) => {
            log::debug!("nf_tables chains of {} over netlink: {e:#}; asking nft", ns_path.display());
            (listed_chains(ns_path)?, None)
        }
    };
    let (v4, v6) = netns::run_in(ns_path, || (legacy_tables("ip_tables_names"), legacy_tables("ip6_tables_names"))).ok()?;
    Some((Snapshot { nft, legacy_v4: builtin_chains(&v4), legacy_v6: builtin_chains(&v6), ..Snapshot::default() }, chains))
}

/// A base chain as `nft -j` names it; None for families without observers (arp, bridge,
/// netdev: their hook numbers mean other hooks).
fn base_chain(c: BaseChain) -> Option<NftChain> {
    let family = match u32::from(c.family) {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        _ => return None,
    };
    Some(NftChain {
        family: family.into(),
        table: c.table,
        name: c.name,
        hook: Some(HOOKS.get(c.hook as usize)?.to_string()),
        priority: Some(c.priority),
        policy: None,
        // Placement from the layout does not read chain types (netfilter::capable does, with
        // the rules).
        kind: None,
        rules: Vec::new(),
    })
}

/// The chains as `nft -j list chains` lists them.
fn listed_chains(ns_path: &Path) -> Option<Ruleset> {
    let mut cmd = netns::command_in(ns_path, "nft").ok()?;
    let out = cmd.args(["-j", "list", "chains"]).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(Ruleset::parse(&String::from_utf8_lossy(&out.stdout), ""))
}

/// Names of the legacy tables registered in the calling thread's namespace.
fn legacy_tables(file: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default().lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// The built-in chains of each legacy table, as `iptables-legacy-save` lists them: a legacy
/// table registers exactly the hooks it has a priority at (`legacy_priority`).
fn builtin_chains(tables: &[String]) -> Save {
    let mut text = String::new();
    for t in tables {
        let _ = writeln!(text, "*{t}");
        for (hook, chain) in (0u32..).zip(CHAINS) {
            if legacy_priority(t, hook).is_some() {
                let _ = writeln!(text, ":{chain} ACCEPT [0:0]");
            }
        }
        text.push_str("COMMIT\n");
    }
    Save::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::{Backend, entries};

    /// The layout names the same hook points as the full listing of the same ruleset.
    #[test]
    fn layout_places_like_the_full_snapshot() {
        let chains = r#"{"nftables":[{"chain":{"family":"ip","table":"filter","name":"FORWARD","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"accept"}},
            {"chain":{"family":"ip","table":"filter","name":"KUBE-SERVICES","handle":2}},
            {"chain":{"family":"inet","table":"t","name":"in","handle":1,"type":"filter","hook":"input","prio":-5,"policy":"accept"}}]}"#;
        let layout = Snapshot {
            nft: Ruleset::parse(chains, ""),
            legacy_v4: builtin_chains(&["raw".into(), "filter".into()]),
            ..Snapshot::default()
        };
        let full = Snapshot {
            nft: Ruleset::parse(chains, ""),
            legacy_v4: Save::parse("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"),
            ..Snapshot::default()
        };
        let points = |s: &Snapshot| {
            let mut v: Vec<(u32, u32, i32)> = entries(s).iter().map(|e| (e.pf, e.hook, e.priority)).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(points(&layout), points(&full));
        assert!(entries(&layout).iter().any(|e| e.backend == Backend::IptablesLegacy && e.table == "raw" && e.chain == "OUTPUT"));
        assert_eq!(points(&layout).len(), 1 + 2 + 2 + 3, "forward, inet input ×2, raw ×2, filter ×3");
        // Placed from the layout, conntrack's entries are assumed (its use is in the rules).
        assert_eq!(super::super::with_conntrack(entries(&layout)).len(), 1 + 2 + 2 + 3 + 4, "and conntrack ×4");
    }
}
