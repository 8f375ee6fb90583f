//! Every map of the kernel side, in one leaf module: the programs (kfree_skb, capture, emit,
//! filter, tc, netfilter, path) reach them here and nothing here reaches them. Userspace names
//! the same maps through `tracer_common::names`; `tracer/tests/object.rs` checks the built
//! object against that list.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use tracer_common::{
    CAPTURE_SLACK, CbpfInsn, DropKey, DropState, EVENTS_RING_BYTES, IFNAMSIZ, IfacePattern, MAX_CAPTURE, MAX_FILTER_INSNS, MAX_IFACE_PATTERNS, NfRing, PacketEvent,
    PodIfKey, SKB_SPAN_MAX, TcRing, cbpf::Vm, counter,
};

/// The event being built on this CPU (too big for the 512-byte stack).
#[repr(C)]
pub struct Scratch {
    pub hdr: PacketEvent,
    pub data: [u8; MAX_CAPTURE + CAPTURE_SLACK],
    /// The compiled filter's memory words (`FILTER_MEM_OFFSET` past `data`).
    pub filter_mem: [u32; 16],
    /// This run's copy of the skb's field span (`skb::load`); u64s keep it 8-aligned.
    pub skb: [u64; SKB_SPAN_MAX / 8],
}

/// One of this CPU's recent devices, for raw tracepoints (whose every read is a helper call; a
/// tp_btf program loads the fields directly): a burst of packets on a few devices (a flood,
/// `--path`'s hops) then costs one read instead of four. Entries are trusted for
/// `DEV_CACHE_JIFFIES` only, so a renamed device or one moved to another namespace is seen
/// right after.
#[repr(C)]
pub struct DevCache {
    pub dev: u64,
    pub at_jiffies: u64,
    /// 8-aligned, like the header's: a hit copies it with two u64 moves.
    pub ifname: [u8; IFNAMSIZ],
    pub ifindex: u32,
    pub netns: u32,
}

// The compiled filter finds its memory words at a constant distance from the packet bytes.
const _: () = assert!(core::mem::offset_of!(Scratch, filter_mem) - core::mem::offset_of!(Scratch, data) == tracer_common::FILTER_MEM_OFFSET as usize);

/// This CPU's scratch record.
#[inline(always)]
pub fn scratch() -> Option<*mut Scratch> {
    SCRATCH.get_ptr_mut(0)
}

/// 8 MiB holds ~25,000 events of a 256-byte snaplen, far more than a 10 ms poll interval of
/// the default event rate limit brings. Userspace maps the data area twice (wrap-around), so it
/// counts 16 MiB in the tracer's RSS: a larger ring would break the 64 MiB bound
/// (tests/tests/robust/).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map(name = "DROP_STATS")]
pub static DROP_STATS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "DROP_STATE")]
pub static DROP_STATE: PerCpuArray<DropState> = PerCpuArray::with_max_entries(1, 0);

/// Ethernet program at [0, MAX), raw-IP program at [MAX, 2*MAX).
#[map(name = "FILTER_INSNS")]
pub static FILTER_INSNS: Array<CbpfInsn> = Array::with_max_entries(2 * MAX_FILTER_INSNS, 0);

#[map(name = "IFACE_PATTERNS")]
pub static IFACE_PATTERNS: Array<IfacePattern> = Array::with_max_entries(MAX_IFACE_PATTERNS, 0);

/// `--pod`: the pods' network namespaces (inode), their host-side interfaces and their IPs
/// (IPv4 as IPv4-mapped IPv6). A drop is the pods' when any of them matches.
#[map(name = "POD_NETNS")]
pub static POD_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "POD_IFACES")]
pub static POD_IFACES: HashMap<PodIfKey, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "POD_ADDRS")]
pub static POD_ADDRS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(1024, 0);

#[map(name = "FILTER_VM")]
pub static FILTER_VM: PerCpuArray<Vm> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "NF_RING")]
pub static NF_RING: PerCpuArray<NfRing> = PerCpuArray::with_max_entries(1, 0);

/// skb address → packet id, for packets being followed.
#[map(name = "PATH_TRACK")]
pub static PATH_TRACK: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65_536, 0);

/// At least the number of entries in `PATH_TRACK` (inserts added, successful removes
/// subtracted; LRU evictions are not, so it can only be too high). 0: no lookup can hit, and
/// the hooks skip the hash lookup for every packet nobody follows.
#[map(name = "PATH_LIVE")]
pub static PATH_LIVE: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU sequence for packet ids (the CPU number goes in the top bits).
#[map(name = "PATH_SEQ")]
pub static PATH_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU state of the path's device hooks (`PathCpu`).
#[map(name = "PATH_CPU")]
pub static PATH_CPU: PerCpuArray<PathCpu> = PerCpuArray::with_max_entries(1, 0);

/// What a CPU's device hooks pass on to the next one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathCpu {
    /// The skb this CPU received last and its packet id (0 = not followed). Receive processing
    /// runs one packet at a time per CPU, so an `sk_data_ready` that follows belongs to it.
    pub rx_skb: u64,
    pub rx_id: u64,
    /// The skb this CPU last handed to a driver that matched no filter, with where its bytes
    /// were (0: none). A veth (or `lo`) hands the same skb, bytes untouched, to its peer's
    /// receive, which on the same CPU is the next receive: that receive need not evaluate the
    /// expression again (`path::netif_receive`). Consumed by the next receive whatever it is.
    pub sent_skb: u64,
    pub sent_start: u64,
    pub sent_wire_len: u32,
    pub sent_avail: u32,
    pub sent_linktype: u32,
    pub _pad: u32,
}

/// Ways of `DEV_CACHE` (a power of two): a packet crossing a node passes four devices (pod
/// eth0, its lxc, the other lxc, the other pod's eth0), and `--path` looks each one up.
pub const DEV_CACHE_WAYS: u32 = 8;

/// Direct-mapped by the device's address (`skb::device`).
#[map(name = "DEV_CACHE")]
pub static DEV_CACHE: PerCpuArray<DevCache> = PerCpuArray::with_max_entries(DEV_CACHE_WAYS, 0);

#[map(name = "TC_RING")]
pub static TC_RING: PerCpuArray<TcRing> = PerCpuArray::with_max_entries(1, 0);

/// `--stack`: kernel stacks of drop events, by id. One entry unless the loader sizes it (the
/// kernel allocates every bucket up front, ~1 KiB each).
#[map(name = "STACKS")]
pub static STACKS: StackTrace = StackTrace::with_max_entries(1, 0);
