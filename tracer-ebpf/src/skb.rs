//! Reading kernel structs through offsets from BTF (no CO-RE in Rust eBPF).
use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::maps::{DEV_CACHE, DevCache};

/// Reads a `T` at `base + off`; a missing field (`u32::MAX`) or a failed read yields `None`.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == u32::MAX {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad pointer is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

/// Where a packet's bytes are.
pub struct Packet {
    /// First byte to capture (MAC header when usable, else network header).
    pub start: u64,
    /// Bytes available in the linear area from `start`.
    pub avail: u32,
    /// Packet length from `start`.
    pub wire_len: u32,
    pub linktype: u8,
    pub protocol: u16,
}

const UNSET_HEADER: u16 = 0xffff;
const ETH_HLEN: u16 = 14;


const DEV_CACHE_NS: u64 = 50_000_000;

/// The device and namespace of a packet: from `skb->dev`, else from `skb->sk`.
#[inline(always)]
pub fn device(skb: u64, o: &tracer_common::Offsets) -> (u32, [u8; tracer_common::IFNAMSIZ], u32) {
    let dev: u64 = read(skb, o.skb_dev).unwrap_or(0);
    let mut ifindex = 0;
    let mut ifname = [0u8; tracer_common::IFNAMSIZ];
    let mut netns = 0;
    if dev != 0 {
        ifindex = read(dev, o.dev_ifindex).unwrap_or(0);
        // SAFETY: no preconditions.
        let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        let cache = DEV_CACHE.get_ptr_mut(0);
        if let Some(c) = cache {
            // SAFETY: this CPU's slot; probes do not nest on one CPU.
            let c = unsafe { &*c };
            if c.dev == dev && c.ifindex == ifindex && now.wrapping_sub(c.at_ns) < DEV_CACHE_NS {
                return (ifindex, c.ifname, c.netns);
            }
        }
        ifname = read(dev, o.dev_name).unwrap_or(ifname);
        let net: u64 = read(dev, o.dev_nd_net).unwrap_or(0);
        netns = read(net, o.net_ns_inum).unwrap_or(0);
        if let Some(c) = cache
            && netns != 0
        {
            // SAFETY: as above.
            unsafe { *c = DevCache { dev, at_ns: now, ifindex, netns, ifname } };
        }
    }
    if netns == 0 {
        netns = sk_netns(read(skb, o.skb_sk).unwrap_or(0), o);
    }
    (ifindex, ifname, netns)
}

/// The namespace inode of a socket (0 when unreadable).
#[inline(always)]
pub fn sk_netns(sk: u64, o: &tracer_common::Offsets) -> u32 {
    let net: u64 = read(sk, o.sk_net).unwrap_or(0);
    read(net, o.net_ns_inum).unwrap_or(0)
}

/// Locates the packet bytes. A MAC header counts only when it sits exactly one Ethernet header
/// before the network header (tunnels and raw-IP devices have none).
#[inline(always)]
pub fn packet(skb: u64, o: &tracer_common::Offsets) -> Option<Packet> {
    let head: u64 = read(skb, o.skb_head)?;
    let data: u64 = read(skb, o.skb_data)?;
    let len: u32 = read(skb, o.skb_len)?;
    let data_len: u32 = read(skb, o.skb_data_len).unwrap_or(0);
    let mac: u16 = read(skb, o.skb_mac_header).unwrap_or(UNSET_HEADER);
    let nh: u16 = read(skb, o.skb_network_header).unwrap_or(UNSET_HEADER);
    let protocol: u16 = read(skb, o.skb_protocol).unwrap_or(0);
    let (start, linktype) = if mac != UNSET_HEADER && nh != UNSET_HEADER && nh.wrapping_sub(mac) == ETH_HLEN {
        (head + u64::from(mac), tracer_common::linktype::ETHERNET)
    } else if nh != UNSET_HEADER {
        (head + u64::from(nh), tracer_common::linktype::RAW_IP)
    } else {
        (data, tracer_common::linktype::RAW_IP)
    };
    let end_linear = data + u64::from(len.saturating_sub(data_len));
    let end = data + u64::from(len);
    if start > end_linear {
        return None;
    }
    Some(Packet {
        start,
        avail: (end_linear - start) as u32,
        wire_len: (end - start) as u32,
        linktype,
        protocol,
    })
}
