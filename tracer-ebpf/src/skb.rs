//! Reading kernel structs through offsets from BTF (no CO-RE in Rust eBPF).
use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use tracer_common::{PacketEvent, SKB_SPAN_MAX, ct_flags, skb_facts};

use crate::maps::{DEV_CACHE, DEV_CACHE_WAYS, Scratch};

/// How a probe reads the skb and the structs it points to. A tp_btf program gets the skb as a
/// typed pointer: with the offsets as load-time constants (`config::Offs`, immediates the
/// loader writes, so the verifier knows them) it loads fields directly, one instruction each
/// whose faults the JIT catches, where a raw tracepoint's plain number needs a helper call per
/// read (or per span, `load`).
pub trait Mem {
    const DIRECT: bool;
}

/// tp_btf: direct loads (`Mem`).
pub struct Btf;
/// Raw tracepoints: `bpf_probe_read_kernel`.
pub struct Probe;

impl Mem for Btf {
    const DIRECT: bool = true;
}

impl Mem for Probe {
    const DIRECT: bool = false;
}

/// A scalar field (or a pointer to a struct the kernel's BTF names) at `base + off`, as `M`
/// reads it; a missing field (`u32::MAX`), a null base or a failed read yields `None`.
#[inline(always)]
fn get<M: Mem, T: Copy>(base: u64, off: u32) -> Option<T> {
    if !M::DIRECT {
        return read(base, off);
    }
    if base == 0 || off == u32::MAX {
        return None;
    }
    // SAFETY: a BTF pointer plus a constant offset of a field of its struct: the verifier
    // checks the access against the kernel's BTF and the JIT turns a fault into a zero.
    Some(unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const T) })
}

/// A field the loader always has an offset for (`need` in tracer/src/kernel/btf.rs: a kernel
/// without it is refused), as `M` reads it; 0 when unreadable. Through a typed pointer there
/// is nothing to check: the JIT turns a load from a null base into 0. On a flood every drop
/// reads a dozen of these, and `get`'s checks were a third of their instructions.
#[inline(always)]
fn must<M: Mem, T: Copy + Default>(base: u64, off: u32) -> T {
    if M::DIRECT {
        // SAFETY: as in `get`: a member of the pointer's struct at a constant offset.
        return unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const T) };
    }
    read(base, off).unwrap_or_default()
}

/// `must` for an skb field (from the span `load` copied, where there is one).
#[inline(always)]
fn must_field<M: Mem, T: Copy + Default>(skb: u64, o: &crate::config::Offs, s: *const Scratch, off: u32) -> T {
    if M::DIRECT || o.skb_span_len() == 0 {
        return must::<M, T>(skb, off);
    }
    field::<M, T>(skb, o, s, off).unwrap_or_default()
}

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
}

/// `skb->protocol` (the ethertype, network order), 0 when unreadable: events only carry it.
#[inline(always)]
pub fn protocol<M: Mem>(skb: u64, o: &crate::config::Offs, s: *const Scratch) -> u16 {
    field::<M, u16>(skb, o, s, o.skb_protocol()).unwrap_or(0)
}

const UNSET_HEADER: u16 = 0xffff;
const ETH_HLEN: u16 = 14;

/// How long a cached device is trusted: 12 ticks, 48 ms at Debian's HZ=250 (12–120 ms for
/// HZ 1000–100). Jiffies, not the clock: `bpf_jiffies64` is inlined, a clock read is a call.
pub const DEV_CACHE_JIFFIES: u64 = 12;

/// Copies the skb's field span (`Offsets::skb_span_*`) into this CPU's scratch with one read;
/// `field` then takes fields from there. Every probe run that reads skb fields calls it first.
#[inline(always)]
pub fn load<M: Mem>(skb: u64, o: &crate::config::Offs, s: *mut Scratch) {
    if M::DIRECT || o.skb_span_len() == 0 || skb == 0 {
        return;
    }
    let n = ((o.skb_span_len() - 1) & (SKB_SPAN_MAX as u32 - 1)) + 1;
    // SAFETY: n ≤ SKB_SPAN_MAX fits the scratch span; the helper checks the address (and zeroes
    // the copy when it fails: every field then reads as absent or 0).
    unsafe { generated::bpf_probe_read_kernel((*s).skb.as_mut_ptr().cast(), n, (skb + u64::from(o.skb_span_start())) as *const _) };
}

/// An skb field at offset `off`: from the span `load` copied, or read on its own when the
/// kernel's fields lie too far apart for one span.
#[inline(always)]
fn field<M: Mem, T: Copy>(skb: u64, o: &crate::config::Offs, s: *const Scratch, off: u32) -> Option<T> {
    if M::DIRECT || o.skb_span_len() == 0 {
        return get::<M, T>(skb, off);
    }
    if off == u32::MAX {
        return None;
    }
    let rel = off.wrapping_sub(o.skb_span_start()) as usize;
    if rel + size_of::<T>() > SKB_SPAN_MAX {
        return None;
    }
    // SAFETY: in bounds of the span (checked above); kernel fields are naturally aligned and
    // the span starts 8-aligned.
    Some(unsafe { (*s).skb.as_ptr().cast::<u8>().add(rel).cast::<T>().read() })
}

/// The device and namespace of a packet, (ifindex, netns): from `skb->dev`, else from
/// `skb->sk`. The device's name goes straight into the scratch header (`hdr.ifname`), where
/// the filters, the drop totals' key and events read it: carried by value it would be moved a
/// byte at a time through every caller. `load` ran.
#[inline(always)]
pub fn device<M: Mem>(skb: u64, o: &crate::config::Offs, s: *mut Scratch) -> (u32, u32) {
    device_of::<M>(skb, dev::<M>(skb, o, s), o, s)
}

/// `skb->dev` (0 without one); `load` ran.
#[inline(always)]
pub fn dev<M: Mem>(skb: u64, o: &crate::config::Offs, s: *const Scratch) -> u64 {
    must_field::<M, u64>(skb, o, s, o.skb_dev())
}

/// `device` for the skb's `dev` read already.
#[inline(always)]
pub fn device_of<M: Mem>(skb: u64, dev: u64, o: &crate::config::Offs, s: *mut Scratch) -> (u32, u32) {
    // SAFETY: this CPU's scratch; the name is 8-aligned in the header.
    let name = unsafe { &mut (*s).hdr.ifname };
    if dev == 0 {
        *name = [0; tracer_common::IFNAMSIZ];
        return (0, sk_netns::<M>(field::<M, u64>(skb, o, s, o.skb_sk()).unwrap_or(0), o));
    }
    let ifindex = must::<M, u32>(dev, o.dev_ifindex());
    if M::DIRECT {
        // A typed pointer: the name is two loads, no helper call, so no cache either (it
        // would cost as much as the loads, and a tp_btf program may not hash the pointer).
        direct_name(dev, o, name);
        let net: u64 = get::<M, u64>(dev, o.dev_nd_net()).unwrap_or(0);
        let netns = get::<M, u32>(net, o.net_ns_inum()).unwrap_or(0);
        if netns == 0 {
            return (ifindex, sk_netns::<M>(field::<M, u64>(skb, o, s, o.skb_sk()).unwrap_or(0), o));
        }
        return (ifindex, netns);
    }
    // SAFETY: no preconditions.
    let now = unsafe { generated::bpf_jiffies64() };
    // Fibonacci hashing of the address: its top bits pick the way.
    let way = (dev.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - DEV_CACHE_WAYS.trailing_zeros())) as u32;
    let cache = DEV_CACHE.get_ptr_mut(way);
    if let Some(c) = cache {
        // SAFETY: this CPU's slot; probes do not nest on one CPU.
        let c = unsafe { &*c };
        if c.dev == dev && c.ifindex == ifindex && now.wrapping_sub(c.at_jiffies) < DEV_CACHE_JIFFIES {
            copy_name(name, &c.ifname);
            return (ifindex, c.netns);
        }
    }
    // The name is an array: one helper read (a miss only) rather than sixteen byte loads; a
    // failed read leaves it zeroed.
    if o.dev_name() == u32::MAX {
        *name = [0; tracer_common::IFNAMSIZ];
    } else {
        // SAFETY: IFNAMSIZ bytes into the header's name; the helper checks the address.
        unsafe { generated::bpf_probe_read_kernel(name.as_mut_ptr().cast(), tracer_common::IFNAMSIZ as u32, (dev + u64::from(o.dev_name())) as *const _) };
    }
    let net: u64 = get::<M, u64>(dev, o.dev_nd_net()).unwrap_or(0);
    let netns = get::<M, u32>(net, o.net_ns_inum()).unwrap_or(0);
    if netns == 0 {
        return (ifindex, sk_netns::<M>(field::<M, u64>(skb, o, s, o.skb_sk()).unwrap_or(0), o));
    }
    if let Some(c) = cache {
        // SAFETY: as above.
        let c = unsafe { &mut *c };
        c.dev = dev;
        c.at_jiffies = now;
        c.ifindex = ifindex;
        c.netns = netns;
        copy_name(&mut c.ifname, name);
    }
    (ifindex, netns)
}

/// `dev->name` through a typed pointer (tp_btf), as two u64 loads within the array.
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "the header's name is 8-aligned")]
fn direct_name(dev: u64, o: &crate::config::Offs, name: &mut [u8; tracer_common::IFNAMSIZ]) {
    let d = name.as_mut_ptr().cast::<u64>();
    let words = [must::<Btf, u64>(dev, o.dev_name()), must::<Btf, u64>(dev, o.dev_name() + 8)];
    // SAFETY: 16 bytes at an 8-aligned place.
    unsafe {
        d.write(words[0]);
        d.add(1).write(words[1]);
    }
}

/// Copies a device name between two 8-aligned places with two u64 moves: an assignment
/// between places the compiler cannot prove apart becomes a call to a byte-wise `memmove`.
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "every name it copies is 8-aligned (see the safety note)")]
pub fn copy_name(dst: &mut [u8; tracer_common::IFNAMSIZ], src: &[u8; tracer_common::IFNAMSIZ]) {
    let (d, s) = (dst.as_mut_ptr().cast::<u64>(), src.as_ptr().cast::<u64>());
    // SAFETY: both are 16 bytes at 8-aligned offsets of 8-aligned structs (the header's and
    // `DevCache`'s names, `DropKey`'s).
    unsafe {
        d.write(s.read());
        d.add(1).write(s.add(1).read());
    }
}

/// A drop event's `skb->mark` and conntrack facts, into its header (`ct_flags` says which
/// were read). `_nfct` is the entry's address with the `ip_conntrack_info` in its low 3 bits:
/// a plain number, so the entry's fields take helper reads even in a tp_btf program. The
/// skb holds a reference to the entry: it is alive here.
#[inline(always)]
pub fn conntrack<M: Mem>(skb: u64, o: &crate::config::Offs, h: &mut PacketEvent) {
    let mut flags = 0;
    if let Some(mark) = get::<M, u32>(skb, o.skb_mark()) {
        h.mark = mark;
        flags |= ct_flags::MARK;
    }
    let nfct: u64 = get::<M, u64>(skb, o.skb_nfct()).unwrap_or(0);
    if nfct != 0 {
        flags |= ct_flags::NFCT;
        h.ct_info = (nfct & 7) as u8;
        let entry = nfct & !7;
        if let Some(status) = read::<u64>(entry, o.ct_status()) {
            h.ct_status = status as u32;
            flags |= ct_flags::STATUS;
        }
        if let Some(mark) = read::<u32>(entry, o.ct_mark()) {
            h.ct_mark = mark;
            flags |= ct_flags::CT_MARK;
        }
        if let Some(zone) = read::<u16>(entry, o.ct_zone()) {
            h.ct_zone = zone;
            flags |= ct_flags::ZONE;
        }
    }
    h.ct_flags = flags;
}

/// The skb facts of a drop event: the MTU of the routed-to device (else the skb's own), GSO
/// size and segments from `skb_shared_info` (at `head + end`), `pkt_type` (a bitfield:
/// byte and shift from BTF). Each read only where BTF gave its offsets; `head` and `dev` come
/// from the span `load` already copied.
#[inline(always)]
pub fn facts<M: Mem>(skb: u64, o: &crate::config::Offs, s: *const Scratch, h: &mut PacketEvent, direct: bool) {
    let mut flags = 0;
    // `_skb_refdst`: a `dst_entry *` with the "no reference" flag in bit 0; a plain number,
    // read through a typed view (`direct`: loads, no helper calls) or with helper reads.
    let dst = get::<M, u64>(skb, o.skb_refdst()).unwrap_or(0) & !1;
    let route_mtu = if direct {
        let routed = get::<Btf, u64>(crate::cast::dst_entry(dst), o.dst_dev()).unwrap_or(0);
        get::<Btf, u32>(routed, o.dev_mtu())
    } else {
        read::<u64>(dst, o.dst_dev()).and_then(|routed| read::<u32>(routed, o.dev_mtu()))
    };
    if let Some(mtu) = route_mtu {
        h.mtu = mtu;
        flags |= skb_facts::MTU | skb_facts::MTU_OF_ROUTE;
    } else if let Some(mtu) = field::<M, u64>(skb, o, s, o.skb_dev()).and_then(|dev| get::<M, u32>(dev, o.dev_mtu())) {
        h.mtu = mtu;
        flags |= skb_facts::MTU;
    }
    let head = field::<M, u64>(skb, o, s, o.skb_head()).unwrap_or(0);
    if let Some(end) = get::<M, u32>(skb, o.skb_end())
        && head != 0
    {
        let shinfo = head + u64::from(end);
        // gso_size then gso_segs: two u16 members (a view loads each on its own).
        let gso = if direct {
            let view = crate::cast::shared_info(shinfo);
            get::<Btf, u16>(view, o.shinfo_gso_size()).zip(get::<Btf, u16>(view, o.shinfo_gso_size().saturating_add(2)))
        } else {
            read::<u32>(shinfo, o.shinfo_gso_size()).map(|g| (g as u16, (g >> 16) as u16))
        };
        if let Some((size, segs)) = gso {
            h.gso_size = size;
            h.gso_segs = segs;
            flags |= skb_facts::GSO;
        }
    }
    if let Some(b) = get::<M, u8>(skb, o.skb_pkt_type()) {
        h.pkt_type = (b >> (o.skb_pkt_type_shift() & 7)) & 7;
        flags |= skb_facts::PKT_TYPE;
    }
    h.skb_facts = flags;
}

/// The `input` function of the skb's route (0 without a route or where BTF lacks the
/// offsets): `ip_forward` or `ip6_forward` for a packet being forwarded. `direct`: through a
/// typed view (loads), else a helper read.
#[inline(always)]
pub fn route_input<M: Mem>(skb: u64, o: &crate::config::Offs, direct: bool) -> u64 {
    let dst = get::<M, u64>(skb, o.skb_refdst()).unwrap_or(0) & !1;
    if dst == 0 {
        return 0;
    }
    let input = if direct { get::<Btf, u64>(crate::cast::dst_entry(dst), o.dst_input()) } else { read::<u64>(dst, o.dst_input()) };
    input.unwrap_or(0)
}

/// The namespace inode of a socket (0 when unreadable).
#[inline(always)]
pub fn sk_netns<M: Mem>(sk: u64, o: &crate::config::Offs) -> u32 {
    let net: u64 = get::<M, u64>(sk, o.sk_net()).unwrap_or(0);
    get::<M, u32>(net, o.net_ns_inum()).unwrap_or(0)
}

/// Locates the packet bytes (`load` ran). A MAC header counts only when it sits exactly one
/// Ethernet header before the network header (tunnels and raw-IP devices have none).
#[inline(always)]
pub fn packet<M: Mem>(skb: u64, o: &crate::config::Offs, s: *const Scratch) -> Option<Packet> {
    let head: u64 = must_field::<M, u64>(skb, o, s, o.skb_head());
    let data: u64 = must_field::<M, u64>(skb, o, s, o.skb_data());
    if head == 0 || data == 0 {
        return None;
    }
    let len: u32 = must_field::<M, u32>(skb, o, s, o.skb_len());
    let data_len: u32 = must_field::<M, u32>(skb, o, s, o.skb_data_len());
    let mac: u16 = must_field::<M, u16>(skb, o, s, o.skb_mac_header());
    let nh: u16 = must_field::<M, u16>(skb, o, s, o.skb_network_header());
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
    })
}
