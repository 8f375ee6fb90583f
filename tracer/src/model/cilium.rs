//! The `cilium` section of a drop by a Cilium program (`cil_*`): Cilium's own drop reason and
//! source line, the endpoint, the identities and the policy entry that decided. Every field
//! that could not be known is absent (field names are a contract).
use serde::Serialize;

/// One key of Cilium's metrics map that moved in a drop's window.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CiliumReason {
    pub reason: String,
    pub code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// Absent when the release records none (1.14, 1.15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u16>,
    /// Packets this key counted in the window (candidates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CiliumEndpoint {
    pub id: u16,
    pub ifname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Identities {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<u32>,
    /// Only for Cilium's reserved identities (pod labels live in the agent, not in maps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_labels: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_labels: Option<String>,
}

/// A policy map key or entry: identity 0 is any identity, protocol/dport 0 any.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyEntry {
    pub identity: u32,
    pub protocol: u8,
    pub dport: u16,
    pub deny: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The endpoint's pinned policy map.
    pub map: String,
    /// The lookup the datapath makes: the remote identity, direction, protocol and port.
    pub direction: &'static str,
    pub identity: u32,
    pub protocol: u8,
    pub dport: u16,
    /// "deny entry" (an entry denies it), "no allow entry" (nothing allows it), or "allow
    /// entry" (an entry allows it now: the policy changed after the drop).
    pub decision: &'static str,
    /// The entry that decided (absent for "no allow entry").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<PolicyEntry>,
    /// Entries in the map for this direction.
    pub entries: usize,
}

/// The `cilium` object of a drop event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CiliumInfo {
    /// The reason that moved alone in the window (absent when ambiguous or none moved).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub drop: Option<CiliumReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<CiliumEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInfo>,
    /// The Cilium releases whose map layouts are pinned ("1.14-1.16", "1.17", "1.18").
    pub version: &'static str,
    /// "metrics" (the only drop key that moved in the window, by exactly the drops this
    /// capture saw there), "window" (the only one that moved, by more: drops this capture did
    /// not see), "ambiguous" (several moved: see `candidates`), "none" (none moved).
    pub attribution: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CiliumReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}
