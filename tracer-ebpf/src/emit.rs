//! Maps shared by every probe: the event ring buffer, exact per-CPU counters and the per-CPU
//! scratch record events are built in (too big for the 512-byte stack).
use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{CAPTURE_SLACK, DropKey, EVENT_HEADER_LEN, MAX_CAPTURE, PacketEvent, counter};

#[repr(C)]
pub struct Scratch {
    pub hdr: PacketEvent,
    pub data: [u8; MAX_CAPTURE + CAPTURE_SLACK],
}

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map(name = "DROP_STATS")]
static DROP_STATS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs on one CPU do not run concurrently with themselves.
        unsafe { *p += 1 };
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
    h.ifname = seen.ifname;
}

#[inline(always)]
pub fn scratch() -> Option<*mut Scratch> {
    SCRATCH.get_ptr_mut(0)
}

/// Adds one to the exact per-(reason, location, interface) total.
#[inline(always)]
pub fn count_drop(key: &DropKey) {
    if let Some(p) = DROP_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value.
        unsafe { *p += 1 };
        return;
    }
    if DROP_STATS.insert(key, &1, u64::from(BPF_NOEXIST)).is_ok() {
        return;
    }
    // Lost a race with a nested insert of the same key, or the map is full.
    if let Some(p) = DROP_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value.
        unsafe { *p += 1 };
    } else {
        count(counter::STATS_FULL);
    }
}

/// Sends the scratch header plus `cap` packet bytes. No wakeup: the reader polls, which keeps
/// the per-event cost in the dropping CPU low (see bench/README).
#[inline(always)]
pub fn output(s: *const Scratch, cap: u32) {
    let size = EVENT_HEADER_LEN + (cap as usize & (MAX_CAPTURE * 2 - 1)).min(MAX_CAPTURE);
    // SAFETY: `size` ≤ header + MAX_CAPTURE, inside the scratch value.
    let bytes = unsafe { core::slice::from_raw_parts(s.cast::<u8>(), size) };
    // SAFETY: s is this CPU's scratch value.
    let path = unsafe { (*s).hdr.kind } == tracer_common::kind::PATH;
    let (ok, lost) = if path { (counter::PATH_EMITTED, counter::PATH_LOST) } else { (counter::EMITTED, counter::LOST) };
    count(if EVENTS.output::<[u8]>(bytes, u64::from(BPF_RB_NO_WAKEUP)).is_ok() { ok } else { lost });
}
