//! The wire contract between the kernel programs (`tracer-ebpf`) and the loader (`tracer`):
//! `#[repr(C)]` records, load-time configuration and the names both sides use for maps and
//! programs. Keep it small and plain: no logic that only one side needs.
#![no_std]

pub mod cbpf;

/// Largest number of packet bytes a program copies (the filter window). A power of two so the
/// kernel side can bound offsets with a mask.
pub const MAX_CAPTURE: usize = 2048;
/// Slack after the capture window so a 4-byte filter load at the last masked offset stays in bounds.
pub const CAPTURE_SLACK: usize = 8;
/// Largest classic-BPF filter accepted, per link type.
pub const MAX_FILTER_INSNS: u32 = 512;
/// Instructions of the placeholder function the loader overwrites with the expression compiled
/// to eBPF (both link types, padding included); a longer translation falls back to the
/// interpreter.
pub const FILTER_PLACEHOLDER_INSNS: usize = 4096;
/// `r0 = imm` that starts each inlined filter block (`tracer-ebpf/src/compiled.rs`); the block
/// is this instruction, `FILTER_PLACEHOLDER_INSNS` of `ja +0` and `r0 = 0`.
pub const FILTER_MARKER: i32 = 0x7ace_0f17;
/// Where the compiled filter keeps its 16 memory words: right after the packet bytes it is
/// given (the scratch record's `filter_mem`), not on the stack of the probe it is inlined in.
#[expect(clippy::cast_possible_truncation, clippy::cast_possible_wrap, reason = "2056 fits an i16")]
pub const FILTER_MEM_OFFSET: i16 = (MAX_CAPTURE + CAPTURE_SLACK) as i16;
/// Largest number of `--iface` patterns.
pub const MAX_IFACE_PATTERNS: u32 = 16;
pub const IFNAMSIZ: usize = 16;
/// Bytes of the `EVENTS` ring buffer as the object defines it (a capture's; `tracer watch`
/// loads it smaller).
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

/// Typed views of packet bytes (`tracer-ebpf/src/cast.rs`): the placeholder numbers the
/// loader rewrites, and how many bytes the direct copy covers.
pub mod cast {
    /// `call` immediate standing for the `bpf_rdonly_cast` kfunc (no helper has this number).
    pub const RDONLY_CAST_MAGIC: i32 = 0x7ace_0c01;
    /// `r2 = imm` standing for the BTF id of the view's struct.
    pub const BYTES_TYPE_MAGIC: i32 = 0x7ace_0c02;
    /// `r2 = imm` standing for `struct dst_entry` and `struct skb_shared_info` (a drop event's
    /// route MTU and GSO facts).
    pub const DST_TYPE_MAGIC: i32 = 0x7ace_0c03;
    pub const SHINFO_TYPE_MAGIC: i32 = 0x7ace_0c04;
    /// `r2 = imm` standing for `void` (type id 0): an untyped read-only view (Linux ≥ 6.17)
    /// that loads at any offset, constant or not, each load guarded like a typed view's.
    pub const VOID_TYPE_MAGIC: i32 = 0x7ace_0c05;
    /// Bytes the direct copy reads at most (32 words: the default snaplen); a longer filter
    /// window or event uses the helper.
    pub const DIRECT_MAX: usize = 256;
}

/// Map and program names (the loader looks them up by these).
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const DROP_STATS: &str = "DROP_STATS";
    pub const FILTER_INSNS: &str = "FILTER_INSNS";
    pub const IFACE_PATTERNS: &str = "IFACE_PATTERNS";
    pub const KFREE_SKB_BTF: &str = "kfree_skb_btf";
    pub const KFREE_SKB_RAW: &str = "kfree_skb_raw";
    pub const NF_RING: &str = "NF_RING";
    pub const TC_RING: &str = "TC_RING";
    pub const PATH_TRACK: &str = "PATH_TRACK";
    pub const PATH_LIVE: &str = "PATH_LIVE";
    pub const DROP_STATE: &str = "DROP_STATE";
    /// Kernel functions `--path` follows with fentry/kprobe: (function, skb argument index).
    /// fentry programs are named `path_fe_<function without leading underscores>`; kprobes
    /// `path_kprobe_a<index>`.
    pub const PATH_FUNCTIONS: [(&str, u8); 16] = [
        ("ip_rcv", 0),
        ("ip_route_input_noref", 0),
        ("ip_forward", 0),
        ("ip_local_deliver", 0),
        ("ip_output", 2),
        ("ip_finish_output2", 2),
        ("__ip_local_out", 2),
        ("__dev_queue_xmit", 0),
        ("dev_hard_start_xmit", 0),
        ("tcp_v4_rcv", 0),
        ("udp_rcv", 0),
        ("icmp_rcv", 0),
        ("ipv6_rcv", 0),
        ("ip6_forward", 0),
        ("ip6_output", 2),
        ("nf_hook_slow", 0),
    ];
    /// Raw tracepoint programs of the path (tracepoint back end): (program, tracepoint). The
    /// last one (`sk_data_ready`, Linux ≥ 6.6) is optional.
    pub const PATH_TRACEPOINTS: [(&str, &str); 5] = [
        ("path_netif_receive_skb", "netif_receive_skb"),
        ("path_net_dev_start_xmit", "net_dev_start_xmit"),
        ("path_skb_copy_datagram_iovec", "skb_copy_datagram_iovec"),
        ("path_consume_skb", "consume_skb"),
        ("path_sk_data_ready", "sk_data_ready"),
    ];
    /// `tp_btf` twins of the path's entry hooks (program, tracepoint): where the kernel takes
    /// them, they read the skb with direct loads (see `skb::Mem` in `tracer-ebpf`) instead of the
    /// raw tracepoint program of the same tracepoint.
    pub const PATH_TP_BTF: [(&str, &str); 2] = [("path_netif_receive_skb_btf", "netif_receive_skb"), ("path_net_dev_start_xmit_btf", "net_dev_start_xmit")];
    pub const POD_NETNS: &str = "POD_NETNS";
    pub const POD_IFACES: &str = "POD_IFACES";
    pub const POD_ADDRS: &str = "POD_ADDRS";
    /// Prefix of every tc observer program (and of our `cls_bpf` filters): leftovers of a killed
    /// run are found by it.
    pub const TC_OBSERVER_PREFIX: &str = "tracer_tc_";
    /// Every map the kernel side declares (userspace reads some, cleans up after all);
    /// `tracer/tests/object.rs` checks the built object declares exactly these.
    pub const STACKS: &str = "STACKS";
    pub const MAPS: [&str; 19] = [
        EVENTS,
        COUNTERS,
        DROP_STATS,
        DROP_STATE,
        "SCRATCH",
        FILTER_INSNS,
        "FILTER_VM",
        IFACE_PATTERNS,
        POD_NETNS,
        POD_IFACES,
        POD_ADDRS,
        NF_RING,
        TC_RING,
        PATH_TRACK,
        "PATH_SEQ",
        "PATH_CPU",
        "PATH_LIVE",
        "DEV_CACHE",
        STACKS,
    ];
}

/// Indexes into the per-CPU `COUNTERS` array. Summed over CPUs by the loader.
/// The drop probe counts `SEEN`, `MATCHED` and `RATE_LIMITED` in its `DropState` (one lookup
/// per drop); userspace adds those to these slots (`Maps::counter`).
pub mod counter {
    /// `kfree_skb` calls with a real drop reason, before any filter.
    pub const SEEN: u32 = 0;
    /// Drops that passed every filter: the exact total the summary reports.
    pub const MATCHED: u32 = 1;
    /// Events handed to the ring buffer.
    pub const EMITTED: u32 = 2;
    /// Events that did not fit in the ring buffer (lost in the kernel).
    pub const LOST: u32 = 3;
    /// Matched drops whose aggregation key did not fit in `DROP_STATS`.
    pub const STATS_FULL: u32 = 4;
    /// `--path` events handed to the ring buffer / lost there (EMITTED/LOST count drops only).
    pub const PATH_EMITTED: u32 = 5;
    pub const PATH_LOST: u32 = 6;
    /// Matched drops whose event the rate limit held back (`--max-event-rate`).
    pub const RATE_LIMITED: u32 = 7;
    pub const COUNT: u32 = 8;
}

pub mod konst;

/// Byte offsets of kernel struct fields, read from the running kernel's BTF at load time
/// (Rust eBPF has no CO-RE). `u32::MAX` marks a field this kernel lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub skb_len: u32,
    pub skb_data_len: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_mac_header: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub sk_net: u32,
    /// `sk_buff.mark` and `sk_buff._nfct` (the conntrack entry | `ip_conntrack_info`), and the
    /// `struct nf_conn` fields a drop event carries (`status`, `mark`, `zone.id`; from the
    /// conntrack module's BTF when it is a module). Read for events only, not in the span.
    pub skb_mark: u32,
    pub skb_nfct: u32,
    pub ct_status: u32,
    pub ct_mark: u32,
    pub ct_zone: u32,
    /// Skb facts of a drop event (issue 16): `sk_buff.pkt_type` (a 3-bit field: the byte
    /// holding it and the shift within it), `sk_buff._skb_refdst` (the route, `dst_entry *`
    /// with flag bit 0), `dst_entry.dev`, `net_device.mtu`, `sk_buff.end` (an offset from
    /// `head` on 64-bit kernels) and `skb_shared_info.gso_size` (`gso_segs` follows it).
    pub skb_pkt_type: u32,
    pub skb_pkt_type_shift: u32,
    pub skb_refdst: u32,
    pub dst_dev: u32,
    pub dev_mtu: u32,
    pub skb_end: u32,
    pub shinfo_gso_size: u32,
    /// `dst_entry.input`: a drop's route says whether the packet was being forwarded
    /// (`Config::forward_input_v4`).
    pub dst_input: u32,
    /// The part of `struct sk_buff` holding every `skb_*` field above (start 8-aligned, length
    /// ≤ `SKB_SPAN_MAX`): a probe copies it with one read instead of one read per field.
    /// Length 0: the fields lie too far apart and are read one by one.
    pub skb_span_start: u32,
    pub skb_span_len: u32,
}

/// Longest `sk_buff` span a probe copies in one read (192 bytes on 6.1–6.18).
pub const SKB_SPAN_MAX: usize = 256;

/// Capture settings fixed at load time (load-time constants, `konst`: the verifier prunes the
/// paths they turn off).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Bytes of each packet carried in an event (≤ `MAX_CAPTURE`).
    pub snaplen: u32,
    /// Instructions of the classic-BPF filter for packets starting at an Ethernet header; 0 = none.
    pub filter_eth_len: u32,
    /// Instructions of the filter for packets starting at the IP header; 0 = none.
    pub filter_raw_len: u32,
    /// 1 when an expression was given (then a packet whose program is empty never matches).
    pub filter_active: u32,
    /// Only drops in this network namespace (inode number); 0 = any.
    pub netns: u32,
    /// Number of `IFACE_PATTERNS` entries in use; 0 = any interface.
    pub iface_patterns: u32,
    /// Reason values that are not drops (`SKB_CONSUMED`, `NOT_DROPPED_YET`), from BTF.
    pub reason_consumed: u32,
    pub reason_not_dropped: u32,
    /// `SKB_DROP_REASON_NETFILTER_DROP` on this kernel (`u32::MAX` when unknown).
    pub reason_netfilter_drop: u32,
    /// `SKB_DROP_REASON_TC_INGRESS` / `TC_EGRESS` on this kernel (`u32::MAX` when unknown).
    pub reason_tc_ingress: u32,
    pub reason_tc_egress: u32,
    /// 1 when `--pod` restricts the capture to the `POD_*` maps (namespaces, interfaces, IPs).
    pub pod_filter: u32,
    /// 1 with `--path`: matching packets are tracked hook by hook (`PATH_TRACK`).
    pub path: u32,
    /// Packet bytes the filters read, copied for every drop they see (≤ `MAX_CAPTURE`); a drop
    /// that becomes an event then gets its `snaplen` bytes.
    pub copy_len: u32,
    /// 1 when the loader replaced the filter placeholder with the expression compiled to eBPF
    /// (else the classic-BPF interpreter runs it).
    pub filter_ebpf: u32,
    /// 1 when the compiled expression reads the packet where it lies, through an untyped view
    /// (`cast::VOID_TYPE_MAGIC`), instead of from the filter window copied into scratch: it
    /// uses no memory words and no `--pod` filter reads the window.
    pub filter_direct: u32,
    /// 1 (`tracer watch`): a `NETFILTER_DROP`'s observer slot is looked up for every counted
    /// drop and kept in its `DROP_STATS` key, so per-rule totals stay exact when events are
    /// rate limited; 0: only drops that become events look it up (`nf_slot` 0 in the key).
    pub stats_nf_slot: u32,
    /// 1 with `--stack`: a drop that becomes an event records its kernel stack (`STACKS`).
    pub stack: u32,
    /// 1 when the loader patched in `bpf_rdonly_cast` (`cast`): the filters' bytes are copied
    /// with direct loads when they fit `cast::DIRECT_MAX`; 0: with `bpf_probe_read_kernel`.
    pub direct_bytes: u32,
    /// 1 when the loader also typed the views of a drop event's route and GSO facts: read
    /// with direct loads instead of `bpf_probe_read_kernel`.
    pub direct_facts: u32,
    /// Minimum spacing of drop events per CPU, in ns (1e9 / events per second); 0 = no limit.
    pub event_interval_ns: u64,
    /// Addresses of `ip_forward` and `ip6_forward` (from kallsyms; 0: unknown): a netfilter
    /// drop whose route's `input` is one of them happened at FORWARD or POSTROUTING, and
    /// carries `nf_slot::FORWARDED_*` (a namespace with at most one chain there that can drop
    /// needs no observer at those hooks).
    pub forward_input_v4: u64,
    pub forward_input_v6: u64,
    /// 1 with `--path` when the filters read nothing but a packet's bytes and no interface ran
    /// an XDP program at start: a receive of the skb this CPU just handed to a driver (a veth's
    /// peer) takes the verdict the driver hook gave it, bytes unchanged.
    pub path_reuse: u32,
}

/// One classic-BPF instruction, as `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CbpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// An interface-name pattern: bytes `name[i]` must equal the device name where `mask[i]` is
/// 0xff (a `?` gives mask 0); `len` bytes are compared and, unless `prefix` is set, the
/// device name must end there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IfacePattern {
    pub name: [u8; IFNAMSIZ],
    pub mask: [u8; IFNAMSIZ],
    pub len: u32,
    pub prefix: u32,
}

/// Where the captured bytes of a packet start.
pub mod linktype {
    /// At the Ethernet header.
    pub const ETHERNET: u8 = 1;
    /// At the IP header (no usable MAC header at the drop point).
    pub const RAW_IP: u8 = 2;
}

/// Kind of a record in the `EVENTS` ring buffer (first byte after the common header fields).
pub mod kind {
    pub const DROP: u8 = 1;
    /// A tracked packet passed a hook (`PacketEvent::hook`).
    pub const PATH: u8 = 2;
}

/// Flags in the `nf_slot` of a netfilter drop (`PacketEvent`, `DropKey`), beside the
/// observer slot id in the low bits.
pub mod nf_slot {
    /// The packet was being forwarded over IPv4 (its route's `input` is `ip_forward`).
    pub const FORWARDED_IPV4: u32 = 1 << 31;
    /// Over IPv6 (`ip6_forward`).
    pub const FORWARDED_IPV6: u32 = 1 << 30;
    /// The observer slot id (0: none).
    pub const ID: u32 = FORWARDED_IPV6 - 1;
}

/// Path hooks (`PacketEvent::hook` of `kind::PATH` events).
pub mod hook {
    pub const NETIF_RECEIVE: u32 = 1;
    /// Not a hop any more (`net_dev_start_xmit` is the transmit side's); the number stays taken.
    pub const NET_DEV_QUEUE: u32 = 2;
    pub const NET_DEV_START_XMIT: u32 = 3;
    /// Data copied to a socket's reader: delivered.
    pub const COPY_DATAGRAM: u32 = 4;
    /// Freed normally (`consume_skb`): ends the packet's path.
    pub const CONSUME: u32 = 5;
    /// Dropped (`kfree_skb`) without matching the drop filters any more (e.g. after NAT):
    /// ends the path; `reason` and `location` say why and where.
    pub const DROP: u32 = 6;
    /// A kernel function (kprobe/fentry back ends): `location` is its address.
    pub const FUNCTION: u32 = 7;
    /// tc observer at a pod interface: `tc_code` says direction and position (`tc::decode`).
    pub const TC: u32 = 8;
    /// Queued to a socket (`sock:sk_data_ready` right after the packet's receive on that
    /// CPU): ends the path, delivered.
    pub const DELIVER: u32 = 9;
    /// A netfilter observer (`nf_slot` says namespace, family, hook and priority).
    pub const NETFILTER: u32 = 10;

    /// The name the JSON and the timeline use.
    #[must_use]
    pub const fn name(h: u32) -> &'static str {
        match h {
            NETIF_RECEIVE => "netif_receive_skb",
            NET_DEV_QUEUE => "net_dev_queue",
            NET_DEV_START_XMIT => "net_dev_start_xmit",
            COPY_DATAGRAM => "skb_copy_datagram_iovec",
            CONSUME => "consume_skb",
            DROP => "kfree_skb",
            FUNCTION => "function",
            TC => "tc",
            DELIVER => "sk_data_ready",
            NETFILTER => "netfilter",
            _ => "unknown",
        }
    }
}

/// A packet seen by a probe: fixed header, followed in the ring buffer by `cap_len` packet bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketEvent {
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`).
    pub ts_ns: u64,
    /// Kernel text address where the packet was freed (`kfree_skb` location).
    pub location: u64,
    /// `struct sk_buff` address (identifies a packet while it is alive).
    pub skb: u64,
    pub reason: u32,
    pub ifindex: u32,
    /// Network namespace inode number.
    pub netns: u32,
    /// Packet length from the first captured byte (headers included).
    pub len: u32,
    /// Packet bytes that follow this header.
    pub cap_len: u32,
    /// `skb->protocol` (network byte order, an `ETH_P_*` value).
    pub protocol: u16,
    /// `linktype::*`
    pub linktype: u8,
    /// `kind::*`
    pub kind: u8,
    pub ifname: [u8; IFNAMSIZ],
    /// Netfilter observer slot the packet passed last before a `NETFILTER_DROP` (0 = none): tells
    /// the hook, family, namespace and priority range where it died.
    pub nf_slot: u32,
    /// tc observer the packet passed last at its hook before a `TC_INGRESS`/`TC_EGRESS` drop
    /// (`tc::code`; 0 = none): tells which program on the hook shot it.
    pub tc_code: u32,
    /// With `--path`: the packet's id, assigned when it first matched (0 = not tracked).
    pub packet_id: u64,
    /// `hook::*` for `kind::PATH` events.
    pub hook: u32,
    /// With `--stack`: the drop's kernel stack as its `STACKS` id plus one (0 = none).
    pub stack: u32,
    /// Drop events: `skb->mark` and the conntrack entry's facts (`ct_flags` says which were
    /// read); zero in path events.
    pub mark: u32,
    pub ct_mark: u32,
    /// `nf_conn.status`, its low 32 bits (the `IPS_*_BIT`s).
    pub ct_status: u32,
    pub ct_zone: u16,
    /// `skb->_nfct & 7`: the packet's `ip_conntrack_info`.
    pub ct_info: u8,
    /// `ct_flags::*`.
    pub ct_flags: u8,
    /// Drop events: the MTU of the device the packet was routed to (its `dst`), else of its
    /// own device; GSO size and segments (0: not GSO); `skb->pkt_type` (`PACKET_*`).
    pub mtu: u32,
    pub gso_size: u16,
    pub gso_segs: u16,
    pub pkt_type: u8,
    /// `skb_facts::*`: which of the above were read.
    pub skb_facts: u8,
    #[expect(clippy::pub_underscore_fields, reason = "explicit #[repr(C)] padding: the header stays a multiple of 8 bytes")]
    pub _pad: [u8; 6],
}

/// What of the skb facts a drop event carries (`PacketEvent::skb_facts`).
pub mod skb_facts {
    pub const MTU: u8 = 1;
    /// `mtu` is the routed-to device's (else the skb's own device's).
    pub const MTU_OF_ROUTE: u8 = 2;
    pub const GSO: u8 = 4;
    pub const PKT_TYPE: u8 = 8;
}

/// What of the conntrack facts a drop event carries (`PacketEvent::ct_flags`).
pub mod ct_flags {
    /// `mark` is `skb->mark`.
    pub const MARK: u8 = 1;
    /// `skb->_nfct` was non-zero: `ct_info` holds its low bits.
    pub const NFCT: u8 = 2;
    /// Fields of the entry that were read (the kernel may lack marks or zones).
    pub const STATUS: u8 = 4;
    pub const CT_MARK: u8 = 8;
    pub const ZONE: u8 = 16;
}

pub const EVENT_HEADER_LEN: usize = core::mem::size_of::<PacketEvent>();

/// This CPU's drop-probe state, one map lookup per drop for all of it. `key`/`count`: the most
/// recent `DROP_STATS` key and the drops counted for it that are not in the hash yet (a flood
/// hits one key over and over, and a compare is cheaper than a hash lookup; userspace adds
/// the pending counts). `seen`, `matched`, `rate_limited`: the probe's share of `COUNTERS`'
/// slots of those names (userspace adds them). `budget`: the event rate limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropState {
    pub key: DropKey,
    pub count: u64,
    pub seen: u64,
    pub matched: u64,
    pub rate_limited: u64,
    pub budget: EventBudget,
    /// The `skb->dev` the key's name, index and namespace were read from (0: none), and the
    /// jiffy they were read at: the drop probe reuses them for drops on that device for a few
    /// ticks (a rename or a move to another namespace shows within that bound).
    pub dev: u64,
    pub dev_jiffies: u64,
}

/// Per-CPU state of the event rate limit: time budget (ns), when it was last topped up, and
/// the jiffy of that top-up (the clock is read at most once per tick: a flood does not pay
/// for a clock read per drop).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventBudget {
    pub budget_ns: u64,
    pub last_ns: u64,
    pub last_jiffies: u64,
}

/// Key of the per-CPU `DROP_STATS` hash: exact per-(reason, location, interface, netfilter slot)
/// totals that do not depend on events reaching userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub location: u64,
    /// Second, so it is 8-aligned: the drop probe copies and compares it as two u64s (at an
    /// odd offset the compiler moves it a byte at a time).
    pub ifname: [u8; IFNAMSIZ],
    pub reason: u32,
    pub ifindex: u32,
    pub netns: u32,
    /// Netfilter observer slot (see `PacketEvent::nf_slot`).
    pub nf_slot: u32,
    /// tc observer code (see `PacketEvent::tc_code`).
    pub tc_code: u32,
    /// Explicit padding: hash keys compare every byte, so none may be left uninitialised.
    #[expect(clippy::pub_underscore_fields, reason = "explicit #[repr(C)] padding, zeroed by both sides")]
    pub _pad: u32,
}

/// Entries in the per-CPU ring of recent netfilter observer passes.
pub const NF_RING_LEN: usize = 8;

/// Per-CPU ring the netfilter observers write: which skb passed which observer slot last.
/// A ring, not a single entry, because a REJECT sends its RST/ICMP (through OUTPUT observers)
/// between the last observer and the drop of the original packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NfRing {
    /// Next write position (mod `NF_RING_LEN`).
    pub head: u32,
    #[expect(clippy::pub_underscore_fields, reason = "explicit #[repr(C)] padding, zeroed by both sides")]
    pub _pad: u32,
    pub skb: [u64; NF_RING_LEN],
    pub slot: [u32; NF_RING_LEN],
}

/// tc observers: one program per (direction, position) so each knows where it sits without
/// per-attachment state; the interface comes from the packet. Position k runs just before the
/// k-th program of the hook (tcx programs first, then `cls_bpf` filters by priority); the last
/// position runs after all of them.
pub mod tc {
    /// Observer positions per direction (so at most `POSITIONS - 1` programs are singled out).
    pub const POSITIONS: u32 = 8;
    pub const EGRESS: u32 = 0x100;
    /// The code an observer records: never 0, which means "no observer seen".
    #[must_use]
    pub const fn code(egress: bool, position: u32) -> u32 {
        (if egress { EGRESS } else { 0 }) | (position + 1)
    }
    /// (egress, position) of a non-zero code.
    #[must_use]
    pub const fn decode(code: u32) -> (bool, u32) {
        (code & EGRESS != 0, (code & 0xff).wrapping_sub(1))
    }
}

/// Entries in the per-CPU ring of recent tc observer passes.
pub const TC_RING_LEN: usize = 8;

/// Per-CPU ring the tc observers write: which skb passed which observer, on which interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcRing {
    pub head: u32,
    #[expect(clippy::pub_underscore_fields, reason = "explicit #[repr(C)] padding, zeroed by both sides")]
    pub _pad: u32,
    pub skb: [u64; TC_RING_LEN],
    pub ifindex: [u32; TC_RING_LEN],
    pub code: [u32; TC_RING_LEN],
}

/// Key of `POD_IFACES`: a pod's host-side interface (its `lxc…` veth) in its namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodIfKey {
    pub netns: u32,
    pub ifindex: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain integers/arrays with no padding holes that
    // matter for reading (padding bytes are written as zero by both sides).
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::CbpfInsn {}
    unsafe impl aya::Pod for super::IfacePattern {}
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::DropState {}
    unsafe impl aya::Pod for super::NfRing {}
    unsafe impl aya::Pod for super::TcRing {}
    unsafe impl aya::Pod for super::PodIfKey {}
    unsafe impl aya::Pod for super::cbpf::Vm {}
}
