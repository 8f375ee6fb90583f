//! The in-kernel filter: interface patterns, and a bounded classic-BPF interpreter that runs the
//! program libpcap compiled from the user's tcpdump expression. Evaluating it here, before
//! counting, is what makes the totals exact for the expression.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_loop,
};
use tracer_common::{
    IFNAMSIZ, IfacePattern, MAX_CAPTURE, MAX_FILTER_INSNS, MAX_IFACE_PATTERNS, PodIfKey, linktype,
    cbpf::{self, Step, Vm},
};

use crate::maps::{FILTER_INSNS, FILTER_VM, IFACE_PATTERNS, POD_ADDRS, POD_IFACES, POD_NETNS, Scratch};

/// True when the drop happened in a selected pod's namespace, on its host-side interface, or
/// the packet's source or destination address is one of its IPs. `cap` captured bytes of
/// link type `lt` are in scratch.
#[inline(always)]
pub fn pod_matches(ifindex: u32, netns: u32, lt: u8, cap: u32) -> bool {
    // SAFETY: lookups by value; the maps hold plain bytes.
    unsafe {
        if POD_NETNS.get(netns).is_some() || POD_IFACES.get(PodIfKey { netns, ifindex }).is_some() {
            return true;
        }
    }
    let mut l3 = 0u32;
    if lt == linktype::ETHERNET {
        let Some(mut ethertype) = load(12, 2, cap) else { return false };
        l3 = 14;
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            let Some(inner) = load(16, 2, cap) else { return false };
            ethertype = inner;
            l3 = 18;
        }
        if ethertype != 0x0800 && ethertype != 0x86dd {
            return false;
        }
    }
    let Some(first) = load(l3, 1, cap) else { return false };
    let (src, len) = match first >> 4 {
        4 => (l3 + 12, 4),
        6 => (l3 + 8, 16),
        _ => return false,
    };
    addr_known(src, len, cap) || addr_known(src + len, len, cap)
}

/// Looks up the `len`-byte address at `off` of the captured bytes in `POD_ADDRS`.
#[inline(always)]
fn addr_known(off: u32, len: u32, cap: u32) -> bool {
    if off + len > cap {
        return false;
    }
    let Some(s) = crate::maps::scratch() else { return false };
    let mut key = [0u8; 16];
    // Offsets here are below 64 (link header + IP header fields): a mask the verifier can use.
    let base = (off as usize) & 63;
    // SAFETY: base + 16 < MAX_CAPTURE, inside the per-CPU scratch value.
    let p = unsafe { (*s).data.as_ptr().add(base) };
    if len == 4 {
        key[10] = 0xff;
        key[11] = 0xff;
        for i in 0..4 {
            // SAFETY: as above.
            key[12 + i] = unsafe { *p.add(i) };
        }
    } else {
        for (i, k) in key.iter_mut().enumerate() {
            // SAFETY: as above.
            *k = unsafe { *p.add(i) };
        }
    }
    // SAFETY: a lookup by value.
    unsafe { POD_ADDRS.get(key).is_some() }
}

/// True when `name` matches one of the first `n` patterns.
#[inline(always)]
pub fn iface_matches(name: &[u8; IFNAMSIZ], n: u32) -> bool {
    for i in 0..MAX_IFACE_PATTERNS {
        if i >= n {
            break;
        }
        let Some(p) = IFACE_PATTERNS.get(i) else { break };
        if pattern_matches(p, name) {
            return true;
        }
    }
    false
}

#[inline(always)]
#[expect(clippy::needless_range_loop, reason = "a constant-bound index loop over three arrays, as the verifier accepted it")]
fn pattern_matches(p: &IfacePattern, name: &[u8; IFNAMSIZ]) -> bool {
    for i in 0..IFNAMSIZ {
        if i as u32 >= p.len {
            // Exact patterns need the device name to end here too.
            return p.prefix != 0 || name[i] == 0;
        }
        if (name[i] ^ p.name[i]) & p.mask[i] != 0 {
            return false;
        }
    }
    true
}

/// Runs the program at `base` (0 or MAX_FILTER_INSNS) of `len` instructions over the `caplen`
/// captured bytes in scratch. The state lives in a per-CPU map, not on the stack: the verifier
/// does not track map contents, so each `bpf_loop` step verifies once instead of once per
/// reachable state. Classic BPF only jumps forward, so `len` steps suffice.
#[inline(always)]
pub fn cbpf_accepts(base: u32, len: u32, caplen: u32, wirelen: u32) -> bool {
    let Some(vm) = FILTER_VM.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's slot; the program does not nest on one CPU.
    unsafe { reset(&mut *vm, len, base, caplen, wirelen) };
    // SAFETY: `step_cb` has the callback signature bpf_loop expects.
    let r = unsafe { bpf_loop(MAX_FILTER_INSNS, step_cb as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above.
    r >= 0 && unsafe { (*vm).ret } != 0
}

/// A fresh VM, field by field: `*vm = Vm { .., ..Vm::default() }` compiles to a call of the BPF
/// `memset`, a byte loop (68 iterations on every drop the filter sees). Volatile word stores
/// keep LLVM from turning the scratch-memory loop back into that call.
#[inline(always)]
fn reset(vm: &mut Vm, len: u32, base: u32, caplen: u32, wirelen: u32) {
    vm.a = 0;
    vm.x = 0;
    vm.pc = 0;
    vm.len = len;
    vm.base = base;
    vm.caplen = caplen;
    vm.wirelen = wirelen;
    vm.ret = 0;
    for m in &mut vm.mem {
        // SAFETY: a valid, aligned u32 inside `vm`.
        unsafe { core::ptr::write_volatile(m, 0) };
    }
}

const STOP: i64 = 1;
const CONTINUE: i64 = 0;

extern "C" fn step_cb(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(vm) = FILTER_VM.get_ptr_mut(0) else { return STOP };
    // SAFETY: this CPU's slot, initialised by cbpf_accepts.
    let vm = unsafe { &mut *vm };
    if vm.pc >= vm.len || vm.pc >= MAX_FILTER_INSNS {
        vm.ret = 0;
        return STOP;
    }
    let Some(insn) = FILTER_INSNS.get(vm.base + vm.pc) else {
        vm.ret = 0;
        return STOP;
    };
    let caplen = vm.caplen;
    match cbpf::step(vm, insn, |off, width| load(off, width, caplen)) {
        Step::Continue => CONTINUE,
        Step::Stop => STOP,
    }
}

/// A big-endian packet load from scratch; out of the captured bytes means "no match".
#[inline(always)]
fn load(off: u32, width: u32, caplen: u32) -> Option<u32> {
    if off >= caplen || width > caplen - off {
        return None;
    }
    let s: *const Scratch = crate::maps::scratch()?;
    let i = (off as usize) & (MAX_CAPTURE - 1);
    // SAFETY: i + 4 ≤ MAX_CAPTURE + CAPTURE_SLACK, inside the per-CPU scratch value.
    let p = unsafe { (*s).data.as_ptr().add(i) };
    let b = |j: usize| u32::from(unsafe { *p.add(j) });
    Some(match width {
        4 => (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3),
        2 => (b(0) << 8) | b(1),
        _ => b(0),
    })
}
