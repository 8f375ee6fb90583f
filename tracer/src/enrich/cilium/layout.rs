//! Byte layouts of the pinned Cilium maps the drop enrichment reads, per release (our decoder,
//! their facts). The endpoint map and the ipcache are decoded by `endpoints.rs` (the doctor
//! reads those too). Checked against cilium/cilium at the release-prep commit of every patch
//! release v1.14.0–v1.18.3 (`bpf/lib/common.h`, `bpf/lib/maps.h`, 1.18's `bpf/lib/policy.h`,
//! `pkg/maps/policymap/policymap.go`; commits listed in `tables.rs`):
//!
//! - `cilium_metrics` (per-CPU hash, key `struct metrics_key` 8 B, value `struct
//!   metrics_value` 16 B: `count` u64, `bytes` u64; same in every release): `reason` u8 at 0,
//!   `dir:2` in byte 1; from 1.16.0 `line` u16 at 2 and `file` u8 at 4. In 1.14 and 1.15
//!   bytes 2–7 are `reserved[3]`, zero: no line or file is reported for them.
//! - per-endpoint policy map, an LPM trie in every release, key `struct policy_key` 12 B
//!   `{prefixlen u32, sec_label u32, egress:1 u8, protocol u8, dport be16}` (the prefix covers
//!   identity 32 + direction 8 + protocol 8 + port 16 bits); `deny` is bit 0 of byte 2 of the
//!   value in all of them:
//!   - 1.14.0–1.16.15: `cilium_policy_NNNNN`, value 24 B (`packets` u64 at 8, `bytes` at 16).
//!   - 1.17.0–1.17.8: `cilium_policy_v2_NNNNN`, value 24 B, counters as above.
//!   - 1.18.0–1.18.3: `cilium_policy_v2_NNNNN`, value 8 B (the counters moved to
//!     `cilium_policystats`).
//!
//!   The value's other flag bits changed meaning within 1.16 (wildcard bits, then from 1.16.4
//!   `lpm_prefix_length`), so the matched protocol/port bits are taken from the key's prefix.
//! - A `cilium_policy_v2_*` with 12 B values is the v1.19 development tree's (`precedence`,
//!   `cookie`); no v1.19 release tag could be read here, so it is refused like any unknown
//!   layout, as is the pre-1.14 hash policy map.
//!
//! Integers in keys and values are host order except ports and addresses (network order).
use aya::maps::MapType;

use super::tables::FileIds;

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
    /// 1.14.0–1.16.15: `cilium_policy_*`, 24 B values.
    V1_14,
    /// 1.17.0–1.17.8: `cilium_policy_v2_*`, 24 B values.
    V1_17,
    /// 1.18.0–1.18.3: `cilium_policy_v2_*`, 8 B values, `cilium_ipcache_v2`.
    V1_18,
}

/// Policy value sizes: with counters (1.14–1.17), without (1.18).
pub const POLICY_VALUE_SIZE: u32 = 24;
pub const POLICY_V2_VALUE_SIZE: u32 = 8;
pub const POLICY_KEY_SIZE: u32 = 12;

impl Generation {
    pub fn releases(self) -> &'static str {
        match self {
            Self::V1_14 => "1.14-1.16",
            Self::V1_17 => "1.17",
            Self::V1_18 => "1.18",
        }
    }

    pub fn policy_pin(self, endpoint: u16) -> String {
        match self {
            Self::V1_14 => format!("cilium_policy_{endpoint:05}"),
            _ => format!("cilium_policy_v2_{endpoint:05}"),
        }
    }

    /// The file-id table of the metrics keys (1.14 and 1.15 record no file: id 0).
    pub fn file_ids(self) -> FileIds {
        match self {
            Self::V1_18 => FileIds::V1_18,
            _ => FileIds::V1_16,
        }
    }

    /// Whether the ipcache of this range is `cilium_ipcache_v2` (else `cilium_ipcache`).
    pub fn ipcache_v2(self) -> bool {
        self == Self::V1_18
    }
}

/// The generation a pinned policy map's name and shape identify; None: unknown layout.
pub fn policy_generation(name: &str, ty: Option<MapType>, key: u32, value: u32) -> Option<Generation> {
    let v2 = name.starts_with("cilium_policy_v2_");
    if ty? != MapType::LpmTrie || key != POLICY_KEY_SIZE {
        return None;
    }
    match (v2, value) {
        (false, POLICY_VALUE_SIZE) => Some(Generation::V1_14),
        (true, POLICY_VALUE_SIZE) => Some(Generation::V1_17),
        (true, POLICY_V2_VALUE_SIZE) => Some(Generation::V1_18),
        _ => None,
    }
}

/// The endpoint id of a per-endpoint policy map's pin name (`cilium_policy_00042`).
pub fn policy_endpoint(name: &str) -> Option<u16> {
    let digits = name.strip_prefix("cilium_policy_v2_").or_else(|| name.strip_prefix("cilium_policy_"))?;
    (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// One key of `cilium_metrics` (`line`/`file` 0: not recorded, as in 1.14 and 1.15).
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
    /// The LPM key data (after the prefix length).
    pub fn lpm_data(&self) -> [u8; 8] {
        let mut k = [0u8; 8];
        k[..4].copy_from_slice(&self.identity.to_ne_bytes());
        k[4] = u8::from(self.egress);
        k[5] = self.protocol;
        k[6..8].copy_from_slice(&self.dport.to_be_bytes());
        k
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
    /// Protocol+dport bits the entry matches (0–24), from the key's prefix length.
    pub l4_prefix: Option<u32>,
    /// The entry's packet counter (1.14–1.17; 1.18 keeps it in `cilium_policystats`).
    pub packets: Option<u64>,
}

impl PolicyValue {
    /// `prefix_len`: the LPM key's, counting from the identity.
    pub fn decode(v: &[u8], prefix_len: u32) -> Self {
        let packets = v.get(8..16).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        let l4 = prefix_len.saturating_sub(POLICY_FULL_PREFIX - LPM_L4_BITS).min(LPM_L4_BITS);
        Self { deny: v.get(2).is_some_and(|f| f & 1 != 0), l4_prefix: Some(l4), packets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_from_name_and_shape() {
        assert_eq!(policy_generation("cilium_policy_00042", Some(MapType::LpmTrie), 12, 24), Some(Generation::V1_14));
        assert_eq!(policy_generation("cilium_policy_v2_00042", Some(MapType::LpmTrie), 12, 24), Some(Generation::V1_17));
        assert_eq!(policy_generation("cilium_policy_v2_00042", Some(MapType::LpmTrie), 12, 8), Some(Generation::V1_18));
        assert_eq!(policy_generation("cilium_policy_v2_00042", Some(MapType::LpmTrie), 12, 12), None, "v1.19 development layout: no release checked");
        assert_eq!(policy_generation("cilium_policy_00042", Some(MapType::Hash), 8, 24), None, "pre-1.14 hash policy map");
        assert_eq!(policy_generation("cilium_policy_00042", Some(MapType::LpmTrie), 12, 8), None);
        assert_eq!(policy_endpoint("cilium_policy_00042"), Some(42));
        assert_eq!(policy_endpoint("cilium_policy_v2_01234"), Some(1234));
        assert_eq!(policy_endpoint("cilium_policy_a"), None);
    }

    #[test]
    fn keys_round_trip() {
        let k = PolicyKey { identity: 3000, egress: true, protocol: 6, dport: 8080 };
        assert_eq!(PolicyKey::from_lpm(64, &k.lpm_data()), k);
        let proto_only = PolicyKey::from_lpm(48, &k.lpm_data());
        assert_eq!((proto_only.protocol, proto_only.dport), (6, 0));
        let any = PolicyKey::from_lpm(40, &k.lpm_data());
        assert_eq!((any.protocol, any.dport), (0, 0));
        let m = MetricsKey::decode(&[133, 2, 0x84, 0x05, 2, 0, 0, 0]);
        assert_eq!((m.reason, m.dir, m.line, m.file), (133, 2, 1412, 2));
        assert!(m.is_drop());
        let v = PolicyValue::decode(&[0, 0, 1, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 48);
        assert_eq!((v.deny, v.l4_prefix, v.packets), (true, Some(8), Some(7)));
        let v = PolicyValue::decode(&[0, 0, 0xc0, 0, 0, 0, 0, 0], 64);
        assert_eq!((v.deny, v.l4_prefix, v.packets), (false, Some(24), None), "1.18: no counters; bits 3-7 not read");
    }
}
