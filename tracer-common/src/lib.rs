//! The wire contract between the kernel programs (`tracer-ebpf`) and the loader (`tracer`):
//! `#[repr(C)]` records, load-time configuration and the names both sides use for maps and
//! programs. Keep it small and plain: no logic that only one side needs.
#![no_std]

pub mod cbpf;

/// Largest number of packet bytes a program copies (the filter window). A power of two so the
/// kernel side can bound offsets with a mask.
pub const MAX_CAPTURE: usize = 2048;
/// Slack after the capture window so a 4-byte filter load at the last masked offset stays in bounds.
pub const CAPTURE_SLACK: usize = 8;
/// Largest classic-BPF filter accepted, per link type.
pub const MAX_FILTER_INSNS: u32 = 512;
/// Largest number of `--iface` patterns.
pub const MAX_IFACE_PATTERNS: u32 = 16;
pub const IFNAMSIZ: usize = 16;

/// Map and program names (the loader looks them up by these).
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const DROP_STATS: &str = "DROP_STATS";
    pub const FILTER_INSNS: &str = "FILTER_INSNS";
    pub const IFACE_PATTERNS: &str = "IFACE_PATTERNS";
    pub const KFREE_SKB_BTF: &str = "kfree_skb_btf";
    pub const KFREE_SKB_RAW: &str = "kfree_skb_raw";
    pub const OFFSETS: &str = "OFFSETS";
    pub const CONFIG: &str = "CONFIG";
    pub const NF_RING: &str = "NF_RING";
}

/// Indexes into the per-CPU `COUNTERS` array. Summed over CPUs by the loader.
pub mod counter {
    /// `kfree_skb` calls with a real drop reason, before any filter.
    pub const SEEN: u32 = 0;
    /// Drops that passed every filter: the exact total the summary reports.
    pub const MATCHED: u32 = 1;
    /// Events handed to the ring buffer.
    pub const EMITTED: u32 = 2;
    /// Events that did not fit in the ring buffer (lost in the kernel).
    pub const LOST: u32 = 3;
    /// Matched drops whose aggregation key did not fit in `DROP_STATS`.
    pub const STATS_FULL: u32 = 4;
    pub const COUNT: u32 = 8;
}

/// Byte offsets of kernel struct fields, read from the running kernel's BTF at load time
/// (Rust eBPF has no CO-RE). `u32::MAX` marks a field this kernel lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub skb_len: u32,
    pub skb_data_len: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_mac_header: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub sk_net: u32,
}

/// Capture settings fixed at load time (read-only data, so the verifier prunes unused paths).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Bytes of each packet carried in an event (≤ `MAX_CAPTURE`).
    pub snaplen: u32,
    /// Instructions of the classic-BPF filter for packets starting at an Ethernet header; 0 = none.
    pub filter_eth_len: u32,
    /// Instructions of the filter for packets starting at the IP header; 0 = none.
    pub filter_raw_len: u32,
    /// 1 when an expression was given (then a packet whose program is empty never matches).
    pub filter_active: u32,
    /// Only drops in this network namespace (inode number); 0 = any.
    pub netns: u32,
    /// Number of `IFACE_PATTERNS` entries in use; 0 = any interface.
    pub iface_patterns: u32,
    /// Reason values that are not drops (`SKB_CONSUMED`, `NOT_DROPPED_YET`), from BTF.
    pub reason_consumed: u32,
    pub reason_not_dropped: u32,
    /// `SKB_DROP_REASON_NETFILTER_DROP` on this kernel (u32::MAX when unknown).
    pub reason_netfilter_drop: u32,
    pub _pad: u32,
}

/// One classic-BPF instruction, as `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CbpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// An interface-name pattern: bytes `name[i]` must equal the device name where `mask[i]` is
/// 0xff (a `?` gives mask 0); `len` bytes are compared and, unless `prefix` is set, the
/// device name must end there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IfacePattern {
    pub name: [u8; IFNAMSIZ],
    pub mask: [u8; IFNAMSIZ],
    pub len: u32,
    pub prefix: u32,
}

/// Where the captured bytes of a packet start.
pub mod linktype {
    /// At the Ethernet header.
    pub const ETHERNET: u8 = 1;
    /// At the IP header (no usable MAC header at the drop point).
    pub const RAW_IP: u8 = 2;
}

/// Kind of a record in the `EVENTS` ring buffer (first byte after the common header fields).
pub mod kind {
    pub const DROP: u8 = 1;
}

/// A packet seen by a probe: fixed header, followed in the ring buffer by `cap_len` packet bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel text address where the packet was freed (`kfree_skb` location).
    pub location: u64,
    /// `struct sk_buff` address (identifies a packet while it is alive).
    pub skb: u64,
    pub reason: u32,
    pub ifindex: u32,
    /// Network namespace inode number.
    pub netns: u32,
    /// Packet length from the first captured byte (headers included).
    pub len: u32,
    /// Packet bytes that follow this header.
    pub cap_len: u32,
    /// `skb->protocol` (network byte order, an ETH_P_* value).
    pub protocol: u16,
    /// `linktype::*`
    pub linktype: u8,
    /// `kind::*`
    pub kind: u8,
    pub ifname: [u8; IFNAMSIZ],
    /// Netfilter observer slot the packet passed last before a NETFILTER_DROP (0 = none): tells
    /// the hook, family, namespace and priority range where it died.
    pub nf_slot: u32,
    pub _pad: u32,
}

pub const EVENT_HEADER_LEN: usize = core::mem::size_of::<PacketEvent>();

/// Key of the per-CPU `DROP_STATS` hash: exact per-(reason, location, interface, netfilter slot)
/// totals that do not depend on events reaching userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub location: u64,
    pub reason: u32,
    pub ifindex: u32,
    pub netns: u32,
    pub ifname: [u8; IFNAMSIZ],
    /// Netfilter observer slot (see `PacketEvent::nf_slot`).
    pub nf_slot: u32,
}

/// Entries in the per-CPU ring of recent netfilter observer passes.
pub const NF_RING_LEN: usize = 8;

/// Per-CPU ring the netfilter observers write: which skb passed which observer slot last.
/// A ring, not a single entry, because a REJECT sends its RST/ICMP (through OUTPUT observers)
/// between the last observer and the drop of the original packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NfRing {
    /// Next write position (mod NF_RING_LEN).
    pub head: u32,
    pub _pad: u32,
    pub skb: [u64; NF_RING_LEN],
    pub slot: [u32; NF_RING_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain integers/arrays with no padding holes that
    // matter for reading (padding bytes are written as zero by both sides).
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::CbpfInsn {}
    unsafe impl aya::Pod for super::IfacePattern {}
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::NfRing {}
    unsafe impl aya::Pod for super::cbpf::Vm {}
}
