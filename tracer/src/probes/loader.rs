//! Loads the embedded eBPF object: the offsets and the config are written into its code as
//! load-time constants (`konst`) before load, so the verifier can prune unused paths; filter
//! maps are filled before any probe attaches.
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
};
use tracer_common::{CbpfInsn, Config, DropKey, DropState, IfacePattern, MAX_FILTER_INSNS, Offsets, PodIfKey, counter, names};

use crate::filter::expr::CompiledFilter;

/// Distinct kernel stacks `--stack` keeps (a drop's stack is one of few: its reason's code
/// paths). The kernel allocates them up front, ~1 KiB each; past them an event carries none.
const STACK_ENTRIES: u32 = 4096;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// The embedded eBPF object (tracer/build.rs builds it), as loaded.
pub fn object() -> &'static [u8] {
    OBJECT
}

/// The maps userspace reads, taken out of the object so they outlive the programs: events
/// still in the ring and the final counters are read after detaching.
pub struct Maps {
    /// The event ring, until the session hands it to its reader thread, which maps it
    /// (`Maps::ring`) once the probes are attached: the mapping counts twice its size in the
    /// process's resident memory (the data pages are mapped twice) and the attach parses the
    /// kernel's BTF (~16 MB of heap, freed after), so the two never add up in the peak.
    pub events: Option<aya::maps::Map>,
    pub counters: PerCpuArray<MapData, u64>,
    pub drop_stats: PerCpuHashMap<MapData, DropKey, u64>,
    /// The drop probe's per-CPU state: its last-key cache of `DROP_STATS` (counts not yet in
    /// the hash) and its share of three `COUNTERS` slots.
    pub drop_state: PerCpuArray<MapData, DropState>,
    /// `--stack`: the drop events' kernel stacks, until the session hands them to its namer.
    pub stacks: Option<StackTraceMap<MapData>>,
    /// Raw fds of the maps the hand-assembled netfilter observers write (valid while `Maps`
    /// and the object live).
    pub fds: MapFds,
}

#[derive(Debug, Clone, Copy)]
pub struct MapFds {
    pub events: i32,
    pub counters: i32,
    pub path_track: i32,
    pub path_live: i32,
}

/// What `--pod` selects, as the kernel filter's maps hold it.
#[derive(Debug, Default, Clone)]
pub struct PodSelection {
    pub netns: Vec<u32>,
    pub ifaces: Vec<PodIfKey>,
    /// IPv4 as IPv4-mapped IPv6.
    pub addrs: Vec<[u8; 16]>,
}

/// What the loader writes into the object's code before loading it.
pub struct Patches<'a> {
    pub filter: &'a CompiledFilter,
    /// The typed views of packet bytes (`Config::direct_bytes` says which way they went).
    pub casts: Option<super::casts::Ids>,
}

pub fn load(offsets: &Offsets, config: &Config, patches: &Patches<'_>, ifaces: &[IfacePattern], pods: &PodSelection, ring_bytes: Option<u32>) -> Result<(Ebpf, Maps)> {
    let filter = patches.filter;
    // The expression compiled to eBPF goes into the object's filter placeholder.
    let code = filter.ebpf.as_deref().filter(|_| config.filter_ebpf != 0);
    let mut object = crate::filter::inline::patch(OBJECT, code)?;
    super::casts::patch(object.bytes_mut(), patches.casts.filter(|_| config.direct_bytes != 0))?;
    super::konst::patch(object.bytes_mut(), config, offsets)?;
    // No CO-RE relocations in our programs (offsets are load-time constants), so no BTF for
    // the loader: its own parse of the kernel BTF (~16 MB, made by `EbpfLoader::new`) is
    // dropped before the maps (the 8 MiB ring, mapped twice) and programs are created.
    let mut loader = EbpfLoader::new();
    if let Some(bytes) = ring_bytes {
        loader.map_max_entries(names::EVENTS, bytes);
    }
    if config.stack != 0 {
        loader.map_max_entries(names::STACKS, STACK_ENTRIES);
    }
    let mut ebpf = loader
        .btf(None)
        .load(object.bytes())
        .context("cannot load the eBPF object into the kernel")?;

    let mut insns: Array<_, CbpfInsn> = Array::try_from(map(&mut ebpf, names::FILTER_INSNS)?)?;
    for (i, insn) in filter.ethernet.iter().enumerate() {
        insns.set(u32::try_from(i)?, insn, 0)?;
    }
    for (i, insn) in filter.raw_ip.iter().enumerate() {
        insns.set(MAX_FILTER_INSNS + u32::try_from(i)?, insn, 0)?;
    }
    let mut pats: Array<_, IfacePattern> = Array::try_from(map(&mut ebpf, names::IFACE_PATTERNS)?)?;
    for (i, p) in ifaces.iter().enumerate() {
        pats.set(u32::try_from(i)?, p, 0)?;
    }

    let mut m: HashMap<_, u32, u8> = HashMap::try_from(map(&mut ebpf, names::POD_NETNS)?)?;
    for n in &pods.netns {
        m.insert(n, 1, 0)?;
    }
    let mut m: HashMap<_, PodIfKey, u8> = HashMap::try_from(map(&mut ebpf, names::POD_IFACES)?)?;
    for k in &pods.ifaces {
        m.insert(k, 1, 0)?;
    }
    let mut m: HashMap<_, [u8; 16], u8> = HashMap::try_from(map(&mut ebpf, names::POD_ADDRS)?)?;
    for a in &pods.addrs {
        m.insert(a, 1, 0)?;
    }

    let fds = MapFds { events: fd(&ebpf, names::EVENTS)?, counters: fd(&ebpf, names::COUNTERS)?, path_track: fd(&ebpf, names::PATH_TRACK)?, path_live: fd(&ebpf, names::PATH_LIVE)? };
    let maps = Maps {
        fds,
        events: Some(take(&mut ebpf, names::EVENTS)?),
        counters: PerCpuArray::try_from(take(&mut ebpf, names::COUNTERS)?)?,
        drop_stats: PerCpuHashMap::try_from(take(&mut ebpf, names::DROP_STATS)?)?,
        drop_state: PerCpuArray::try_from(take(&mut ebpf, names::DROP_STATE)?)?,
        stacks: if config.stack != 0 { Some(StackTraceMap::try_from(take(&mut ebpf, names::STACKS)?)?) } else { None },
    };
    Ok((ebpf, maps))
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name).ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
}

/// The raw fd of a map of the object.
pub fn fd(ebpf: &Ebpf, name: &str) -> Result<i32> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let (aya::maps::Map::RingBuf(data)
    | aya::maps::Map::PerCpuArray(data)
    | aya::maps::Map::LruHashMap(data)
    | aya::maps::Map::HashMap(data)
    | aya::maps::Map::Array(data)) = ebpf.map(name).ok_or_else(|| anyhow!("the eBPF object has no map {name}"))?
    else {
        anyhow::bail!("map {name} has an unexpected type")
    };
    Ok(data.fd().as_fd().as_raw_fd())
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
}

impl Maps {
    /// The event ring, mapped into this process (once: the reader keeps it).
    pub fn ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.events.take().context("the event ring is already taken")?;
        RingBuf::try_from(map).context("cannot map the event ring")
    }

    /// Sum over CPUs of one `COUNTERS` slot, with the drop probe's share of it
    /// (`DropState`).
    pub fn counter(&self, index: u32) -> Result<u64> {
        let v = self.counters.get(&index, 0)?;
        let probe: fn(&DropState) -> u64 = match index {
            counter::SEEN => |s| s.seen,
            counter::MATCHED => |s| s.matched,
            counter::RATE_LIMITED => |s| s.rate_limited,
            _ => return Ok(v.iter().sum()),
        };
        Ok(v.iter().sum::<u64>() + self.drop_state.get(&0, 0)?.iter().map(probe).sum::<u64>())
    }

    /// Every total over CPUs: the hash plus each CPU's cached count.
    pub fn drop_stats(&self) -> Result<Vec<(DropKey, u64)>> {
        let mut totals: std::collections::HashMap<DropKey, u64> = std::collections::HashMap::new();
        for r in &self.drop_stats {
            let (k, v) = r?;
            *totals.entry(k).or_default() += v.iter().sum::<u64>();
        }
        for c in self.drop_state.get(&0, 0)?.iter() {
            if c.count != 0 {
                *totals.entry(c.key).or_default() += c.count;
            }
        }
        Ok(totals.into_iter().collect())
    }
}
