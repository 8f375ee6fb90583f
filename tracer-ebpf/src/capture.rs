//! What every packet-reporting probe does first: read the packet's device and namespace,
//! then (when a filter needs them, or an event will carry them) its bytes into this CPU's
//! scratch record, applying every filter the user gave. Shared by the drop probe and the path
//! hooks so both select exactly the same packets.
use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use tracer_common::{DropState, IFNAMSIZ, MAX_CAPTURE, MAX_FILTER_INSNS, cast::DIRECT_MAX, linktype};

use crate::{
    cast, filter,
    maps::Scratch,
    skb::{self, Mem},
};

/// A packet that passed the filters. `cap` bytes are in the scratch data once `bytes` ran.
/// The device's name is in the scratch header (`skb::device`), or in the drop state's key when
/// `device_cached` found it there (`dev`: `DevRead::Cached`).
pub struct Seen {
    pub ifindex: u32,
    pub netns: u32,
    pub cap: u32,
    pub wire_len: u32,
    pub linktype: u8,
    pub protocol: u16,
    /// Where the bytes are (`skb::packet`), kept so an event can copy more of them later.
    pub start: u64,
    pub avail: u32,
    /// How `device_cached` found the device.
    pub dev: DevRead,
}

/// How the drop probe's device stage found the device (`device_cached`).
#[derive(Clone, Copy)]
pub enum DevRead {
    /// From the drop state's key (the name too: the scratch header does not have it).
    Cached,
    /// Read from the kernel's structs: the skb's `dev` (0: none), which the cache may take
    /// once the key holds what was read.
    Fresh(u64),
}

impl Seen {
    /// A packet on device `ifindex` in namespace `netns`, its bytes not located yet.
    #[inline(always)]
    pub fn on(ifindex: u32, netns: u32) -> Self {
        Self { ifindex, netns, cap: 0, wire_len: 0, linktype: linktype::RAW_IP, protocol: 0, start: 0, avail: 0, dev: DevRead::Fresh(0) }
    }
}

/// The device stage of the drop probe: `device`, but a drop on the device of the drop its
/// totals' key was last built from (`DropState::dev`, within `DEV_CACHE_JIFFIES` of reading
/// it) takes the key's name, index and namespace. Under a flood every drop is on one device,
/// and the four kernel structs' cache lines its fields sit in are then not touched again.
/// `Seen::dev` says what the caller stores once the key holds this drop's device.
#[inline(always)]
pub fn device_cached<M: Mem>(skb: u64, cfg: &crate::config::Cfg, o: &crate::config::Offs, s: *mut Scratch, st: &DropState, now: u64) -> Option<Seen> {
    skb::load::<M>(skb, o, s);
    let dev = skb::dev::<M>(skb, o, s);
    let hit = dev != 0 && dev == st.dev && now.wrapping_sub(st.dev_jiffies) < skb::DEV_CACHE_JIFFIES;
    // A hit leaves the name in the key (the scratch header gets it only for an event).
    let mut seen = if hit {
        accept(cfg, &st.key.ifname, st.key.ifindex, st.key.netns)?
    } else {
        let (ifindex, netns) = skb::device_of::<M>(skb, dev, o, s);
        // SAFETY: this CPU's scratch; `device_of` wrote the name.
        accept(cfg, unsafe { &(*s).hdr.ifname }, ifindex, netns)?
    };
    seen.dev = if hit { DevRead::Cached } else { DevRead::Fresh(dev) };
    Some(seen)
}

/// True when a filter reads the packet's device (its namespace, name, or, for `--pod`, index).
#[inline(always)]
pub fn filters_need_device(cfg: &crate::config::Cfg) -> bool {
    cfg.netns() != 0 || cfg.iface_patterns() != 0 || cfg.pod_filter() != 0
}

/// True when the filters need the packet's bytes (else they can wait for the event).
#[inline(always)]
pub fn filters_need_bytes(cfg: &crate::config::Cfg) -> bool {
    cfg.pod_filter() != 0 || cfg.filter_active() != 0
}

/// The device stage (`skb::load` ran): the packet's device, then the namespace and interface
/// filters. None when one rejects the packet.
#[inline(always)]
pub fn device<M: Mem>(skb: u64, cfg: &crate::config::Cfg, o: &crate::config::Offs, s: *mut Scratch) -> Option<Seen> {
    let (ifindex, netns) = skb::device::<M>(skb, o, s);
    // SAFETY: this CPU's scratch; `device` wrote the name.
    accept(cfg, unsafe { &(*s).hdr.ifname }, ifindex, netns)
}

/// The namespace and interface filters on a packet's device.
#[inline(always)]
fn accept(cfg: &crate::config::Cfg, name: &[u8; IFNAMSIZ], ifindex: u32, netns: u32) -> Option<Seen> {
    if cfg.netns() != 0 && netns != cfg.netns() {
        return None;
    }
    if cfg.iface_patterns() != 0 && !filter::iface_matches(name, cfg.iface_patterns()) {
        return None;
    }
    Some(Seen::on(ifindex, netns))
}

/// The bytes stage: `locate`, then `filters`. False when a filter rejects the packet.
#[inline(always)]
pub fn bytes<M: Mem>(skb: u64, cfg: &crate::config::Cfg, o: &crate::config::Offs, s: *mut Scratch, seen: &mut Seen) -> bool {
    locate::<M>(skb, o, s, seen);
    filters(cfg, s, seen)
}

/// Where the packet's bytes are (`skb::packet`), into `seen`; its `start` stays 0 where they
/// cannot be found.
#[inline(always)]
pub fn locate<M: Mem>(skb: u64, o: &crate::config::Offs, s: *const Scratch, seen: &mut Seen) {
    if let Some(p) = skb::packet::<M>(skb, o, s) {
        seen.wire_len = p.wire_len;
        seen.linktype = p.linktype;
        seen.start = p.start;
        seen.avail = p.avail;
    }
}

/// Copies what the filters read (`copy_len`, often a few dozen bytes: the snaplen's worth
/// waits for an event, see `copy`) of the located packet into scratch, unless the compiled
/// expression reads it in place (`Config::filter_direct`), then applies the pod and expression
/// filters. False when one rejects the packet.
#[inline(always)]
pub fn filters(cfg: &crate::config::Cfg, s: *mut Scratch, seen: &mut Seen) -> bool {
    if cfg.filter_direct() == 0 {
        copy_upto(cfg, s, seen, cfg.copy_len());
    }
    if cfg.pod_filter() != 0 && !filter::pod_matches(seen.ifindex, seen.netns, seen.linktype, seen.cap) {
        return false;
    }
    if cfg.filter_active() != 0 {
        let (base, len) = if seen.linktype == linktype::ETHERNET { (0, cfg.filter_eth_len()) } else { (MAX_FILTER_INSNS, cfg.filter_raw_len()) };
        if len == 0 {
            return false;
        }
        if cfg.filter_ebpf() != 0 {
            // Direct: the bytes the copy would have taken, read where they lie (one block of
            // filter code either way: the loader fills one placeholder per program).
            let (data, cap) = if cfg.filter_direct() != 0 {
                (cast::packet(seen.start), seen.avail.min(cfg.copy_len()))
            } else {
                // SAFETY: s is this CPU's scratch value; `cap` bytes of it are the packet's.
                (unsafe { (*s).data.as_ptr() }, seen.cap)
            };
            if crate::compiled::filter(data, cap, seen.wire_len, u32::from(seen.linktype)) == 0 {
                return false;
            }
        } else if !filter::cbpf_accepts(base, len, seen.cap, seen.wire_len) {
            return false;
        }
    }
    true
}

/// Copies the first `want` bytes of the located packet (those available) into scratch, unless
/// they are there already.
#[inline(always)]
fn copy(s: *mut Scratch, seen: &mut Seen, want: u32) {
    let n = seen.avail.min(want).min(MAX_CAPTURE as u32);
    if n <= seen.cap || seen.start == 0 {
        return;
    }
    // The verifier must see a non-zero, bounded length (6.1 rejects `n == 0` checks).
    let n = ((n - 1) & (MAX_CAPTURE as u32 - 1)) + 1;
    // SAFETY: n ≤ MAX_CAPTURE fits the scratch data array; the helper checks `start`.
    let r = unsafe { bpf_probe_read_kernel((*s).data.as_mut_ptr().cast(), n, seen.start as *const _) };
    if r == 0 {
        seen.cap = n;
    }
}

/// Copies the first `want` bytes as `copy` does, but with direct loads when the loader gave us
/// the typed view and they fit it (`cast`). Every filtered drop pays this for the filters'
/// window, so the helper call it saves is most of a flood's per-drop cost (and a good part
/// of an event's).
#[inline(always)]
fn copy_upto(cfg: &crate::config::Cfg, s: *mut Scratch, seen: &mut Seen, want: u32) {
    let n = seen.avail.min(want);
    if cfg.direct_bytes() != 0 && n as usize <= DIRECT_MAX {
        if n > seen.cap && seen.start != 0 {
            // SAFETY: this CPU's scratch data, at least DIRECT_MAX bytes.
            cast::copy(unsafe { (*s).data.as_mut_ptr() }, seen.start, n);
            seen.cap = n;
        }
        return;
    }
    copy(s, seen, want);
}

/// Locates the packet (if the filters did not) and copies `snaplen` bytes for an event.
#[inline(always)]
pub fn event_bytes<M: Mem>(skb: u64, cfg: &crate::config::Cfg, o: &crate::config::Offs, s: *mut Scratch, seen: &mut Seen) {
    if seen.start == 0 {
        locate::<M>(skb, o, s, seen);
    }
    seen.protocol = skb::protocol::<M>(skb, o, s);
    copy_upto(cfg, s, seen, cfg.snaplen());
}
