//! Byte layouts of Cilium's endpoint and ipcache maps (the doctor and the drop attribution read
//! them), written from Cilium's own headers (our decoder, their facts). Checked against
//! cilium/cilium at the release-prep commit of every patch release v1.14.0–v1.18.3 (commits
//! in `tables.rs`; `bpf/lib/common.h`, 1.18's `bpf/lib/eps.h`, `bpf/lib/maps.h`,
//! `pkg/maps/{lxcmap,ipcache}`): the offsets below hold in all of them.
//!
//! - `bpf/lib/common.h` `struct endpoint_key` (20 bytes, packed): `ip4`/`ip6` in the first 16
//!   bytes, `family` at 16 (1 = IPv4, 2 = IPv6), `key` at 17, `cluster_id` at 18.
//! - `bpf/lib/common.h` `struct endpoint_info` (48 bytes): `ifindex` u32 at 0, `unused` u16 at
//!   4, `lxc_id` u16 at 6, `flags` u32 at 8 (`ENDPOINT_F_HOST` = 1), `mac` at 16 and `node_mac`
//!   at 24 (`mac_t` is a u64 whose first six bytes in memory are the MAC), `sec_id` u32 at 32.
//!   `mac` is the pod's eth0, `node_mac` the host-side `lxc…` veth (pkg/maps/lxcmap).
//! - `bpf/lib/maps.h` (1.14–1.17; `eps.h` from 1.18) `struct ipcache_key` (packed, 24 bytes with
//!   the LPM prefix length): `prefixlen` u32 at 0 counting from byte 4, family u8 at 7, address
//!   at 8. 1.14 has `pad1` u16 at 4 and `cluster_id` u8 at 6; 1.15+ `cluster_id` u16 at 4.
//!   The LPM trie `cilium_ipcache` (1.14–1.18 pin it; 1.18's datapath reads `_v2`).
//! - `remote_endpoint_info` in `cilium_ipcache` (1.14–1.17, 12 bytes): `sec_identity` u32 at 0,
//!   `tunnel_endpoint` (IPv4, network order) at 4. In `cilium_ipcache_v2` (1.18, 24 bytes):
//!   `tunnel_endpoint` is 16 bytes at 4, flags at 23 (bit 1 `flag_has_tunnel_ep`, bit 2
//!   `flag_ipv6_tunnel_ep`).
//!
//! Map values are in host byte order (the agent writes them natively); addresses are in network
//! order.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::MapType;

pub const ENDPOINT_F_HOST: u32 = 1;
const FAMILY_IPV4: u8 = 1;
const FAMILY_IPV6: u8 = 2;
/// Bits of the ipcache key before the address (`cluster_id`/pad and family).
const IPCACHE_KEY_PREFIX_BITS: u32 = 32;

pub const ENDPOINT_KEY_SIZE: usize = 20;
pub const ENDPOINT_INFO_SIZE: usize = 48;
/// The key after the 4-byte LPM prefix length.
pub const IPCACHE_KEY_DATA_SIZE: usize = 20;
pub const IPCACHE_V1_VALUE_SIZE: usize = 12;
pub const IPCACHE_V2_VALUE_SIZE: usize = 24;

/// A pinned map the doctor knows how to read.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub pin_name: &'static str,
    pub map_type: MapType,
    pub type_name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub releases: &'static str,
}

pub const LXC: Layout = Layout {
    pin_name: "cilium_lxc",
    map_type: MapType::Hash,
    type_name: "hash",
    key_size: 20,
    value_size: 48,
    releases: "1.14–1.18",
};
pub const IPCACHE_V1: Layout = Layout {
    pin_name: "cilium_ipcache",
    map_type: MapType::LpmTrie,
    type_name: "lpm_trie",
    key_size: 24,
    value_size: 12,
    releases: "1.14–1.17",
};
pub const IPCACHE_V2: Layout = Layout {
    pin_name: "cilium_ipcache_v2",
    map_type: MapType::LpmTrie,
    type_name: "lpm_trie",
    key_size: 24,
    value_size: 24,
    releases: "1.18",
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub ifindex: u32,
    pub lxc_id: u16,
    pub flags: u32,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
    pub sec_id: u32,
}

impl Endpoint {
    pub fn is_host(&self) -> bool {
        self.flags & ENDPOINT_F_HOST != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcacheEntry {
    pub ip: IpAddr,
    /// Prefix length of the address (32/128 for a single endpoint).
    pub prefix_len: u32,
    pub sec_identity: u32,
    /// The node the prefix lives behind; `None` for this node's own prefixes.
    pub tunnel_endpoint: Option<IpAddr>,
}

impl IpcacheEntry {
    pub fn is_host_prefix(&self) -> bool {
        self.prefix_len == if self.ip.is_ipv4() { 32 } else { 128 }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

fn addr(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// `None` for an unknown address family (the entry is then reported, not guessed at).
pub fn endpoint(key: &[u8; ENDPOINT_KEY_SIZE], value: &[u8; ENDPOINT_INFO_SIZE]) -> Option<Endpoint> {
    let mut a = [0u8; 16];
    a.copy_from_slice(&key[..16]);
    Some(Endpoint {
        ip: addr(key[16], &a)?,
        ifindex: u32_at(value, 0),
        lxc_id: u16::from_ne_bytes([value[6], value[7]]),
        flags: u32_at(value, 8),
        mac: mac_at(value, 16),
        node_mac: mac_at(value, 24),
        sec_id: u32_at(value, 32),
    })
}

/// `key` is the LPM key after its prefix length; `value` a v1 (12) or v2 (24) value.
pub fn ipcache(prefix_len: u32, key: &[u8; IPCACHE_KEY_DATA_SIZE], value: &[u8]) -> Option<IpcacheEntry> {
    let family = key[3];
    let mut a = [0u8; 16];
    a.copy_from_slice(&key[4..20]);
    let ip = addr(family, &a)?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let prefix_len = prefix_len.checked_sub(IPCACHE_KEY_PREFIX_BITS).filter(|l| *l <= bits)?;
    let tunnel_endpoint = match value.len() {
        IPCACHE_V1_VALUE_SIZE => {
            let t = Ipv4Addr::new(value[4], value[5], value[6], value[7]);
            (!t.is_unspecified()).then_some(IpAddr::V4(t))
        }
        IPCACHE_V2_VALUE_SIZE => {
            let flags = value[23];
            let has_tunnel = flags & 0b10 != 0;
            let mut t = [0u8; 16];
            t.copy_from_slice(&value[4..20]);
            has_tunnel.then(|| if flags & 0b100 != 0 { IpAddr::V6(Ipv6Addr::from(t)) } else { IpAddr::V4(Ipv4Addr::new(t[0], t[1], t[2], t[3])) })
        }
        _ => return None,
    };
    Some(IpcacheEntry { ip, prefix_len, sec_identity: u32_at(value, 0), tunnel_endpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_ipv4_endpoint() {
        let mut k = [0u8; 20];
        k[..4].copy_from_slice(&[10, 220, 1, 10]);
        k[16] = 1;
        let mut v = [0u8; 48];
        v[..4].copy_from_slice(&42u32.to_ne_bytes());
        v[6..8].copy_from_slice(&1234u16.to_ne_bytes());
        v[16..22].copy_from_slice(&[0x0a, 1, 2, 3, 4, 5]);
        v[24..30].copy_from_slice(&[0x0e, 6, 7, 8, 9, 10]);
        v[32..36].copy_from_slice(&5678u32.to_ne_bytes());
        let e = endpoint(&k, &v).unwrap();
        assert_eq!(e.ip, "10.220.1.10".parse::<IpAddr>().unwrap());
        assert_eq!((e.ifindex, e.lxc_id, e.sec_id), (42, 1234, 5678));
        assert_eq!(e.mac, [0x0a, 1, 2, 3, 4, 5]);
        assert_eq!(e.node_mac, [0x0e, 6, 7, 8, 9, 10]);
        assert!(!e.is_host());
        k[16] = 9;
        assert!(endpoint(&k, &v).is_none());
    }

    #[test]
    fn decodes_ipcache_v1_and_v2() {
        let mut k = [0u8; 20];
        k[3] = 1;
        k[4..8].copy_from_slice(&[10, 220, 1, 10]);
        let mut v1 = [0u8; 12];
        v1[..4].copy_from_slice(&3000u32.to_ne_bytes());
        let e = ipcache(64, &k, &v1).unwrap();
        assert_eq!((e.prefix_len, e.sec_identity, e.tunnel_endpoint), (32, 3000, None));
        assert!(e.is_host_prefix());
        v1[4..8].copy_from_slice(&[192, 0, 2, 7]);
        assert_eq!(ipcache(56, &k, &v1).unwrap().tunnel_endpoint, Some("192.0.2.7".parse().unwrap()));
        assert!(!ipcache(56, &k, &v1).unwrap().is_host_prefix());
        let mut v2 = [0u8; 24];
        v2[4..8].copy_from_slice(&[192, 0, 2, 8]);
        assert_eq!(ipcache(64, &k, &v2).unwrap().tunnel_endpoint, None);
        v2[23] = 0b10;
        assert_eq!(ipcache(64, &k, &v2).unwrap().tunnel_endpoint, Some("192.0.2.8".parse().unwrap()));
        assert!(ipcache(20, &k, &v1).is_none(), "prefix shorter than the key header");
        assert!(ipcache(97, &k, &v1).is_none(), "prefix longer than an IPv4 address");
        assert!(ipcache(64, &k, &[0u8; 13]).is_none(), "unknown value size");
    }
}
