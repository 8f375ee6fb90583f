//! What every probe does last: count (exact per-CPU counters, `DROP_STATS` behind a per-CPU
//! cache), spend the event budget, fill the scratch record's header and send it to the ring.
use aya_ebpf::bindings::BPF_NOEXIST;
use tracer_common::{DropKey, DropState, EVENT_HEADER_LEN, EventBudget, MAX_CAPTURE, PacketEvent, counter};

use crate::maps::{COUNTERS, DROP_STATE, DROP_STATS, EVENTS, Scratch};

#[inline(always)]
pub fn count(index: u32) {
    count_n(index, 1);
}

#[inline(always)]
pub fn count_n(index: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs on one CPU do not run concurrently with themselves.
        unsafe { *p += n };
    }
}

/// The fields every packet event carries.
#[inline(always)]
pub fn fill(h: &mut PacketEvent, skb: u64, location: u64, reason: u32, seen: &crate::capture::Seen, cap: u32, kind: u8) {
    // SAFETY: no preconditions.
    h.ts_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    h.location = location;
    h.skb = skb;
    h.reason = reason;
    h.ifindex = seen.ifindex;
    h.netns = seen.netns;
    h.len = seen.wire_len;
    h.cap_len = cap;
    h.protocol = seen.protocol;
    h.linktype = seen.linktype;
    h.kind = kind;
    // `h.ifname`: `skb::device` wrote it.
    // The drop probe fills the conntrack and skb facts after this; other events carry none.
    h.ct_flags = 0;
    h.skb_facts = 0;
}


/// This CPU's drop-probe state (one lookup for its counters, cache and budget).
#[inline(always)]
pub fn drop_state() -> Option<&'static mut DropState> {
    // SAFETY: this CPU's slot; the drop probe does not nest on one CPU.
    DROP_STATE.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Adds one to the exact per-(reason, location, interface) total: into this CPU's cache when
/// the key repeats, else the cached count goes to the hash and the cache takes the new key.
#[inline(always)]
pub fn count_drop(c: &mut DropState, key: &DropKey) {
    if c.count != 0 && c.key == *key {
        c.count += 1;
        return;
    }
    if c.count != 0 {
        let old = c.key;
        add_drops(&old, c.count);
    }
    c.key = *key;
    c.count = 1;
}

/// Spends one event from this CPU's budget (refilled with elapsed time, at most a second's
/// worth); false when the rate limit holds the event back. `interval_ns == 0`: no limit. The
/// clock is read only when the jiffy `j` (the caller's `bpf_jiffies64`) changed since the last
/// top-up: under a flood the refill comes once per tick, not a clock read per drop.
#[inline(always)]
pub fn take_event_token(b: &mut EventBudget, interval_ns: u64, j: u64) -> bool {
    if interval_ns == 0 {
        return true;
    }
    if j != b.last_jiffies {
        // SAFETY: no preconditions.
        let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        let refill = now.wrapping_sub(b.last_ns);
        b.last_ns = now;
        b.last_jiffies = j;
        b.budget_ns = b.budget_ns.saturating_add(refill).min(1_000_000_000);
    }
    if b.budget_ns < interval_ns {
        return false;
    }
    b.budget_ns -= interval_ns;
    true
}

#[inline(always)]
#[expect(clippy::needless_borrows_for_generic_args, reason = "map keys stay borrowed as written: the eBPF code is kept as the verifier accepted it")]
fn add_drops(key: &DropKey, n: u64) {
    if let Some(p) = DROP_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value.
        unsafe { *p += n };
        return;
    }
    if DROP_STATS.insert(key, &n, u64::from(BPF_NOEXIST)).is_ok() {
        return;
    }
    // Lost a race with a nested insert of the same key, or the map is full.
    if let Some(p) = DROP_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value.
        unsafe { *p += n };
    } else {
        count_n(counter::STATS_FULL, n);
    }
}

/// Sends the scratch header plus `cap` packet bytes. Flags 0: the kernel wakes the reader only
/// for a record that lands in an empty ring (it reads the consumer position either way), so
/// an idle reader sleeps without polling and a busy one, which drains in batches, costs at
/// most one wakeup per batch.
#[inline(always)]
pub fn output(s: *const Scratch, cap: u32) {
    let size = EVENT_HEADER_LEN + (cap as usize & (MAX_CAPTURE * 2 - 1)).min(MAX_CAPTURE);
    // SAFETY: `size` ≤ header + MAX_CAPTURE, inside the scratch value.
    let bytes = unsafe { core::slice::from_raw_parts(s.cast::<u8>(), size) };
    // SAFETY: s is this CPU's scratch value.
    let path = unsafe { (*s).hdr.kind } == tracer_common::kind::PATH;
    let (ok, lost) = if path { (counter::PATH_EMITTED, counter::PATH_LOST) } else { (counter::EMITTED, counter::LOST) };
    count(if EVENTS.output::<[u8]>(bytes, 0).is_ok() { ok } else { lost });
}
