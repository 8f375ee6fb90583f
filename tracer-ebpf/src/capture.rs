//! What every packet-reporting probe does first: read the packet's device, namespace and
//! bytes into this CPU's scratch record, and apply every filter the user gave. Shared by the
//! drop probe and the path hooks so both select exactly the same packets.
use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use tracer_common::{Config, IFNAMSIZ, MAX_CAPTURE, MAX_FILTER_INSNS, Offsets, linktype};

use crate::{emit::Scratch, filter, skb};

/// A packet that passed the filters; its first `cap` bytes are in the scratch data.
pub struct Seen {
    pub ifindex: u32,
    pub ifname: [u8; IFNAMSIZ],
    pub netns: u32,
    pub cap: u32,
    pub wire_len: u32,
    pub linktype: u8,
    pub protocol: u16,
}

/// None when a filter rejects the packet.
#[inline(always)]
pub fn select(skb: u64, cfg: &Config, o: &Offsets, s: *mut Scratch) -> Option<Seen> {
    let (ifindex, ifname, netns) = skb::device(skb, o);
    if cfg.netns != 0 && netns != cfg.netns {
        return None;
    }
    if cfg.iface_patterns != 0 && !filter::iface_matches(&ifname, cfg.iface_patterns) {
        return None;
    }
    let (mut cap, mut wire_len, mut lt, mut protocol) = (0u32, 0u32, linktype::RAW_IP, 0u16);
    if let Some(p) = skb::packet(skb, o) {
        wire_len = p.wire_len;
        lt = p.linktype;
        protocol = p.protocol;
        let n = p.avail.min(MAX_CAPTURE as u32);
        if n > 0 {
            // The verifier must see a non-zero, bounded length (6.1 rejects `n == 0` checks).
            let n = ((n - 1) & (MAX_CAPTURE as u32 - 1)) + 1;
            // SAFETY: n ≤ MAX_CAPTURE fits the scratch data array; the helper checks `start`.
            let r = unsafe { bpf_probe_read_kernel((*s).data.as_mut_ptr().cast(), n, p.start as *const _) };
            if r == 0 {
                cap = n;
            }
        }
    }
    if cfg.pod_filter != 0 && !filter::pod_matches(ifindex, netns, lt, cap) {
        return None;
    }
    if cfg.filter_active != 0 {
        let (base, len) = if lt == linktype::ETHERNET { (0, cfg.filter_eth_len) } else { (MAX_FILTER_INSNS, cfg.filter_raw_len) };
        if len == 0 || !filter::cbpf_accepts(base, len, cap, wire_len) {
            return None;
        }
    }
    Some(Seen { ifindex, ifname, netns, cap, wire_len, linktype: lt, protocol })
}
