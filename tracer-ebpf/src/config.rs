//! Load-time globals. The loader overwrites them (aya `set_global`) with values computed from
//! the running kernel's BTF and the user's options; a volatile read of their address stops
//! the compiler from folding the defaults below.
use tracer_common::{Config, Offsets};

#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets {
    skb_len: 0,
    skb_data_len: 0,
    skb_head: 0,
    skb_data: 0,
    skb_mac_header: 0,
    skb_network_header: 0,
    skb_protocol: 0,
    skb_dev: 0,
    skb_sk: 0,
    dev_ifindex: 0,
    dev_name: 0,
    dev_nd_net: 0,
    net_ns_inum: 0,
    sk_net: 0,
    skb_mark: 0,
    skb_nfct: 0,
    ct_status: 0,
    ct_mark: 0,
    ct_zone: 0,
    skb_pkt_type: 0,
    skb_pkt_type_shift: 0,
    skb_refdst: 0,
    dst_dev: 0,
    dev_mtu: 0,
    skb_end: 0,
    shinfo_gso_size: 0,
    dst_input: 0,
    skb_span_start: 0,
    skb_span_len: 0,
};

#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    snaplen: 0,
    filter_eth_len: 0,
    filter_raw_len: 0,
    filter_active: 0,
    netns: 0,
    iface_patterns: 0,
    reason_consumed: u32::MAX,
    reason_not_dropped: 0,
    reason_netfilter_drop: u32::MAX,
    reason_tc_ingress: u32::MAX,
    reason_tc_egress: u32::MAX,
    pod_filter: 0,
    path: 0,
    copy_len: 0,
    filter_ebpf: 0,
    stats_nf_slot: 0,
    stack: 0,
    direct_bytes: 0,
    direct_facts: 0,
    event_interval_ns: 0,
    forward_input_v4: 0,
    forward_input_v6: 0,
    path_reuse: 0,
};

/// The loader's values, read in place: a reference whose address the compiler cannot see
/// through (so it cannot fold the defaults above), instead of a copy on the 512-byte stack
/// (Linux 6.1 counts the probe's frame plus its subprograms' against that limit).
#[inline(always)]
pub fn offsets() -> &'static Offsets {
    // SAFETY: the static lives for the program; the volatile read only hides its address.
    unsafe { &*core::ptr::read_volatile(&(&raw const OFFSETS)) }
}

#[inline(always)]
pub fn config() -> &'static Config {
    // SAFETY: as above.
    unsafe { &*core::ptr::read_volatile(&(&raw const CONFIG)) }
}
