//! tc programs that play Cilium's part in the tests: `cil_from_container` drops (TC_ACT_SHOT)
//! packets whose destination is in `POLICY_DENY` (IPv4) or `POLICY_DENY6` (IPv6),
//! `cil_to_container` only passes.
//! Also one do-nothing program per tracing attach kind (`probe_*`): the testbed's kernel probes
//! (`integration_tests::kernel`) load and attach them to learn what the running kernel allows.
//!
//! "Pass" is TC_ACT_UNSPEC (-1), which is also TCX_NEXT: in both attach modes the next program
//! on the hook still runs (a cls_bpf filter chain or a tcx chain), and the packet goes on when
//! there is none. A test can therefore stack a pass-through program before a dropping one.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    macros::{btf_tracepoint, classifier, fentry, kprobe, map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, TcContext, TracePointContext},
};

/// Continue with the next program (TC_ACT_UNSPEC for cls_bpf, TCX_NEXT for tcx: both are -1).
const CONTINUE: i32 = -1;
const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Offset of the IPv4 destination address in an Ethernet frame.
const IPV4_DST: usize = ETH_HLEN + 16;
/// Offset of the IPv6 destination address in an Ethernet frame.
const IPV6_DST: usize = ETH_HLEN + 24;

/// IPv4 destinations to drop, keyed by the address as it sits in the packet (network order).
#[map(name = "POLICY_DENY")]
static POLICY_DENY: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// IPv6 destinations to drop, keyed by the address's 16 bytes.
#[map(name = "POLICY_DENY6")]
static POLICY_DENY6: HashMap<[u8; 16], u8> = HashMap::with_max_entries(1024, 0);

/// Per-program verdict counters, so a test can compare its drops with what the program did.
/// Index: `stat::*`.
#[map(name = "FIXTURE_STATS")]
static FIXTURE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

mod stat {
    /// Packets `cil_from_container` shot.
    pub const FROM_SHOT: u32 = 0;
    /// Packets `cil_from_container` let through.
    pub const FROM_PASSED: u32 = 1;
    /// Packets `cil_to_container` saw.
    pub const TO_PASSED: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[classifier]
pub fn cil_from_container(ctx: TcContext) -> i32 {
    if try_denied(&ctx).unwrap_or(false) {
        bump(stat::FROM_SHOT);
        TC_ACT_SHOT
    } else {
        bump(stat::FROM_PASSED);
        CONTINUE
    }
}

#[classifier]
pub fn cil_to_container(_ctx: TcContext) -> i32 {
    bump(stat::TO_PASSED);
    CONTINUE
}

// Kernel probes: attached for a moment to learn whether the kernel accepts the kind; they
// only return. The targets exist on every kernel the tests run on (`tcp_v4_rcv` has BTF and is
// not inlined; `kfree_skb` is the tracepoint the tracer uses).

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "tcp_v4_rcv")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn probe_raw_tp(_ctx: RawTracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

/// True when the frame's destination is in `POLICY_DENY` (IPv4) or `POLICY_DENY6` (IPv6).
#[expect(clippy::needless_borrows_for_generic_args, reason = "map keys stay borrowed as written: the eBPF code is kept as the verifier accepted it")]
fn try_denied(ctx: &TcContext) -> Result<bool, i64> {
    match u16::from_be(ctx.load::<u16>(12)?) {
        ETH_P_IP => {
            let dst = ctx.load::<u32>(IPV4_DST)?;
            // SAFETY: a lookup by value; the map holds plain bytes.
            Ok(unsafe { POLICY_DENY.get(&dst) }.is_some())
        }
        ETH_P_IPV6 => {
            let dst = ctx.load::<[u8; 16]>(IPV6_DST)?;
            // SAFETY: as above.
            Ok(unsafe { POLICY_DENY6.get(&dst) }.is_some())
        }
        _ => Ok(false),
    }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(p) = FIXTURE_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; a program does not run concurrently with itself on one CPU.
        unsafe { *p += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; a loop keeps the signature honest.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
