//! Load-time constants (`tracer_common::konst`): every `Config` and `Offsets` field a program
//! reads is an immediate, `r = imm64`, that the loader writes before the object is loaded with
//! the value it computed from the running kernel's BTF and the user's options. A read of a
//! field is then a register move: no load from a read-only map on every probe run (a drop
//! flood paid a cache miss a run for those), and the verifier still knows every value, so the
//! paths a setting turns off are pruned as before. `Cfg` and `Offs` are the structs' fields as
//! methods (a struct built from the immediates would be built on the stack).
use core::mem::offset_of;

use tracer_common::{Config, Offsets, konst};

/// The immediate the loader writes for placeholder `ID`.
#[inline(always)]
pub fn imm<const ID: u64>() -> u64 {
    let v: u64;
    // SAFETY: one `r = imm64` instruction; it reads and writes no memory.
    unsafe { core::arch::asm!("{v} = {id} ll", v = lateout(reg) v, id = const ID, options(pure, nomem, nostack)) };
    v
}

/// A method per field, each returning the field's immediate.
macro_rules! fields {
    ($view:ident, $ty:ident, $tag:expr, { $($field:ident: $t:ident),* $(,)? }) => {
        impl $view {
            $(
                #[inline(always)]
                pub fn $field(&self) -> $t {
                    imm::<{ konst::id($tag, offset_of!($ty, $field), size_of::<$t>()) }>() as $t
                }
            )*
        }
        // Every field listed: a field added to the struct and not here does not compile.
        const _: fn() -> $ty = || $ty { $($field: 0),* };
    };
}

/// `Offsets`' fields.
pub struct Offs;
/// `Config`'s fields.
pub struct Cfg;

fields!(Offs, Offsets, konst::OFFSETS, {
    skb_len: u32, skb_data_len: u32, skb_head: u32, skb_data: u32, skb_mac_header: u32,
    skb_network_header: u32, skb_protocol: u32, skb_dev: u32, skb_sk: u32, dev_ifindex: u32,
    dev_name: u32, dev_nd_net: u32, net_ns_inum: u32, sk_net: u32, skb_mark: u32, skb_nfct: u32,
    ct_status: u32, ct_mark: u32, ct_zone: u32, skb_pkt_type: u32, skb_pkt_type_shift: u32,
    skb_refdst: u32, dst_dev: u32, dev_mtu: u32, skb_end: u32, shinfo_gso_size: u32,
    dst_input: u32, skb_span_start: u32, skb_span_len: u32,
});

fields!(Cfg, Config, konst::CONFIG, {
    snaplen: u32, filter_eth_len: u32, filter_raw_len: u32, filter_active: u32, netns: u32,
    iface_patterns: u32, reason_consumed: u32, reason_not_dropped: u32,
    reason_netfilter_drop: u32, reason_tc_ingress: u32, reason_tc_egress: u32, pod_filter: u32,
    path: u32, copy_len: u32, filter_ebpf: u32, filter_direct: u32, stats_nf_slot: u32,
    stack: u32, direct_bytes: u32, direct_facts: u32, event_interval_ns: u64,
    forward_input_v4: u64, forward_input_v6: u64, path_reuse: u32,
});

#[inline(always)]
pub fn offsets() -> &'static Offs {
    &Offs
}

#[inline(always)]
pub fn config() -> &'static Cfg {
    &Cfg
}
