//! The drop probe: `skb:kfree_skb` (reason, location) with the packet's device, namespace and
//! bytes. Loaded as tp_btf where the kernel allows it, else as a raw tracepoint (same body).
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, tracing::StackIdContext},
};
use tracer_common::{DropKey, IFNAMSIZ, hook, kind};

use crate::{
    capture, config, emit, maps, netfilter, path,
    skb::{self, Btf, Mem, Probe},
    tc,
};

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    on_drop::<Btf, _>(&ctx, ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2) as u32);
    0
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb_raw(ctx: RawTracePointContext) -> i32 {
    on_drop::<Probe, _>(&ctx, ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2) as u32);
    0
}

#[inline(always)]
fn on_drop<M: Mem, C: StackIdContext>(ctx: &C, skb: u64, location: u64, reason: u32) {
    let cfg = config::config();
    if reason == cfg.reason_consumed() || reason == cfg.reason_not_dropped() {
        return;
    }
    let Some(st) = emit::drop_state() else { return };
    st.seen += 1;
    // A tracked packet's path ends here whether or not the drop itself matches the filters
    // (NAT may have changed the addresses the expression named).
    let packet_id = if cfg.path() != 0 { path::untrack(skb) } else { 0 };
    let o = config::offsets();
    let Some(s) = maps::scratch() else { return };
    // The device cache's and the event budget's tick. SAFETY: no preconditions (inlined by the
    // verifier: a load of `jiffies`).
    let now = unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() };
    let Some(mut seen) = capture::device_cached::<M>(skb, cfg, o, s, st, now) else {
        end_path::<M>(s, skb, packet_id, location, reason, o);
        return;
    };
    // Bytes are read now only as far as a filter needs them; the snaplen's worth only for an
    // event we send.
    if capture::filters_need_bytes(cfg) && !capture::bytes::<M>(skb, cfg, o, s, &mut seen) {
        end_path::<M>(s, skb, packet_id, location, reason, o);
        return;
    }
    st.matched += 1;
    // The exact totals: per (reason, location, interface), and per tc program (the tc slot is
    // part of the key). Netfilter rules are attributed from events, so the netfilter slot is
    // looked up only for a drop that becomes one, except for `tracer watch` (`stats_nf_slot`),
    // whose per-rule metrics come from these totals.
    let tc_code = if reason == cfg.reason_tc_ingress() || reason == cfg.reason_tc_egress() { tc::last_code(skb, seen.ifindex) } else { 0 };
    let key_nf_slot = if cfg.stats_nf_slot() != 0 && reason == cfg.reason_netfilter_drop() { netfilter::drop_slot::<M>(skb, cfg, o) } else { 0 };
    match seen.dev {
        // The device came from the key: only the drop's own fields can differ from it, and a
        // flood's drop, which repeats them, is counted without building a key.
        capture::DevRead::Cached if st.count != 0 && st.key.location == location && st.key.reason == reason && st.key.nf_slot == key_nf_slot && st.key.tc_code == tc_code => {
            st.count += 1;
        }
        dev_read => {
            let mut key = DropKey { location, ifname: [0; IFNAMSIZ], reason, ifindex: seen.ifindex, netns: seen.netns, nf_slot: key_nf_slot, tc_code, _pad: 0 };
            // SAFETY: this CPU's scratch; `capture::device_cached` wrote the name unless the
            // key has it.
            let name = if let capture::DevRead::Cached = dev_read { &st.key.ifname } else { unsafe { &(*s).hdr.ifname } };
            skb::copy_name(&mut key.ifname, name);
            emit::count_drop(st, &key);
            // The key now holds this drop's device: a fresh read is what the next drops may reuse.
            if let capture::DevRead::Fresh(dev) = dev_read {
                st.dev = dev;
                st.dev_jiffies = now;
            }
        }
    }
    // Under a flood events are rate limited (the totals above stay exact); a followed
    // packet's end always goes out.
    if packet_id == 0 && !emit::take_event_token(&mut st.budget, cfg.event_interval_ns(), now) {
        st.rate_limited += 1;
        return;
    }
    // Watch's key already holds it (0 included: the ring and the route are not read twice).
    let nf_slot = if cfg.stats_nf_slot() != 0 { key_nf_slot } else if reason == cfg.reason_netfilter_drop() { netfilter::drop_slot::<M>(skb, cfg, o) } else { 0 };
    if let capture::DevRead::Cached = seen.dev {
        // SAFETY: this CPU's scratch; the key holds this drop's device (`count_drop`).
        skb::copy_name(unsafe { &mut (*s).hdr.ifname }, &st.key.ifname);
    }
    capture::event_bytes::<M>(skb, cfg, o, s, &mut seen);
    let snap = seen.cap.min(cfg.snaplen());
    // Only events carry a stack (a flood's rate-limited drops never walk one).
    let stack = if cfg.stack() != 0 { ctx.get_stackid(&maps::STACKS, 0).map_or(0, |id| id as u32 + 1) } else { 0 };
    // SAFETY: s is this CPU's scratch value.
    unsafe {
        let h = &mut (*s).hdr;
        emit::fill(h, skb, location, reason, &seen, snap, kind::DROP);
        h.nf_slot = nf_slot;
        h.tc_code = tc_code;
        h.packet_id = packet_id;
        h.hook = 0;
        h.stack = stack;
        skb::conntrack::<M>(skb, o, h);
        skb::facts::<M>(skb, o, s, h, cfg.direct_facts() != 0);
    }
    emit::output(s, snap);
}

/// A followed packet's last hop (`capture::device_cached` loaded the skb's fields). Inlined: as a
/// subprogram its frame would add to the probe's on the combined 512-byte stack Linux 6.1
/// allows.
#[inline(always)]
fn end_path<M: Mem>(s: *mut maps::Scratch, skb: u64, packet_id: u64, location: u64, reason: u32, o: &crate::config::Offs) {
    if packet_id != 0 {
        path::emit_hop(s, skb, packet_id, hook::DROP, location, reason, skb::device::<M>(skb, o, s), 0);
    }
}
