//! The drop probe: `skb:kfree_skb` (reason, location) with the packet's device, namespace and
//! bytes. Loaded as tp_btf where the kernel allows it, else as a raw tracepoint (same body).
use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tracer_common::{DropKey, MAX_CAPTURE, MAX_FILTER_INSNS, counter, kind, linktype};

use crate::{config, emit, filter, netfilter, skb};

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    on_drop(ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2) as u32);
    0
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb_raw(ctx: RawTracePointContext) -> i32 {
    on_drop(ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2) as u32);
    0
}

#[inline(always)]
fn on_drop(skb: u64, location: u64, reason: u32) {
    let cfg = config::config();
    if reason == cfg.reason_consumed || reason == cfg.reason_not_dropped {
        return;
    }
    emit::count(counter::SEEN);
    let o = config::offsets();
    let (ifindex, ifname, netns) = skb::device(skb, &o);
    if cfg.netns != 0 && netns != cfg.netns {
        return;
    }
    if cfg.iface_patterns != 0 && !filter::iface_matches(&ifname, cfg.iface_patterns) {
        return;
    }
    let Some(s) = emit::scratch() else { return };
    let (mut cap, mut wire_len, mut lt, mut protocol) = (0u32, 0u32, linktype::RAW_IP, 0u16);
    if let Some(p) = skb::packet(skb, &o) {
        wire_len = p.wire_len;
        lt = p.linktype;
        protocol = p.protocol;
        let n = p.avail.min(MAX_CAPTURE as u32);
        if n > 0 {
            // The verifier must see a non-zero, bounded length (6.1 rejects `n == 0` checks).
            let n = ((n - 1) & (MAX_CAPTURE as u32 - 1)) + 1;
            // SAFETY: n ≤ MAX_CAPTURE fits the scratch data array; the helper checks `start`.
            let r = unsafe {
                bpf_probe_read_kernel((*s).data.as_mut_ptr().cast(), n, p.start as *const _)
            };
            if r == 0 {
                cap = n;
            }
        }
    }
    if cfg.filter_active != 0 {
        let (base, len) = if lt == linktype::ETHERNET {
            (0, cfg.filter_eth_len)
        } else {
            (MAX_FILTER_INSNS, cfg.filter_raw_len)
        };
        if len == 0 || !filter::cbpf_accepts(base, len, cap, wire_len) {
            return;
        }
    }
    emit::count(counter::MATCHED);
    let nf_slot = if reason == cfg.reason_netfilter_drop { netfilter::last_slot(skb) } else { 0 };
    emit::count_drop(&DropKey { location, reason, ifindex, netns, ifname, nf_slot });

    let snap = cap.min(cfg.snaplen);
    // SAFETY: s is this CPU's scratch value.
    unsafe {
        let h = &mut (*s).hdr;
        h.ts_ns = bpf_ktime_get_ns();
        h.location = location;
        h.skb = skb;
        h.reason = reason;
        h.ifindex = ifindex;
        h.netns = netns;
        h.len = wire_len;
        h.cap_len = snap;
        h.protocol = protocol;
        h.linktype = lt;
        h.kind = kind::DROP;
        h.ifname = ifname;
        h.nf_slot = nf_slot;
    }
    emit::output(s, snap);
}
