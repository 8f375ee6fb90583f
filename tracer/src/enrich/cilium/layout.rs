//! Byte layouts of the pinned Cilium maps the drop enrichment reads, per release (written from
//! Cilium's headers and Go map definitions; our decoder, their facts). The endpoint map and
//! the ipcache are decoded by `endpoints.rs` (the doctor reads those too).
//!
//! - `cilium_metrics` (all of 1.14–1.18, per-CPU hash, `bpf/lib/common.h`): key
//!   `struct metrics_key` 8 B: `reason` u8 at 0, `dir:2` in byte 1, `line` u16 at 2,
//!   `file` u8 at 4, 3 reserved; value `struct metrics_value` 16 B: `count` u64, `bytes` u64.
//! - per-endpoint policy map `cilium_policy_NNNNN` (endpoint id, 5 digits):
//!   - 1.14–1.15: hash, key 8 B `{sec_label u32, dport be16, protocol u8, egress u8}`
//!     (pkg/maps/policymap `PolicyKey`), value 24 B `struct policy_entry`: `proxy_port` be16,
//!     flags u8 (bit 0 `deny`, 1 `wildcard_protocol`, 2 `wildcard_dport`), `auth_type` u8,
//!     pads, `packets` u64 at 8, `bytes` u64 at 16.
//!   - 1.16–1.17: LPM trie, key 12 B `{prefixlen u32, sec_label u32, egress:1 u8, protocol
//!     u8, dport be16}`, value 24 B: flags u8 at 2 (bit 0 `deny`, bits 3–7
//!     `lpm_prefix_length` of protocol+dport), `packets`/`bytes` as above.
//!   - 1.18+: `cilium_policy_v2_NNNNN`, the same LPM key, value 12 B (the counters moved to
//!     `cilium_policystats`; `cookie` u32 at 8).
//! - ipcache: `cilium_ipcache` (value 12 B) up to 1.17, `cilium_ipcache_v2` (24 B) from 1.18.
//!
//! Integers in keys and values are host order except ports and addresses (network order).
use aya::maps::MapType;

pub const METRICS_PIN: &str = "cilium_metrics";
pub const METRICS_KEY_SIZE: u32 = 8;
pub const METRICS_VALUE_SIZE: u32 = 16;

/// Bits of protocol + dport in an LPM policy key after identity and direction.
pub const LPM_L4_BITS: u32 = 24;
/// Full prefix of the LPM policy key data (identity 32 + direction 8 + protocol 8 + port 16).
pub const POLICY_FULL_PREFIX: u32 = 64;

/// A Cilium release range whose pinned maps we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 1.14–1.15: hash policy maps.
    V1_14,
    /// 1.16–1.17: LPM policy maps with counters.
    V1_16,
    /// 1.18+: `cilium_policy_v2_*`, `cilium_ipcache_v2`.
    V1_18,
}

impl Generation {
    pub fn releases(self) -> &'static str {
        match self {
            Self::V1_14 => "1.14-1.15",
            Self::V1_16 => "1.16-1.17",
            Self::V1_18 => "1.18+",
        }
    }

    pub fn policy_pin(self, endpoint: u16) -> String {
        match self {
            Self::V1_18 => format!("cilium_policy_v2_{endpoint:05}"),
            _ => format!("cilium_policy_{endpoint:05}"),
        }
    }

    /// The file-id table of this release range (1.18 renumbered the headers).
    pub fn new_file_ids(self) -> bool {
        self == Self::V1_18
    }

    pub fn policy_is_lpm(self) -> bool {
        self != Self::V1_14
    }
}

/// The generation a pinned policy map's name and shape identify; None: unknown layout.
pub fn policy_generation(name: &str, ty: Option<MapType>, key: u32, value: u32) -> Option<Generation> {
    let v2 = name.starts_with("cilium_policy_v2_");
    match (v2, ty?, key, value) {
        (false, MapType::Hash, 8, 24) => Some(Generation::V1_14),
        (false, MapType::LpmTrie, 12, 24) => Some(Generation::V1_16),
        (true, MapType::LpmTrie, 12, 12) => Some(Generation::V1_18),
        _ => None,
    }
}

/// The endpoint id of a per-endpoint policy map's pin name (`cilium_policy_00042`).
pub fn policy_endpoint(name: &str) -> Option<u16> {
    let digits = name.strip_prefix("cilium_policy_v2_").or_else(|| name.strip_prefix("cilium_policy_"))?;
    (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// One key of `cilium_metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricsKey {
    pub reason: u8,
    pub dir: u8,
    pub line: u16,
    pub file: u8,
}

impl MetricsKey {
    pub fn decode(k: &[u8; 8]) -> Self {
        Self { reason: k[0], dir: k[1] & 0b11, line: u16::from_ne_bytes([k[2], k[3]]), file: k[4] }
    }

    pub fn is_drop(&self) -> bool {
        self.reason >= super::tables::DROP_MIN
    }
}

/// A policy map key (identity 0 = any; protocol 0 with dport 0 = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyKey {
    pub identity: u32,
    pub egress: bool,
    pub protocol: u8,
    pub dport: u16,
}

impl PolicyKey {
    /// The 8-byte hash key of 1.14–1.15.
    pub fn hash_key(&self) -> [u8; 8] {
        let mut k = [0u8; 8];
        k[..4].copy_from_slice(&self.identity.to_ne_bytes());
        k[4..6].copy_from_slice(&self.dport.to_be_bytes());
        k[6] = self.protocol;
        k[7] = u8::from(self.egress);
        k
    }

    /// The LPM key data (after the prefix length) of 1.16+.
    pub fn lpm_data(&self) -> [u8; 8] {
        let mut k = [0u8; 8];
        k[..4].copy_from_slice(&self.identity.to_ne_bytes());
        k[4] = u8::from(self.egress);
        k[5] = self.protocol;
        k[6..8].copy_from_slice(&self.dport.to_be_bytes());
        k
    }

    pub fn from_hash_key(k: &[u8; 8]) -> Self {
        Self { identity: u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), dport: u16::from_be_bytes([k[4], k[5]]), protocol: k[6], egress: k[7] & 1 != 0 }
    }

    /// From LPM key data and the key's prefix length (bits after the 4-byte prefix field).
    pub fn from_lpm(prefix_len: u32, k: &[u8; 8]) -> Self {
        let mut key = Self { identity: u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), egress: k[4] & 1 != 0, protocol: k[5], dport: u16::from_be_bytes([k[6], k[7]]) };
        key.wildcard(prefix_len.saturating_sub(40));
        key
    }

    /// Keeps `l4_bits` of protocol + dport (the LPM prefix after identity and direction).
    pub fn wildcard(&mut self, l4_bits: u32) {
        if l4_bits < 8 {
            self.protocol = 0;
        }
        if l4_bits <= 8 {
            self.dport = 0;
        } else if l4_bits < LPM_L4_BITS {
            self.dport &= 0xffffu16 << (LPM_L4_BITS - l4_bits);
        }
    }
}

/// A policy map value, as far as the verdict goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyValue {
    pub deny: bool,
    /// LPM layouts: protocol+dport bits the entry matches (0–24).
    pub l4_prefix: Option<u32>,
    pub packets: Option<u64>,
}

impl PolicyValue {
    pub fn decode(g: Generation, v: &[u8]) -> Self {
        let flags = v[2];
        let packets = (v.len() >= 16).then(|| u64::from_ne_bytes(v[8..16].try_into().unwrap_or([0; 8])));
        Self { deny: flags & 1 != 0, l4_prefix: g.policy_is_lpm().then_some(u32::from(flags >> 3)), packets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_from_name_and_shape() {
        assert_eq!(policy_generation("cilium_policy_00042", Some(MapType::Hash), 8, 24), Some(Generation::V1_14));
        assert_eq!(policy_generation("cilium_policy_00042", Some(MapType::LpmTrie), 12, 24), Some(Generation::V1_16));
        assert_eq!(policy_generation("cilium_policy_v2_00042", Some(MapType::LpmTrie), 12, 12), Some(Generation::V1_18));
        assert_eq!(policy_generation("cilium_policy_00042", Some(MapType::LpmTrie), 12, 12), None);
        assert_eq!(policy_generation("cilium_policy_00042", Some(MapType::Hash), 8, 32), None);
        assert_eq!(policy_endpoint("cilium_policy_00042"), Some(42));
        assert_eq!(policy_endpoint("cilium_policy_v2_01234"), Some(1234));
        assert_eq!(policy_endpoint("cilium_policy_a"), None);
    }

    #[test]
    fn keys_round_trip() {
        let k = PolicyKey { identity: 3000, egress: true, protocol: 6, dport: 8080 };
        assert_eq!(PolicyKey::from_hash_key(&k.hash_key()), k);
        assert_eq!(PolicyKey::from_lpm(64, &k.lpm_data()), k);
        let proto_only = PolicyKey::from_lpm(48, &k.lpm_data());
        assert_eq!((proto_only.protocol, proto_only.dport), (6, 0));
        let any = PolicyKey::from_lpm(40, &k.lpm_data());
        assert_eq!((any.protocol, any.dport), (0, 0));
        let m = MetricsKey::decode(&[133, 2, 0x84, 0x05, 2, 0, 0, 0]);
        assert_eq!((m.reason, m.dir, m.line, m.file), (133, 2, 1412, 2));
        assert!(m.is_drop());
    }
}
