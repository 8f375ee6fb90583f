//! A followed packet's records: the hops it passed, how it ended, the `"type": "path"` and
//! `"type": "packet"` JSON records, and its bytes as first seen (for `--all`).
use std::time::Duration;

use serde::Serialize;

use super::{drop::Iface, headers::Headers};

/// One hook a packet passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// Nanoseconds since the packet was first seen.
    pub t_ns: u64,
    pub hook: String,
    pub ifname: String,
    pub netns: u32,
}

/// How a packet's story ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The kernel dropped it (reason, location).
    Dropped { reason: String, location: String },
    /// Freed normally (`consume_skb`) at `location`.
    Consumed { location: String },
    /// Queued to a socket in namespace `netns`.
    Delivered { netns: u32 },
}

#[derive(Debug, Clone)]
pub struct Story {
    pub packet_id: u64,
    /// Monotonic time of the first hop.
    pub first_ns: u64,
    pub hops: Vec<Hop>,
    pub end: Option<End>,
}

impl Story {
    /// What became of the packet, in words: "delivered to socket", "forwarded out eth0",
    /// "dropped: `NETFILTER_DROP` at `nft_do_chain+0x46f`", "sent out lxc12 (netns …)".
    pub fn fate(&self) -> String {
        match &self.end {
            Some(End::Dropped { reason, location }) => format!("dropped: {reason} at {location}"),
            Some(End::Delivered { netns }) => format!("delivered to socket (netns {netns})"),
            Some(End::Consumed { .. }) => {
                if self.hops.iter().any(|h| h.hook == "skb_copy_datagram_iovec") {
                    let last = self.hops.iter().rev().find(|h| h.hook == "skb_copy_datagram_iovec").unwrap_or(&self.hops[0]);
                    format!("delivered to socket (netns {})", last.netns)
                } else if let Some(x) = self.hops.iter().rev().find(|h| h.hook == "net_dev_start_xmit" || h.hook == "net_dev_xmit") {
                    format!("sent out {} (netns {})", x.ifname, x.netns)
                } else {
                    "consumed".to_string()
                }
            }
            None => self.hops.last().map_or_else(|| "unknown".into(), |h| format!("last seen at {} on {}", h.hook, h.ifname)),
        }
    }
}

/// A hop as JSON (`"type": "path"`).
#[derive(Debug, Serialize)]
pub struct HopRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub packet_id: u64,
    pub hook: String,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: u32,
    /// Nanoseconds since the packet was first seen.
    pub t_ns: u64,
    pub time: String,
    /// The first hop of a packet carries its headers.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A packet's whole story (`"type": "packet"`).
#[derive(Debug, Serialize)]
pub struct PacketRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub packet_id: u64,
    pub time: String,
    #[serde(flatten)]
    pub headers: Headers,
    pub path: Vec<Hop>,
    pub fate: String,
}

/// A finished packet: its record and (for `--all`) its bytes.
pub struct Finished {
    pub record: PacketRecord,
    pub packet: Option<Captured>,
}

/// A packet's bytes as first seen, for the pcapng.
#[derive(Clone)]
pub struct Captured {
    pub iface: Iface,
    pub ts: Duration,
    pub len: u32,
    pub data: Vec<u8>,
}
