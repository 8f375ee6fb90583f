//! tc observers: classifier programs the loader places before each program on a hook (tcx
//! links ordered before each program, `cls_bpf` filters ahead of each filter) and after the last.
//! Each records "this skb passed observer (direction, position) on this interface" in the
//! per-CPU `TC_RING` and returns `TC_ACT_UNSPEC`, which is also `TCX_NEXT`: the next program runs
//! as if we were not there, so no verdict ever changes. The drop probe reads the ring back for
//! `TC_INGRESS`/TC_EGRESS drops: the program right after the last observer passed is the one that
//! shot the packet.
use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::classifier,
    programs::TcContext,
};
use tracer_common::{TC_RING_LEN, tc};

use crate::maps::TC_RING;

#[inline(always)]
fn observe(ctx: &TcContext, code: u32) -> i32 {
    // The context pointer is the kernel's `struct sk_buff *`: the same address the drop
    // tracepoint reports for this packet.
    let skb = ctx.skb.skb as u64;
    // SAFETY: a context field read the verifier rewrites (skb->dev->ifindex).
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if let Some(r) = TC_RING.get_ptr_mut(0) {
        // SAFETY: this CPU's ring; tc programs do not nest on one CPU within a hook run.
        let r = unsafe { &mut *r };
        let i = (r.head as usize) & (TC_RING_LEN - 1);
        r.head = r.head.wrapping_add(1);
        r.skb[i] = skb;
        r.ifindex[i] = ifindex;
        r.code[i] = code;
    }
    crate::path::tc_hop(skb, code);
    TC_ACT_UNSPEC
}

macro_rules! observers {
    ($($name:ident: $egress:literal, $pos:literal;)*) => {$(
        #[classifier]
        pub fn $name(ctx: TcContext) -> i32 {
            observe(&ctx, tc::code($egress, $pos))
        }
    )*};
}

// Names are `tracer_tc_{i,e}<position>`: short enough for the kernel's 15-character program
// names, and the prefix identifies leftovers of a killed run; one per `tc::POSITIONS` and
// direction (tracer/tests/object.rs checks they are all here).
observers! {
    tracer_tc_i0: false, 0; tracer_tc_i1: false, 1; tracer_tc_i2: false, 2; tracer_tc_i3: false, 3;
    tracer_tc_i4: false, 4; tracer_tc_i5: false, 5; tracer_tc_i6: false, 6; tracer_tc_i7: false, 7;
    tracer_tc_e0: true, 0; tracer_tc_e1: true, 1; tracer_tc_e2: true, 2; tracer_tc_e3: true, 3;
    tracer_tc_e4: true, 4; tracer_tc_e5: true, 5; tracer_tc_e6: true, 6; tracer_tc_e7: true, 7;
}

/// The observer code `skb` passed last on `ifindex` on this CPU, newest first; 0 when none.
#[inline(always)]
pub fn last_code(skb: u64, ifindex: u32) -> u32 {
    let Some(r) = TC_RING.get_ptr(0) else { return 0 };
    // SAFETY: this CPU's ring; observers of this CPU do not run while the drop probe runs.
    let r = unsafe { &*r };
    // A plain range with the head read once, which the compiler unrolls (an inclusive range
    // kept a loop of some twenty instructions a turn); the newest entry is tried first.
    let head = r.head;
    for i in 0..TC_RING_LEN as u32 {
        let idx = (head.wrapping_sub(i + 1) as usize) & (TC_RING_LEN - 1);
        if r.skb[idx] == skb {
            // The newest pass of this skb decides: a pass on another interface means the
            // packet left this hook's run (redirect) and was not shot here.
            return if r.ifindex[idx] == ifindex { r.code[idx] } else { 0 };
        }
    }
    0
}
