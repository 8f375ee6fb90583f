//! Which hook entries can drop a packet, and whether conntrack runs in a namespace: what
//! decides where observers must go. Both answers err towards "yes" (an observer too many costs
//! time; one too few would cost exactness): a target or statement we do not know counts as
//! one that may drop.
use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    Backend, Entry,
    eval::{Chains, Rule as _, Target},
    iptables::Save,
    snapshot::Snapshot,
};

/// iptables targets that never drop or steal a packet (they accept, continue, or rewrite).
const SAFE_TARGETS: &[&str] = &[
    "", "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE", "DSCP", "TOS", "TTL", "HL", "TCPMSS", "CLASSIFY",
    "CHECKSUM", "SECMARK", "CONNSECMARK", "AUDIT", "SNAT", "DNAT", "MASQUERADE", "REDIRECT", "NETMAP", "RETURN",
];

/// Words in an iptables rule that make conntrack register its hooks in the namespace
/// (`nf_ct_netns_get` from the match or target), or that come with NAT (which needs it).
const CONNTRACK_WORDS: &[&str] = &[
    "conntrack", "-m state", "--ctstate", "connmark", "CONNMARK", "connlabel", "connbytes", "connlimit", "-m helper", "-j CT", "NOTRACK",
    "SNAT", "DNAT", "MASQUERADE", "REDIRECT", "NETMAP", "SYNPROXY", "CONNSECMARK", "-m ipvs", "-m cluster", "-m nat",
];

/// nft statement and expression keys that use conntrack or NAT.
const NFT_CONNTRACK_KEYS: &[&str] = &["ct", "ct helper", "ct timeout", "ct expectation", "snat", "dnat", "masquerade", "redirect", "notrack", "synproxy", "flow"];

/// nft statements that may end a packet other than by `drop`/`reject` verdicts.
const NFT_DROPPING_KEYS: &[&str] = &["drop", "reject", "queue", "synproxy", "vmap", "verdict map"];

/// Chains walked at most from one base chain (bounds huge rulesets).
const MAX_CHAINS: usize = 10_000;

/// The entries that can drop.
pub fn capable(s: &Snapshot, entries: &[Entry]) -> Vec<Entry> {
    entries.iter().filter(|e| can_drop(s, e)).cloned().collect()
}

/// How many (chain, hook) places these entries are: an `inet` chain is one entry per family
/// but one place; conntrack is two (prerouting, output).
pub fn chains(entries: &[Entry]) -> usize {
    entries.iter().map(chain_of).collect::<BTreeSet<_>>().len()
}

/// `chains(..) == 1` without collecting anything: the attributor asks it for every drop it
/// places (a flood's every event).
pub fn one_chain<'a>(mut entries: impl Iterator<Item = &'a Entry>) -> bool {
    let Some(first) = entries.next().map(chain_of) else { return false };
    entries.all(|e| chain_of(e) == first)
}

/// What tells an entry's chain from another's.
fn chain_of(e: &Entry) -> (&'static str, &str, &str, &str, u32) {
    (e.backend.name(), e.family.as_str(), e.table.as_str(), e.chain.as_str(), e.hook)
}

/// Whether conntrack's hooks are registered for `pf` in the namespace this snapshot is of: a
/// NAT table, or a rule that uses conntrack state, marks, labels, helpers or NAT.
pub fn uses_conntrack(s: &Snapshot, pf: u32) -> bool {
    let saves = [s.iptables_nft(pf), s.iptables_legacy(pf)];
    let iptables = saves.iter().any(|save| {
        save.tables.iter().any(|t| (t.name == "nat" && !t.chains.is_empty()) || t.chains.iter().flat_map(|c| &c.rules).any(|r| CONNTRACK_WORDS.iter().any(|w| r.text.contains(w))))
    });
    let family = super::family_of_pf(pf);
    iptables
        || s.nft.chains.iter().filter(|c| c.family == family || c.family == "inet").any(|c| {
            c.kind.as_deref() == Some("nat") || c.rules.iter().any(|r| r.expr.iter().any(|e| mentions(e, NFT_CONNTRACK_KEYS, 0)))
        })
}

/// Whether the hook entry can drop (or steal) a packet: conntrack always can; a table's base
/// chain can when its policy is not accept, or a rule it reaches drops, rejects, or has a
/// target or statement we do not know. An entry whose table is not in the snapshot can.
pub fn can_drop(s: &Snapshot, e: &Entry) -> bool {
    match e.backend {
        Backend::Conntrack => true,
        Backend::IptablesNft | Backend::IptablesLegacy => {
            let save: &Save = if e.backend == Backend::IptablesNft { s.iptables_nft(e.pf) } else { s.iptables_legacy(e.pf) };
            save.table(&e.table).is_none_or(|t| reaches_drop(t, &e.chain, |r| iptables_may_drop(&r.target())))
        }
        Backend::Nftables => reaches_drop(&s.nft.table(&e.family, &e.table), &e.chain, |r| nft_may_drop(&r.target(), &r.expr)),
    }
}

fn iptables_may_drop(t: &Target) -> bool {
    match t {
        Target::Drop | Target::Reject => true,
        Target::Continue(name) => !SAFE_TARGETS.contains(&name.as_str()),
        Target::Accept | Target::Return | Target::Jump(_) | Target::Goto(_) => false,
    }
}

fn nft_may_drop(t: &Target, expr: &[Value]) -> bool {
    matches!(t, Target::Drop | Target::Reject) || expr.iter().any(|e| mentions(e, NFT_DROPPING_KEYS, 0))
}

/// Walks every chain `base` reaches by jumps and gotos; true as soon as the base policy is not
/// accept, a chain is missing, or `drops` says a rule may drop.
fn reaches_drop<C: Chains>(chains: &C, base: &str, drops: impl Fn(&C::Rule) -> bool) -> bool {
    if chains.policy(base).is_some_and(|p| !p.eq_ignore_ascii_case("accept")) {
        return true;
    }
    let mut todo = vec![base.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(chain) = todo.pop() {
        if !seen.insert(chain.clone()) {
            continue;
        }
        if seen.len() > MAX_CHAINS {
            return true;
        }
        let Some(rules) = chains.rules(&chain) else { return true };
        for r in rules {
            if drops(r) {
                return true;
            }
            if let Some(next) = r.target().chain() {
                todo.push(next.to_string());
            }
        }
    }
    false
}

/// Whether `v` has one of `keys` as an object key at any depth (bounded).
fn mentions(v: &Value, keys: &[&str], depth: usize) -> bool {
    if depth > 32 {
        return true;
    }
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| keys.contains(&k.as_str()) || mentions(v, keys, depth + 1)),
        Value::Array(a) => a.iter().any(|v| mentions(v, keys, depth + 1)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::{NFPROTO_IPV4, entries, nft::Ruleset};

    fn legacy(save: &str) -> Snapshot {
        Snapshot { legacy_v4: Save::parse(save), ..Snapshot::default() }
    }

    fn capable_chains(s: &Snapshot) -> Vec<String> {
        capable(s, &entries(s)).iter().map(|e| format!("{} {} {}", e.backend.name(), e.table, e.chain)).collect()
    }

    #[test]
    fn one_chain_is_chains_equal_to_one() {
        // Every prefix of the capable entries of a ruleset where INPUT (its policy) and FORWARD
        // (a rule, with conntrack for its state match) can drop: none, one place, then more.
        let s = legacy("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m state --state INVALID -j DROP\nCOMMIT\n");
        let all = capable(&s, &entries(&s));
        assert!(chains(&all) >= 2, "{all:?}");
        for n in 0..=all.len() {
            assert_eq!(one_chain(all[..n].iter()), chains(&all[..n]) == 1, "{n} of {all:?}");
        }
        let forward: Vec<&Entry> = all.iter().filter(|e| e.chain == "FORWARD").collect();
        assert!(one_chain(forward.iter().copied()));
    }

    #[test]
    fn plain_filter_rules_need_no_conntrack_and_only_dropping_chains_count() {
        let s = legacy("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:LOGGED - [0:0]\n-A INPUT -j LOGGED\n-A LOGGED -j LOG\n-A FORWARD -p udp --dport 9 -j DROP\nCOMMIT\n");
        assert!(!uses_conntrack(&s, NFPROTO_IPV4));
        assert_eq!(capable_chains(&s), ["iptables-legacy filter FORWARD"]);
    }

    #[test]
    fn policies_user_chains_unknown_targets_and_missing_chains_can_drop() {
        let s = legacy(
            "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:DEEP - [0:0]\n:DEEPER - [0:0]\n-A FORWARD -j DEEP\n-A DEEP -g DEEPER\n-A DEEPER -j REJECT\n-A OUTPUT -j NFQUEUE --queue-num 1\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j GONE\nCOMMIT\n",
        );
        let mut got = capable_chains(&s);
        got.sort();
        assert_eq!(got, ["iptables-legacy filter FORWARD", "iptables-legacy filter INPUT", "iptables-legacy filter OUTPUT", "iptables-legacy mangle PREROUTING"]);
    }

    #[test]
    fn nat_and_state_matches_run_conntrack_which_can_drop() {
        let nat = legacy("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE\nCOMMIT\n");
        assert!(uses_conntrack(&nat, NFPROTO_IPV4));
        // MASQUERADE never drops; conntrack (prerouting and output) can.
        assert_eq!(capable_chains(&nat), ["conntrack conntrack ", "conntrack conntrack "]);
        assert_eq!(chains(&capable(&nat, &entries(&nat))), 2, "conntrack at two hooks");
        let state = legacy("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n");
        assert!(uses_conntrack(&state, NFPROTO_IPV4));
        assert_eq!(chains(&capable(&state, &entries(&state))), 3);
    }

    #[test]
    fn nft_chains_verdicts_statements_and_nat() {
        let json = r#"{"nftables":[
            {"table":{"family":"inet","name":"t"}},
            {"chain":{"family":"inet","table":"t","name":"in","type":"filter","hook":"input","prio":0,"policy":"accept"}},
            {"chain":{"family":"inet","table":"t","name":"fwd","type":"filter","hook":"forward","prio":0,"policy":"accept"}},
            {"chain":{"family":"inet","table":"t","name":"sub"}},
            {"chain":{"family":"ip","table":"n","name":"post","type":"nat","hook":"postrouting","prio":100,"policy":"accept"}},
            {"rule":{"family":"inet","table":"t","chain":"in","handle":2,"expr":[{"counter":{"packets":0,"bytes":0}}]}},
            {"rule":{"family":"inet","table":"t","chain":"fwd","handle":3,"expr":[{"jump":{"target":"sub"}}]}},
            {"rule":{"family":"inet","table":"t","chain":"sub","handle":4,"expr":[{"queue":{"num":1}}]}},
            {"rule":{"family":"ip","table":"n","chain":"post","handle":5,"expr":[{"masquerade":null}]}}
        ]}"#;
        let s = Snapshot { nft: Ruleset::parse(json, ""), ..Snapshot::default() };
        assert!(uses_conntrack(&s, NFPROTO_IPV4), "a nat chain");
        let mut got = capable_chains(&s);
        got.sort();
        got.dedup();
        // `fwd` reaches a queue statement; `in` only counts; the nat chain only masquerades.
        assert_eq!(got, ["conntrack conntrack ", "nftables t fwd"]);
    }
}
