//! The netfilter rulesets of a namespace (iptables-nft, iptables-legacy, native nftables) and
//! the hook entries they register, which is where the observers go and what a drop between
//! two observers is attributed to. Read-only: we list rulesets, never change them.
pub mod capable;
pub mod counters;
pub mod eval;
pub mod iptables;
pub mod layout;
pub mod nft;
pub mod packet;
pub mod snapshot;

/// Netfilter hooks in `nf_inet_hooks` order (the numbers the kernel uses).
pub const HOOKS: [&str; 5] = ["prerouting", "input", "forward", "output", "postrouting"];
/// The built-in iptables chain of each hook.
pub const CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
pub const NFPROTO_IPV4: u32 = 2;
pub const NFPROTO_IPV6: u32 = 10;
/// `NF_IP_PRI_CONNTRACK` (uapi `netfilter_ipv4.h`); ipv6 uses the same value.
const PRI_CONNTRACK: i32 = -200;

pub fn hook_num(name: &str) -> Option<u32> {
    HOOKS.iter().position(|h| *h == name).and_then(|i| u32::try_from(i).ok())
}

/// FORWARD or POSTROUTING: the hooks a forwarded packet dies at (`nf_slot::FORWARDED_*`).
pub fn forwarding_hook(hook: u32) -> bool {
    hook == 2 || hook == 4
}

pub fn chain_hook(chain: &str) -> Option<u32> {
    CHAINS.iter().position(|h| *h == chain).and_then(|i| u32::try_from(i).ok())
}

/// Priorities iptables-legacy tables register with (uapi `enum nf_ip_hook_priorities`).
pub fn legacy_priority(table: &str, hook: u32) -> Option<i32> {
    Some(match (table, hook) {
        ("raw", 0 | 3) => -300,
        ("mangle", _) => -150,
        ("nat", 0 | 3) => -100,
        ("nat", 1 | 4) => 100,
        ("filter", 1..=3) => 0,
        ("security", 1..=3) => 50,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    IptablesNft,
    IptablesLegacy,
    Nftables,
    Conntrack,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Self::IptablesNft => "iptables-nft",
            Self::IptablesLegacy => "iptables-legacy",
            Self::Nftables => "nftables",
            Self::Conntrack => "conntrack",
        }
    }
}

/// A hook function registered at (pf, hook, priority) that can drop packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pf: u32,
    pub hook: u32,
    pub priority: i32,
    pub backend: Backend,
    /// nft family (`ip`, `ip6`, `inet`) or `ip`/`ip6` for iptables.
    pub family: String,
    pub table: String,
    /// The base chain.
    pub chain: String,
}

pub fn family_of_pf(pf: u32) -> &'static str {
    if pf == NFPROTO_IPV6 { "ip6" } else { "ip" }
}

/// Every entry a snapshot shows, plus conntrack where the rules make it run.
pub fn entries(s: &snapshot::Snapshot) -> Vec<Entry> {
    let mut out = Vec::new();
    for c in s.nft.base_chains() {
        let (Some(hook), Some(priority)) = (c.hook.as_deref().and_then(hook_num), c.priority) else { continue };
        let pfs: &[u32] = match c.family.as_str() {
            "ip" => &[NFPROTO_IPV4],
            "ip6" => &[NFPROTO_IPV6],
            "inet" => &[NFPROTO_IPV4, NFPROTO_IPV6],
            _ => continue,
        };
        for &pf in pfs {
            let iptables = s.iptables_nft(pf).chain(&c.table, &c.name).is_some() && c.family != "inet";
            out.push(Entry {
                pf,
                hook,
                priority,
                backend: if iptables { Backend::IptablesNft } else { Backend::Nftables },
                family: c.family.clone(),
                table: c.table.clone(),
                chain: c.name.clone(),
            });
        }
    }
    for pf in [NFPROTO_IPV4, NFPROTO_IPV6] {
        for t in &s.iptables_legacy(pf).tables {
            for chain in &t.chains {
                let Some(hook) = chain_hook(&chain.name) else { continue };
                let Some(priority) = legacy_priority(&t.name, hook) else { continue };
                out.push(Entry {
                    pf,
                    hook,
                    priority,
                    backend: Backend::IptablesLegacy,
                    family: family_of_pf(pf).into(),
                    table: t.name.clone(),
                    chain: chain.name.clone(),
                });
            }
        }
        // Conntrack registers its hooks in a namespace only once something there uses it
        // (NAT, state or mark matches); an empty pod namespace, or one with plain filter
        // rules, has none and needs no observers before it.
        if capable::uses_conntrack(s, pf) {
            out.extend(conntrack_entries(pf));
        }
    }
    out
}

/// `entries` plus conntrack's, for both families, where any table exists: where the rules
/// are not read yet, conntrack may run.
pub fn with_conntrack(mut entries: Vec<Entry>) -> Vec<Entry> {
    if !entries.is_empty() {
        for pf in [NFPROTO_IPV4, NFPROTO_IPV6] {
            if !entries.iter().any(|e| e.pf == pf && e.backend == Backend::Conntrack) {
                entries.extend(conntrack_entries(pf));
            }
        }
    }
    entries
}

/// Conntrack's hook entries of one family (prerouting and output).
fn conntrack_entries(pf: u32) -> [Entry; 2] {
    [0, 3].map(|hook| Entry {
        pf,
        hook,
        priority: PRI_CONNTRACK,
        backend: Backend::Conntrack,
        family: family_of_pf(pf).into(),
        table: "conntrack".into(),
        chain: String::new(),
    })
}
