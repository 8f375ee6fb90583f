//! `--path`: follow matching packets hook by hook. The hooks where a packet can be seen first
//! (a device receives it, a driver is handed it) apply the filters; a match gets a packet id,
//! remembered by skb address in `PATH_TRACK`, and every later hook of that skb only looks it
//! up. consume/kfree end the path.
use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tracer_common::{IFNAMSIZ, hook, kind};

use crate::{
    capture::{self, Seen},
    config, emit,
    maps::{PATH_CPU, PATH_LIVE, PATH_SEQ, PATH_TRACK, PathCpu, Scratch},
    skb::{self, Btf, Mem, Probe},
};

#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn path_netif_receive_skb(ctx: RawTracePointContext) -> i32 {
    netif_receive::<Probe>(ctx.arg::<u64>(0));
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn path_netif_receive_skb_btf(ctx: BtfTracePointContext) -> i32 {
    netif_receive::<Btf>(ctx.arg::<u64>(0));
    0
}

/// A receive. The filters run unless this skb is the one this CPU last handed to a driver,
/// its bytes where they were then (`PathCpu::sent_skb`: a veth's peer or `lo` receiving it).
#[inline(always)]
fn netif_receive<M: Mem>(skb: u64) {
    let cfg = config::config();
    if cfg.path() == 0 {
        return;
    }
    let Some(c) = PATH_CPU.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot; the path's programs do not nest on one CPU.
    let c = unsafe { &mut *c };
    let sent = c.sent_skb == skb;
    c.sent_skb = 0;
    let mut id = tracked_hop::<M>(skb, hook::NETIF_RECEIVE, 0, false);
    if id == 0 {
        id = first_match::<M>(skb, hook::NETIF_RECEIVE, cfg, c, if sent { Sent::Compare } else { Sent::Ignore });
    }
    c.rx_skb = skb;
    c.rx_id = id;
}

#[raw_tracepoint(tracepoint = "sk_data_ready")]
pub fn path_sk_data_ready(ctx: RawTracePointContext) -> i32 {
    let sk = ctx.arg::<u64>(0);
    let Some(c) = PATH_CPU.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's slot.
    let c = unsafe { &mut *c };
    let (skb, id) = (c.rx_skb, c.rx_id);
    if id == 0 {
        return 0;
    }
    c.rx_skb = 0;
    c.rx_id = 0;
    forget(skb);
    let Some(s) = crate::maps::scratch() else { return 0 };
    let netns = crate::skb::sk_netns::<Probe>(sk, config::offsets());
    // SAFETY: this CPU's scratch. A delivery has no device.
    unsafe { (*s).hdr.ifname = [0; IFNAMSIZ] };
    emit_hop(s, skb, id, hook::DELIVER, 0, 0, (0, netns), 0);
    0
}

/// A driver is handed the skb: where tcpdump's tap sees a packet leave, after the qdisc (and
/// after GSO made segments of it, so each is seen). The transmit side's only hook:
/// `net_dev_queue` before the qdisc would double the cost of `--path` on every forwarded
/// packet it does not follow, and the qdisc's drops are drops (`kfree_skb`).
#[raw_tracepoint(tracepoint = "net_dev_start_xmit")]
pub fn path_net_dev_start_xmit(ctx: RawTracePointContext) -> i32 {
    start_xmit::<Probe>(ctx.arg::<u64>(0));
    0
}

#[btf_tracepoint(function = "net_dev_start_xmit")]
pub fn path_net_dev_start_xmit_btf(ctx: BtfTracePointContext) -> i32 {
    start_xmit::<Btf>(ctx.arg::<u64>(0));
    0
}

#[inline(always)]
fn start_xmit<M: Mem>(skb: u64) {
    let cfg = config::config();
    if cfg.path() == 0 {
        return;
    }
    let Some(c) = PATH_CPU.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot; the path's programs do not nest on one CPU.
    let c = unsafe { &mut *c };
    c.sent_skb = 0;
    if tracked_hop::<M>(skb, hook::NET_DEV_START_XMIT, 0, false) == 0 {
        first_match::<M>(skb, hook::NET_DEV_START_XMIT, cfg, c, Sent::Note);
    }
}

#[raw_tracepoint(tracepoint = "skb_copy_datagram_iovec")]
pub fn path_skb_copy_datagram_iovec(ctx: RawTracePointContext) -> i32 {
    on_tracked(ctx.arg::<u64>(0), hook::COPY_DATAGRAM, 0, false);
    0
}

#[raw_tracepoint(tracepoint = "consume_skb")]
pub fn path_consume_skb(ctx: RawTracePointContext) -> i32 {
    // consume_skb(skb, location) since 6.3; older kernels pass only the skb (location 0).
    on_tracked(ctx.arg::<u64>(0), hook::CONSUME, 0, true);
    0
}

/// What `first_match` does with `PathCpu::sent_*`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ignore,
    /// A driver hook: note a miss whose bytes were located.
    Note,
    /// A receive of the skb noted last: a miss when its bytes are where they were. Between
    /// the two tracepoints nothing runs that could change them (tc, netfilter and generic XDP
    /// come after the receive's; a veth's own XDP program, which runs before it, turns
    /// `path_reuse` off); the checks of place and length stand for the rest: to be
    /// another packet, the skb and its head would have been freed and reused at the same
    /// offsets, and that packet received first, on this CPU, before any other receive or
    /// driver hand-off.
    Compare,
}

/// Applies the filters to an skb nobody follows; a match starts its path (its first event
/// carries its bytes). Returns the packet id (0 when not followed). `sent` applies only with
/// `Config::path_reuse`: where the bytes alone are filtered (a filter on the device would not
/// give a veth's peer the verdict of the veth) and no XDP program (which runs between a veth
/// and its peer's receive) was seen.
#[inline(always)]
fn first_match<M: Mem>(skb: u64, h: u32, cfg: &crate::config::Cfg, c: &mut PathCpu, sent: Sent) -> u64 {
    let Some(s) = crate::maps::scratch() else { return 0 };
    let o = config::offsets();
    let reuse = cfg.path_reuse() != 0;
    // The skb's fields, copied once (raw tracepoints; a tp_btf hook reads them in place).
    skb::load::<M>(skb, o, s);
    if sent == Sent::Compare && reuse {
        let mut now = Seen::on(0, 0);
        capture::locate::<M>(skb, o, s, &mut now);
        if now.start != 0
            && now.start == c.sent_start
            && now.wire_len == c.sent_wire_len
            && now.avail == c.sent_avail
            && u32::from(now.linktype) == c.sent_linktype
        {
            return 0;
        }
    }
    // Without a filter on the device, its fields (three kernel structs' cache lines) are read
    // only for a packet the expression matched: most packets at these hooks are not followed.
    let late_device = !capture::filters_need_device(cfg);
    let mut seen = if late_device {
        Seen::on(0, 0)
    } else {
        let Some(seen) = capture::device::<M>(skb, cfg, o, s) else { return 0 };
        seen
    };
    capture::locate::<M>(skb, o, s, &mut seen);
    if !capture::filters(cfg, s, &mut seen) {
        if sent == Sent::Note && reuse && seen.start != 0 {
            c.sent_skb = skb;
            c.sent_start = seen.start;
            c.sent_wire_len = seen.wire_len;
            c.sent_avail = seen.avail;
            c.sent_linktype = u32::from(seen.linktype);
        }
        return 0;
    }
    if late_device {
        (seen.ifindex, seen.netns) = skb::device::<M>(skb, o, s);
    }
    capture::event_bytes::<M>(skb, cfg, o, s, &mut seen);
    let id = next_id();
    if !track(skb, id) {
        return 0;
    }
    let snap = seen.cap.min(cfg.snaplen());
    // SAFETY: this CPU's scratch.
    unsafe {
        let hdr = &mut (*s).hdr;
        emit::fill(hdr, skb, 0, 0, &seen, snap, kind::PATH);
        hdr.nf_slot = 0;
        hdr.tc_code = 0;
        hdr.packet_id = id;
        hdr.hook = h;
        hdr.stack = 0;
    }
    // The first event of a packet carries its bytes; later ones only the header.
    emit::output(s, snap);
    id
}

/// A hook that only follows packets already tracked.
#[inline(always)]
fn on_tracked(skb: u64, h: u32, location: u64, end: bool) {
    if config::config().path() != 0 {
        tracked_hop::<Probe>(skb, h, location, end);
    }
}

/// Emits a hop for a tracked skb; `end` forgets it. Returns its id (0 when not tracked).
#[inline(always)]
fn tracked_hop<M: Mem>(skb: u64, h: u32, location: u64, end: bool) -> u64 {
    let Some(id) = tracked(skb) else { return 0 };
    if end {
        forget(skb);
    }
    let Some(s) = crate::maps::scratch() else { return id };
    let o = config::offsets();
    crate::skb::load::<M>(skb, o, s);
    emit_hop(s, skb, id, h, location, 0, crate::skb::device::<M>(skb, o, s), 0);
    id
}

/// A kernel function called with a followed packet (`ip` is the function's address).
#[inline(always)]
pub fn function_hop(skb: u64, ip: u64) {
    on_tracked(skb, hook::FUNCTION, ip, false);
}

/// A tc observer passed by a followed packet (`code` says direction and position).
#[inline(always)]
pub fn tc_hop(skb: u64, code: u32) {
    if config::config().path() == 0 {
        return;
    }
    let Some(id) = tracked(skb) else { return };
    let Some(s) = crate::maps::scratch() else { return };
    let o = config::offsets();
    crate::skb::load::<Probe>(skb, o, s);
    emit_hop(s, skb, id, hook::TC, 0, 0, crate::skb::device::<Probe>(skb, o, s), code);
}

/// The packet id of a tracked skb, forgetting it (its path ends); 0 when not tracked.
#[inline(always)]
pub fn untrack(skb: u64) -> u64 {
    let id = tracked(skb).unwrap_or(0);
    if id != 0 {
        forget(skb);
    }
    id
}

/// The packet id of `skb` when it is followed. No hash lookup while nothing is.
#[inline(always)]
#[expect(clippy::needless_borrows_for_generic_args, reason = "map keys stay borrowed as written: the eBPF code is kept as the verifier accepted it")]
fn tracked(skb: u64) -> Option<u64> {
    let live = PATH_LIVE.get_ptr(0)?;
    // SAFETY: a u64 in a map value, written only with atomic adds.
    if unsafe { core::ptr::read_volatile(live) } == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once.
    unsafe { PATH_TRACK.get(&skb) }.copied()
}

/// Starts following `skb`; false when the map refused it.
#[inline(always)]
#[expect(clippy::needless_borrows_for_generic_args, reason = "map keys stay borrowed as written: the eBPF code is kept as the verifier accepted it")]
fn track(skb: u64, id: u64) -> bool {
    // Counted first: a hook on another CPU must not skip a lookup that would hit.
    live_add(1);
    if PATH_TRACK.insert(&skb, &id, 0).is_err() {
        live_add(u64::MAX);
        return false;
    }
    true
}

/// Stops following `skb` (only a remove that found it is subtracted).
#[inline(always)]
#[expect(clippy::needless_borrows_for_generic_args, reason = "map keys stay borrowed as written: the eBPF code is kept as the verifier accepted it")]
fn forget(skb: u64) {
    if PATH_TRACK.remove(&skb).is_ok() {
        live_add(u64::MAX);
    }
}

/// Adds `n` (wrapping: `u64::MAX` subtracts one) to `PATH_LIVE`, atomically: every CPU shares it.
#[inline(always)]
fn live_add(n: u64) {
    if let Some(p) = PATH_LIVE.get_ptr_mut(0) {
        // SAFETY: an aligned u64 in a map value that lives as long as the program. An atomic
        // add (BPF_XADD) in asm: the BPF target has no `AtomicU64::fetch_add`.
        unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {n}", p = in(reg) p, n = in(reg) n, options(nostack)) };
    }
}

/// A header-only path event; `dev` is (ifindex, netns) from `skb::device`, which wrote the
/// device's name into the header; `tc_code` the tc observer code.
#[expect(clippy::too_many_arguments, reason = "the event's fields")]
#[inline(always)]
pub fn emit_hop(s: *mut Scratch, skb: u64, id: u64, h: u32, location: u64, reason: u32, dev: (u32, u32), tc_code: u32) {
    let (ifindex, netns) = dev;
    // SAFETY: this CPU's scratch.
    unsafe {
        let hdr = &mut (*s).hdr;
        hdr.ts_ns = aya_ebpf::helpers::bpf_ktime_get_ns();
        hdr.location = location;
        hdr.skb = skb;
        hdr.reason = reason;
        hdr.ifindex = ifindex;
        hdr.netns = netns;
        hdr.len = 0;
        hdr.cap_len = 0;
        hdr.protocol = 0;
        hdr.linktype = 0;
        hdr.kind = kind::PATH;
        hdr.nf_slot = 0;
        hdr.tc_code = tc_code;
        hdr.packet_id = id;
        hdr.hook = h;
        hdr.stack = 0;
        hdr.ct_flags = 0;
    }
    emit::output(s, 0);
}

#[inline(always)]
fn next_id() -> u64 {
    let Some(p) = PATH_SEQ.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's slot.
    let n = unsafe {
        *p += 1;
        *p
    };
    // SAFETY: no preconditions.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
    (cpu << 48) | (n & ((1 << 48) - 1))
}
