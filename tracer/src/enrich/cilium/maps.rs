//! Cilium's pinned maps under `<bpffs>/tc/globals`, read-only: what is pinned and in which
//! release's layout (anything else is refused with one line), the metrics map's counters, an
//! endpoint, an address's identity and a policy lookup. Never `cilium_events`: it is a perf
//! event array the agent's monitor reads, and a second reader would take its events.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::maps::{
    Map, MapData, MapType, PerCpuHashMap,
    lpm_trie::{Key, LpmTrie},
};

use super::{
    endpoints::{self as shared, Endpoint, Layout},
    layout::{self, Generation, MetricsKey, PolicyKey, PolicyValue},
    read,
};

pub const GLOBALS: &str = "tc/globals";

/// Packets and bytes per metrics key (summed over CPUs).
pub type Counters = HashMap<MetricsKey, (u64, u64)>;

/// What is pinned, and the release range its layouts identify.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub globals: PathBuf,
    pub generation: Generation,
    pub ipcache: Option<(PathBuf, Layout)>,
}

fn map_info(path: &Path) -> Result<(Option<MapType>, u32, u32), String> {
    let data = MapData::from_pin(path).map_err(|e| format!("cannot open pinned map {}: {e}", path.display()))?;
    let info = data.info().map_err(|e| format!("cannot read map info of {}: {e}", path.display()))?;
    Ok((info.map_type().ok(), info.key_size(), info.value_size()))
}

/// `Ok(None)`: no Cilium metrics map is pinned there (not a Cilium node). `Err`: a pinned map
/// has a layout of no release we know; one line saying which and what we decode.
pub fn detect(bpffs: &Path) -> Result<Option<Pinned>, String> {
    let globals = bpffs.join(GLOBALS);
    let metrics = globals.join(layout::METRICS_PIN);
    if !metrics.exists() {
        return Ok(None);
    }
    open_metrics(&metrics)?;
    let mut generation = None;
    let mut names: Vec<String> = std::fs::read_dir(&globals)
        .map_err(|e| format!("cannot list {}: {e}", globals.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| layout::policy_endpoint(n).is_some())
        .collect();
    names.sort();
    for name in &names {
        let (ty, k, v) = map_info(&globals.join(name))?;
        let Some(g) = layout::policy_generation(name, ty, k, v) else {
            return Err(format!(
                "{} has an unknown layout ({}, key {k} B, value {v} B); tracer decodes Cilium 1.14-1.16 (cilium_policy_*, lpm_trie, 12 B/24 B), 1.17 (cilium_policy_v2_*, 12 B/24 B) and 1.18 (cilium_policy_v2_*, 12 B/8 B), each checked against its release tags, and will not guess at another (1.19+ is not checked yet): Cilium reasons are not reported",
                globals.join(name).display(),
                ty.map_or_else(|| "unknown type".to_string(), |t| format!("{t:?}"))
            ));
        };
        match generation {
            None => generation = Some(g),
            Some(prev) if prev != g => return Err(format!("{} mixes policy maps of Cilium {} and {}; tracer will not guess which layout the datapath uses: Cilium reasons are not reported", globals.display(), prev.releases(), g.releases())),
            Some(_) => {}
        }
    }
    // Every Cilium release pins a policy map per endpoint (the health endpoint's at least); the
    // other maps' shapes do not tell the releases apart, so without one nothing is decoded.
    let Some(generation) = generation else {
        return Err(format!("{} has cilium_metrics but no per-endpoint cilium_policy_* map, so the Cilium release (and its file ids) cannot be told; tracer will not guess: Cilium reasons are not reported", globals.display()));
    };
    let want = if generation.ipcache_v2() { shared::IPCACHE_V2 } else { shared::IPCACHE_V1 };
    let ipcache = Some((globals.join(want.pin_name), want)).filter(|(p, _)| p.exists());
    if let Some((p, l)) = &ipcache {
        read::open(p, *l).map_err(|e| format!("{e}: Cilium reasons are not reported"))?;
    }
    let lxc = globals.join(shared::LXC.pin_name);
    if lxc.exists() {
        read::open(&lxc, shared::LXC).map_err(|e| format!("{e}: Cilium reasons are not reported"))?;
    }
    Ok(Some(Pinned { globals, generation, ipcache }))
}

pub type Metrics = PerCpuHashMap<MapData, [u8; 8], [u64; 2]>;

/// Opens `cilium_metrics`, refusing any other shape than Cilium's (per-CPU hash, 8 B/16 B).
pub fn open_metrics(path: &Path) -> Result<Metrics, String> {
    let (ty, k, v) = map_info(path)?;
    if ty != Some(MapType::PerCpuHash) || k != layout::METRICS_KEY_SIZE || v != layout::METRICS_VALUE_SIZE {
        return Err(format!(
            "{} has an unknown layout ({}, key {k} B, value {v} B); tracer decodes cilium_metrics as Cilium 1.14-1.18 lay it out (percpu_hash, key 8 B, value 16 B) and will not guess at another: Cilium reasons are not reported",
            path.display(),
            ty.map_or_else(|| "unknown type".to_string(), |t| format!("{t:?}"))
        ));
    }
    let data = MapData::from_pin(path).map_err(|e| format!("cannot open pinned map {}: {e}", path.display()))?;
    PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every key's packets and bytes now.
pub fn read_metrics(m: &Metrics) -> Result<Counters, String> {
    let mut out = Counters::new();
    // Cilium keeps a few hundred keys at most (reasons × lines); the bound is for safety.
    for item in m.iter().take(65_536) {
        let (k, per_cpu) = item.map_err(|e| format!("cannot read cilium_metrics: {e}"))?;
        let e = out.entry(MetricsKey::decode(&k)).or_default();
        for v in per_cpu.iter() {
            e.0 = e.0.saturating_add(v[0]);
            e.1 = e.1.saturating_add(v[1]);
        }
    }
    Ok(out)
}

pub fn endpoints(p: &Pinned) -> Vec<Endpoint> {
    let path = p.globals.join(shared::LXC.pin_name);
    let mut skipped = 0;
    if path.exists() { read::read_endpoints(&path, &mut skipped).unwrap_or_default() } else { Vec::new() }
}

/// The identity the ipcache gives an address (longest prefix), when pinned and known.
pub fn identity(p: &Pinned, ip: IpAddr) -> Option<u32> {
    let (path, l) = p.ipcache.as_ref()?;
    let data = read::open(path, *l).ok()?;
    let mut key = [0u8; shared::IPCACHE_KEY_DATA_SIZE];
    let bits = match ip {
        IpAddr::V4(a) => {
            key[3] = 1;
            key[4..8].copy_from_slice(&a.octets());
            32
        }
        IpAddr::V6(a) => {
            key[3] = 2;
            key[4..20].copy_from_slice(&a.octets());
            128
        }
    };
    let key = Key::new(32 + bits, key);
    let value: [u8; 4] = if l.value_size as usize == shared::IPCACHE_V1_VALUE_SIZE {
        let t: LpmTrie<MapData, [u8; shared::IPCACHE_KEY_DATA_SIZE], [u8; shared::IPCACHE_V1_VALUE_SIZE]> = LpmTrie::try_from(Map::LpmTrie(data)).ok()?;
        t.get(&key, 0).ok()?[..4].try_into().ok()?
    } else {
        let t: LpmTrie<MapData, [u8; shared::IPCACHE_KEY_DATA_SIZE], [u8; shared::IPCACHE_V2_VALUE_SIZE]> = LpmTrie::try_from(Map::LpmTrie(data)).ok()?;
        t.get(&key, 0).ok()?[..4].try_into().ok()?
    };
    Some(u32::from_ne_bytes(value))
}

/// A policy map's pin name and entries.
pub type Policy = (String, Vec<(PolicyKey, PolicyValue)>);

/// A pinned policy map's entries (key, value), at most `MAX` of them.
pub fn policy_entries(pinned: &Pinned, endpoint: u16) -> Result<Policy, String> {
    const MAX: usize = 1_048_576;
    let g = pinned.generation;
    let name = g.policy_pin(endpoint);
    let path = pinned.globals.join(&name);
    let data = MapData::from_pin(&path).map_err(|e| format!("cannot open pinned map {}: {e}", path.display()))?;
    let info = data.info().map_err(|e| format!("{}: {e}", path.display()))?;
    if layout::policy_generation(&name, info.map_type().ok(), info.key_size(), info.value_size()) != Some(g) {
        return Err(format!("{} is not in the Cilium {} layout of the other maps", path.display(), g.releases()));
    }
    let err = |e: aya::maps::MapError| format!("cannot iterate {}: {e}", path.display());
    let mut out = Vec::new();
    if g == Generation::V1_18 {
        let map: LpmTrie<MapData, [u8; 8], [u8; layout::POLICY_V2_VALUE_SIZE as usize]> = LpmTrie::try_from(Map::LpmTrie(data)).map_err(|e| format!("{}: {e}", path.display()))?;
        for item in map.iter().take(MAX) {
            let (k, v) = item.map_err(err)?;
            out.push((PolicyKey::from_lpm(k.prefix_len(), &k.data()), PolicyValue::decode(&v, k.prefix_len())));
        }
    } else {
        let map: LpmTrie<MapData, [u8; 8], [u8; layout::POLICY_VALUE_SIZE as usize]> = LpmTrie::try_from(Map::LpmTrie(data)).map_err(|e| format!("{}: {e}", path.display()))?;
        for item in map.iter().take(MAX) {
            let (k, v) = item.map_err(err)?;
            out.push((PolicyKey::from_lpm(k.prefix_len(), &k.data()), PolicyValue::decode(&v, k.prefix_len())));
        }
    }
    Ok((name, out))
}
