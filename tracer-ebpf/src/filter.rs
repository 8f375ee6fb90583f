//! The in-kernel filter: interface patterns, and a bounded classic-BPF interpreter that runs the
//! program libpcap compiled from the user's tcpdump expression. Evaluating it here, before
//! counting, is what makes the totals exact for the expression.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_loop,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use tracer_common::{CbpfInsn, IFNAMSIZ, IfacePattern, MAX_CAPTURE, MAX_FILTER_INSNS, MAX_IFACE_PATTERNS, PodIfKey, linktype};

use crate::emit::Scratch;

/// Ethernet program at [0, MAX), raw-IP program at [MAX, 2*MAX).
#[map(name = "FILTER_INSNS")]
static FILTER_INSNS: Array<CbpfInsn> = Array::with_max_entries(2 * MAX_FILTER_INSNS, 0);

#[map(name = "IFACE_PATTERNS")]
static IFACE_PATTERNS: Array<IfacePattern> = Array::with_max_entries(MAX_IFACE_PATTERNS, 0);

/// `--pod`: the pods' network namespaces (inode), their host-side interfaces and their IPs
/// (IPv4 as IPv4-mapped IPv6). A drop is the pods' when any of them matches.
#[map(name = "POD_NETNS")]
static POD_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "POD_IFACES")]
static POD_IFACES: HashMap<PodIfKey, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "POD_ADDRS")]
static POD_ADDRS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(1024, 0);

/// True when the drop happened in a selected pod's namespace, on its host-side interface, or
/// the packet's source or destination address is one of its IPs. `cap` captured bytes of
/// link type `lt` are in scratch.
#[inline(always)]
pub fn pod_matches(ifindex: u32, netns: u32, lt: u8, cap: u32) -> bool {
    // SAFETY: lookups by value; the maps hold plain bytes.
    unsafe {
        if POD_NETNS.get(&netns).is_some() || POD_IFACES.get(&PodIfKey { netns, ifindex }).is_some() {
            return true;
        }
    }
    let mut l3 = 0u32;
    if lt == linktype::ETHERNET {
        let Some(mut ethertype) = load(12, H, cap) else { return false };
        l3 = 14;
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            let Some(inner) = load(16, H, cap) else { return false };
            ethertype = inner;
            l3 = 18;
        }
        if ethertype != 0x0800 && ethertype != 0x86dd {
            return false;
        }
    }
    let Some(first) = load(l3, B, cap) else { return false };
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
    let Some(s) = crate::emit::scratch() else { return false };
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
    unsafe { POD_ADDRS.get(&key).is_some() }
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

/// Interpreter state. It lives in a per-CPU map, not on the stack: the verifier does not track
/// map contents, so every `bpf_loop` step verifies once instead of once per reachable state.
#[repr(C)]
struct Vm {
    a: u32,
    x: u32,
    pc: u32,
    len: u32,
    base: u32,
    caplen: u32,
    wirelen: u32,
    /// 0 = reject, non-zero = accept (classic BPF return value).
    ret: u32,
    mem: [u32; 16],
}

#[map(name = "FILTER_VM")]
static FILTER_VM: PerCpuArray<Vm> = PerCpuArray::with_max_entries(1, 0);

/// Runs the program for `linktype_base` (0 or MAX_FILTER_INSNS) of `len` instructions over the
/// `caplen` captured bytes in scratch. Classic BPF only jumps forward, so `len` steps suffice.
#[inline(always)]
pub fn cbpf_accepts(base: u32, len: u32, caplen: u32, wirelen: u32) -> bool {
    let Some(vm) = FILTER_VM.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's slot; the program does not nest on one CPU.
    unsafe {
        *vm = Vm { a: 0, x: 0, pc: 0, len, base, caplen, wirelen, ret: 0, mem: [0; 16] };
    }
    // SAFETY: `step` has the callback signature bpf_loop expects.
    let r = unsafe { bpf_loop(MAX_FILTER_INSNS, step as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above.
    r >= 0 && unsafe { (*vm).ret } != 0
}

const STOP: i64 = 1;
const CONTINUE: i64 = 0;

// Classic BPF encoding (linux/filter.h, linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;
const SRC_X: u16 = 0x08;

extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
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
    let (code, k) = (insn.code, insn.k);
    vm.pc += 1;
    match code & 0x07 {
        LD => {
            let v = match code & 0xe0 {
                IMM => Some(k),
                ABS => load(k, code & 0x18, vm.caplen),
                IND => load(vm.x.wrapping_add(k), code & 0x18, vm.caplen),
                MEM => Some(vm.mem[(k & 15) as usize]),
                LEN => Some(vm.wirelen),
                _ => None,
            };
            match v {
                Some(v) => vm.a = v,
                None => return reject(vm),
            }
        }
        LDX => {
            let v = match code & 0xe0 {
                IMM => Some(k),
                MEM => Some(vm.mem[(k & 15) as usize]),
                LEN => Some(vm.wirelen),
                MSH => load(k, B, vm.caplen).map(|b| (b & 0x0f) << 2),
                _ => None,
            };
            match v {
                Some(v) => vm.x = v,
                None => return reject(vm),
            }
        }
        ST => vm.mem[(k & 15) as usize] = vm.a,
        STX => vm.mem[(k & 15) as usize] = vm.x,
        ALU => {
            let src = if code & SRC_X != 0 { vm.x } else { k };
            vm.a = match code & 0xf0 {
                0x00 => vm.a.wrapping_add(src),
                0x10 => vm.a.wrapping_sub(src),
                0x20 => vm.a.wrapping_mul(src),
                0x30 => {
                    if src == 0 {
                        return reject(vm);
                    }
                    vm.a / src
                }
                0x40 => vm.a | src,
                0x50 => vm.a & src,
                0x60 => vm.a.wrapping_shl(src),
                0x70 => vm.a.wrapping_shr(src),
                0x80 => vm.a.wrapping_neg(),
                0x90 => {
                    if src == 0 {
                        return reject(vm);
                    }
                    vm.a % src
                }
                0xa0 => vm.a ^ src,
                _ => return reject(vm),
            };
        }
        JMP => {
            let src = if code & SRC_X != 0 { vm.x } else { k };
            let off = match code & 0xf0 {
                0x00 => k,
                op => {
                    let taken = match op {
                        0x10 => vm.a == src,
                        0x20 => vm.a > src,
                        0x30 => vm.a >= src,
                        0x40 => vm.a & src != 0,
                        _ => return reject(vm),
                    };
                    u32::from(if taken { insn.jt } else { insn.jf })
                }
            };
            vm.pc = vm.pc.wrapping_add(off);
        }
        RET => {
            vm.ret = match code & 0x18 {
                0x00 => k,
                0x08 => vm.x,
                _ => vm.a,
            };
            return STOP;
        }
        MISC => {
            if code & 0xf8 == 0 {
                vm.x = vm.a;
            } else {
                vm.a = vm.x;
            }
        }
        _ => return reject(vm),
    }
    CONTINUE
}

#[inline(always)]
fn reject(vm: &mut Vm) -> i64 {
    vm.ret = 0;
    STOP
}

/// A big-endian packet load; out of the captured bytes means "no match", as in the kernel.
#[inline(always)]
fn load(off: u32, size: u16, caplen: u32) -> Option<u32> {
    let n = match size {
        W => 4,
        H => 2,
        B => 1,
        _ => return None,
    };
    if off >= caplen || n > caplen - off {
        return None;
    }
    let s: *const Scratch = crate::emit::scratch()?;
    let i = (off as usize) & (MAX_CAPTURE - 1);
    // SAFETY: i + 4 ≤ MAX_CAPTURE + CAPTURE_SLACK, inside the per-CPU scratch value.
    let p = unsafe { (*s).data.as_ptr().add(i) };
    let b = |j: usize| u32::from(unsafe { *p.add(j) });
    Some(match n {
        4 => (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3),
        2 => (b(0) << 8) | b(1),
        _ => b(0),
    })
}
