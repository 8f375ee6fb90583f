//! Load-time constants: the programs read every `Config` and `Offsets` field as an immediate,
//! `r = imm64`, whose upper half names the struct and lower half the field (its byte offset,
//! and its size in bits 16–23); the loader writes the field's value there before the object
//! is loaded (tracer/src/probes/konst.rs). A field then costs no load (and no cache line of
//! read-only data per probe run), and the verifier still prunes the paths it turns off.

/// Upper half of a `Config` field's placeholder.
pub const CONFIG: u32 = 0x7ace_c0f1;
/// Upper half of an `Offsets` field's placeholder.
pub const OFFSETS: u32 = 0x7ace_0ff5;

/// The placeholder of the `size`-byte field at `offset` of the struct `tag` names.
#[must_use]
pub const fn id(tag: u32, offset: usize, size: usize) -> u64 {
    ((tag as u64) << 32) | ((size as u64) << 16) | offset as u64
}

/// Calls `$m!($name, Config, CONFIG, { field: type, … })` with every field of `Config`: the
/// kernel side makes its accessors from it, the loader its values (one list, both sides).
#[macro_export]
macro_rules! config_fields {
    ($m:ident, $name:ident) => {
        $m!($name, Config, CONFIG, {
            snaplen: u32, filter_eth_len: u32, filter_raw_len: u32, filter_active: u32, netns: u32,
            iface_patterns: u32, reason_consumed: u32, reason_not_dropped: u32,
            reason_netfilter_drop: u32, reason_tc_ingress: u32, reason_tc_egress: u32, pod_filter: u32,
            path: u32, copy_len: u32, filter_ebpf: u32, filter_direct: u32, stats_nf_slot: u32,
            stack: u32, direct_bytes: u32, direct_facts: u32, event_interval_ns: u64,
            forward_input_v4: u64, forward_input_v6: u64, path_reuse: u32,
        });
    };
}

/// `config_fields!` for `Offsets`.
#[macro_export]
macro_rules! offsets_fields {
    ($m:ident, $name:ident) => {
        $m!($name, Offsets, OFFSETS, {
            skb_len: u32, skb_data_len: u32, skb_head: u32, skb_data: u32, skb_mac_header: u32,
            skb_network_header: u32, skb_protocol: u32, skb_dev: u32, skb_sk: u32, dev_ifindex: u32,
            dev_name: u32, dev_nd_net: u32, net_ns_inum: u32, sk_net: u32, skb_mark: u32, skb_nfct: u32,
            ct_status: u32, ct_mark: u32, ct_zone: u32, skb_pkt_type: u32, skb_pkt_type_shift: u32,
            skb_refdst: u32, dst_dev: u32, dev_mtu: u32, skb_end: u32, shinfo_gso_size: u32,
            dst_input: u32, skb_span_start: u32, skb_span_len: u32,
        });
    };
}
