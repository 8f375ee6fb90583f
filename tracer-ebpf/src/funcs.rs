//! `--path` depth where the kernel allows it: kernel functions that handle skbs, through fentry
//! (one program per function: BTF-typed arguments) or kprobes (one program per argument
//! position, attached to many functions). They follow packets already tracked by the
//! tracepoints; the function is the hop, named from `bpf_get_func_ip`.
use aya_ebpf::{
    helpers::generated::bpf_get_func_ip,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};

use crate::path;

#[inline(always)]
fn hop<C: aya_ebpf::EbpfContext>(ctx: &C, skb: u64) {
    // SAFETY: the helper reads the program's own context.
    let ip = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
    path::function_hop(skb, ip);
}

#[kprobe]
pub fn path_kprobe_a0(ctx: ProbeContext) -> u32 {
    hop(&ctx, ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kprobe]
pub fn path_kprobe_a1(ctx: ProbeContext) -> u32 {
    hop(&ctx, ctx.arg::<u64>(1).unwrap_or(0));
    0
}

#[kprobe]
pub fn path_kprobe_a2(ctx: ProbeContext) -> u32 {
    hop(&ctx, ctx.arg::<u64>(2).unwrap_or(0));
    0
}

macro_rules! fentries {
    ($($name:ident: $func:literal, $arg:literal;)*) => {$(
        #[fentry(function = $func)]
        pub fn $name(ctx: FEntryContext) -> i32 {
            hop(&ctx, ctx.arg::<u64>($arg));
            0
        }
    )*};
}

// One per tracer-common `names::PATH_FUNCTIONS` (function, skb argument), named `path_fe_` +
// the function without leading underscores (tracer/tests/object.rs checks they are all here).
fentries! {
    path_fe_ip_rcv: "ip_rcv", 0;
    path_fe_ip_route_input_noref: "ip_route_input_noref", 0;
    path_fe_ip_forward: "ip_forward", 0;
    path_fe_ip_local_deliver: "ip_local_deliver", 0;
    path_fe_ip_output: "ip_output", 2;
    path_fe_ip_finish_output2: "ip_finish_output2", 2;
    path_fe_ip_local_out: "__ip_local_out", 2;
    path_fe_dev_queue_xmit: "__dev_queue_xmit", 0;
    path_fe_dev_hard_start_xmit: "dev_hard_start_xmit", 0;
    path_fe_tcp_v4_rcv: "tcp_v4_rcv", 0;
    path_fe_udp_rcv: "udp_rcv", 0;
    path_fe_icmp_rcv: "icmp_rcv", 0;
    path_fe_ipv6_rcv: "ipv6_rcv", 0;
    path_fe_ip6_forward: "ip6_forward", 0;
    path_fe_ip6_output: "ip6_output", 2;
    path_fe_nf_hook_slow: "nf_hook_slow", 0;
}
