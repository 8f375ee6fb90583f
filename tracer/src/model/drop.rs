//! One dropped packet: the JSON record (field names are a contract), built from the wire
//! record here and nowhere else, and what the sinks get with it (device, time, bytes).
use std::time::Duration;

use serde::Serialize;
use tracer_common::{PacketEvent, ct_flags};

use super::{
    cilium::CiliumInfo,
    conntrack::{Ct, hex_opt},
    headers::{Headers, parse_headers},
    netfilter::NetfilterInfo,
    skb::{self, Gso},
    tc::TcInfo,
    time::rfc3339,
    wire::{ifname, link_name},
};

/// What turns kernel numbers into names: reason values, addresses, monotonic time.
pub trait Names {
    fn reason(&self, code: u32) -> String;
    fn location(&mut self, addr: u64) -> String;
    /// `bpf_ktime_get_ns()` as time since the Unix epoch.
    fn wall(&self, mono_ns: u64) -> Duration;
    /// `--stack`: the frames of a recorded kernel stack (`PacketEvent::stack`), innermost
    /// first, from the dropping function out.
    fn stack(&mut self, id: u32) -> Option<Vec<String>>;
    /// The conntrack entry of a drop (`netfilter_drop`: a packet without one is `INVALID`).
    fn conntrack(&self, h: &PacketEvent, netfilter_drop: bool) -> Option<Ct>;
}

/// One dropped packet, as written to the JSON Lines output (field names are a contract).
#[derive(Debug, Clone, Serialize)]
pub struct DropEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub reason: String,
    pub location: String,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: u32,
    #[serde(flatten)]
    pub headers: Headers,
    pub len: u32,
    /// Packet bytes kept (in the pcapng).
    pub caplen: u32,
    /// Where the captured bytes start: "ethernet" or "ip".
    pub link: &'static str,
    /// `struct sk_buff` address, to correlate events of one packet.
    pub skb: String,
    /// Numeric drop reason on this kernel.
    pub reason_code: u32,
    /// Which table, chain and rule dropped it (`NETFILTER_DROP` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterInfo>,
    /// Which tc/BPF program shot it (`TC_INGRESS`/`TC_EGRESS` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tc: Option<TcInfo>,
    /// Cilium's own reason, endpoint, identities and policy entry (drops by `cil_*` programs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cilium: Option<CiliumInfo>,
    /// Pods ("namespace/name") owning the source and destination addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_pod: Option<String>,
    /// The pod behind the interface of the drop (its host-side veth, or a device in its
    /// network namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_iface: Option<String>,
    /// With `--path`: the packet's id (its `"type": "packet"` record tells its path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_id: Option<u64>,
    /// With `--stack`: the kernel stack of the drop, innermost frame first (`function+0xoff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
    /// `skb->mark` at the drop (`0x…`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_opt")]
    pub mark: Option<u32>,
    /// The packet's conntrack entry at the drop (state, direction, zone, connmark, status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct: Option<Ct>,
    /// `skb->pkt_type` at the drop: `HOST`, `BROADCAST`, `MULTICAST`, `OTHERHOST`, `OUTGOING`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkt_type: Option<&'static str>,
    /// MTU of the device the packet was routed to (else of its own device): with `len`, what
    /// an MTU or PMTU drop is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Whose MTU `mtu` is: `"route"` (the routed-to device) or `"device"` (the packet's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu_from: Option<&'static str>,
    /// A GSO packet's segment size and count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gso: Option<Gso>,
}

impl DropEvent {
    /// The event as the wire record says it, with no enrichment yet (pods, tc, netfilter).
    pub fn from_wire(h: &PacketEvent, data: &[u8], names: &mut impl Names) -> Self {
        let reason = names.reason(h.reason);
        let ct = names.conntrack(h, reason == "NETFILTER_DROP");
        let (pkt_type, mtu, gso) = skb::facts(h);
        Self {
            kind: "drop",
            time: rfc3339(names.wall(h.ts_ns)),
            reason,
            location: names.location(h.location),
            ifname: ifname(&h.ifname),
            ifindex: h.ifindex,
            netns: h.netns,
            headers: parse_headers(h.linktype, data),
            len: h.len,
            caplen: h.cap_len,
            link: link_name(h.linktype),
            skb: format!("{:#x}", h.skb),
            reason_code: h.reason,
            netfilter: None,
            tc: None,
            cilium: None,
            src_pod: None,
            dst_pod: None,
            pod_iface: None,
            packet_id: (h.packet_id != 0).then_some(h.packet_id),
            stack: h.stack.checked_sub(1).and_then(|id| names.stack(id)),
            mark: (h.ct_flags & ct_flags::MARK != 0).then_some(h.mark),
            ct,
            pkt_type,
            mtu: mtu.map(|m| m.mtu),
            mtu_from: mtu.map(|m| m.from),
            gso,
        }
    }
}

/// The interface a packet was seen on, as the pcapng names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Iface {
    pub netns: u32,
    pub ifindex: u32,
    pub ifname: String,
    pub linktype: u8,
    /// The pod behind the interface ("namespace/name"), when known.
    pub pod: Option<String>,
}

/// A drop as every sink receives it.
#[derive(Clone)]
pub struct DropRecord {
    pub event: DropEvent,
    pub iface: Iface,
    /// Since the Unix epoch.
    pub ts: Duration,
    pub data: Vec<u8>,
    /// `--all`: the packet already went to the pcapng with its path; there it only counts.
    pub in_pcap: bool,
}
