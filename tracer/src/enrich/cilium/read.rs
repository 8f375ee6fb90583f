//! Reading Cilium's pinned maps, read-only, for the doctor and the drop attribution alike: a
//! map is opened only when its type and sizes are exactly a layout we decode (else one line
//! says so), and iterated within a bound.
use std::path::Path;

use aya::maps::{Map, MapData, lpm_trie::LpmTrie};

use super::endpoints::{self as layout, Endpoint, IpcacheEntry, Layout};

/// Entries read at most per map: Cilium's own maximum for both maps is ≤ 512 000.
const MAX_ENTRIES: usize = 1_048_576;

/// Opens a pinned map and checks it is exactly the layout we decode; anything else is refused.
pub fn open(path: &Path, l: Layout) -> Result<MapData, String> {
    let data = MapData::from_pin(path).map_err(|e| format!("cannot open pinned map {}: {e}", path.display()))?;
    let info = data.info().map_err(|e| format!("cannot read map info of {}: {e}", path.display()))?;
    let ty = info.map_type().ok();
    if ty != Some(l.map_type) || info.key_size() != l.key_size || info.value_size() != l.value_size {
        return Err(format!(
            "{} has an unknown layout ({:?}, key {} B, value {} B); tracer decodes {} as Cilium {} lays it out ({}, key {} B, value {} B) and will not guess at another: check the Cilium version on this node",
            path.display(),
            ty.map_or_else(|| "unknown type".to_string(), |t| format!("{t:?}")),
            info.key_size(),
            info.value_size(),
            l.pin_name,
            l.releases,
            l.type_name,
            l.key_size,
            l.value_size
        ));
    }
    Ok(data)
}

pub fn read_endpoints(path: &Path, undecodable: &mut usize) -> Result<Vec<Endpoint>, String> {
    let data = open(path, layout::LXC)?;
    let map: aya::maps::HashMap<MapData, [u8; layout::ENDPOINT_KEY_SIZE], [u8; layout::ENDPOINT_INFO_SIZE]> =
        aya::maps::HashMap::try_from(Map::HashMap(data)).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for item in map.iter().take(MAX_ENTRIES) {
        let (k, v) = item.map_err(|e| format!("cannot iterate {}: {e}", path.display()))?;
        match layout::endpoint(&k, &v) {
            Some(e) => out.push(e),
            None => *undecodable += 1,
        }
    }
    Ok(out)
}

pub fn read_ipcache(path: &Path, l: Layout, undecodable: &mut usize) -> Result<Vec<IpcacheEntry>, String> {
    let data = open(path, l)?;
    let mut out = Vec::new();
    let mut push = |prefix: u32, k: &[u8; layout::IPCACHE_KEY_DATA_SIZE], v: &[u8]| match layout::ipcache(prefix, k, v) {
        Some(e) => out.push(e),
        None => *undecodable += 1,
    };
    let err = |e: aya::maps::MapError| format!("cannot iterate {}: {e}", path.display());
    if l.value_size as usize == layout::IPCACHE_V1_VALUE_SIZE {
        let t: LpmTrie<MapData, [u8; layout::IPCACHE_KEY_DATA_SIZE], [u8; layout::IPCACHE_V1_VALUE_SIZE]> =
            LpmTrie::try_from(Map::LpmTrie(data)).map_err(|e| format!("{}: {e}", path.display()))?;
        for item in t.iter().take(MAX_ENTRIES) {
            let (k, v) = item.map_err(err)?;
            push(k.prefix_len(), &k.data(), &v);
        }
    } else {
        let t: LpmTrie<MapData, [u8; layout::IPCACHE_KEY_DATA_SIZE], [u8; layout::IPCACHE_V2_VALUE_SIZE]> =
            LpmTrie::try_from(Map::LpmTrie(data)).map_err(|e| format!("{}: {e}", path.display()))?;
        for item in t.iter().take(MAX_ENTRIES) {
            let (k, v) = item.map_err(err)?;
            push(k.prefix_len(), &k.data(), &v);
        }
    }
    Ok(out)
}
