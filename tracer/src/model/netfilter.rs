//! The `netfilter` section of a drop event: which table, chain and rule dropped it.
use serde::Serialize;

/// The `netfilter` object of a drop event (field names are a contract).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetfilterInfo {
    pub family: String,
    pub table: String,
    /// The chain holding the rule (a user chain when reached by a jump).
    pub chain: String,
    pub hook: String,
    pub priority: i32,
    pub verdict: String,
    /// The rule as the user's tool prints it (`iptables-save` line, `nft list` line with
    /// handle, or `policy DROP`); absent when it cannot be singled out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// iptables-nft, iptables-legacy, nftables or conntrack.
    pub backend: String,
    /// Chains walked from the base chain to `chain`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// How the rule was singled out: "exact" (the packet matches it and nothing before it),
    /// "counters" (evaluation plus the rule counters of the window), "window" (the only rule
    /// whose counter moved), "ambiguous" (several could have; see `candidates`), "hook" (only
    /// the hook and priority are known).
    pub attribution: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// What to do when the rule could not be singled out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}
