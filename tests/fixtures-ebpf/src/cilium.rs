//! A Cilium-like datapath for the tests: `cil_from_container` on a pod's lxc (tc ingress: what
//! leaves the pod) looks the destination up in the ipcache for its identity, looks
//! (identity, egress, protocol, port) up in the endpoint's policy map as Cilium does, and for
//! a denied flow counts the drop in the metrics map the way Cilium's `update_metrics` does
//! (key: reason, direction, line, file id) and returns TC_ACT_SHOT. Forwarded packets are
//! counted with reason 0, as Cilium counts them.
//!
//! The maps have Cilium's byte layouts (see the tracer's `enrich/cilium/layout.rs`); the
//! `cilium-fixture` binary pins them in a private bpffs under Cilium's names. `CONFIG[0]`
//! selects the release: 1: 1.14–1.15 (policy LPM trie 12 B/24 B, metrics keys without line
//! or file), 2: 1.16–1.17 (the same policy value, keys with line and file), 3: 1.18 (8 B
//! policy values, `cilium_ipcache_v2`), 4: the v1.19 development tree (12 B policy values);
//! `CONFIG[1]`, when not 0, is a destination port whose drops are also counted as "Stale or
//! unroutable IP", as if another drop were counted at the same moment (two reasons in one
//! window).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, PerCpuHashMap, lpm_trie::Key},
    programs::TcContext,
};

const CONTINUE: i32 = -1;
const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const BPF_F_NO_PREALLOC: u32 = 1;

/// Cilium's `METRIC_EGRESS`: what leaves an endpoint.
const METRIC_EGRESS: u8 = 2;
/// `bpf_lxc.c` in Cilium's file ids.
const FILE_BPF_LXC: u8 = 2;
const DROP_POLICY: u8 = 133;
const DROP_POLICY_DENY: u8 = 181;
const DROP_UNROUTABLE: u8 = 151;
/// The "source lines" the fixture reports (the tests expect these).
const LINE_POLICY: u16 = 1412;
const LINE_POLICY_DENY: u16 = 1421;
const LINE_UNROUTABLE: u16 = 1024;
/// Cilium's `WORLD_ID`: the identity of an address the ipcache does not know.
const WORLD_ID: u32 = 2;

#[map(name = "cilium_metrics")]
static METRICS: PerCpuHashMap<[u8; 8], [u64; 2]> = PerCpuHashMap::with_max_entries(1024, 0);

/// A metrics map of no Cilium release (value 24 B): pinned instead for the refusal test (the
/// loader creates every map of the object, used or not).
#[map(name = "METRICS_BAD")]
static METRICS_BAD: PerCpuHashMap<[u8; 8], [u64; 3]> = PerCpuHashMap::with_max_entries(16, 0);

#[map(name = "cilium_lxc")]
static LXC: HashMap<[u8; 20], [u8; 48]> = HashMap::with_max_entries(64, 0);

#[map(name = "cilium_ipcache")]
static IPCACHE: LpmTrie<[u8; 20], [u8; 12]> = LpmTrie::with_max_entries(64, BPF_F_NO_PREALLOC);

/// Cilium 1.14–1.17 policy map: LPM trie, key {identity, egress, protocol, dport be16}, value
/// 24 B (pinned as `cilium_policy_*` up to 1.16, `cilium_policy_v2_*` in 1.17).
#[map(name = "POLICY_LPM")]
static POLICY_LPM: LpmTrie<[u8; 8], [u8; 24]> = LpmTrie::with_max_entries(64, BPF_F_NO_PREALLOC);

/// Cilium 1.18: `cilium_ipcache_v2` (value 24 B) and `cilium_policy_v2_*` (value 8 B, the
/// counters moved out), pinned under those names by the fixture.
#[map(name = "IPCACHE_V2")]
static IPCACHE_V2: LpmTrie<[u8; 20], [u8; 24]> = LpmTrie::with_max_entries(64, BPF_F_NO_PREALLOC);

#[map(name = "POLICY_V2")]
static POLICY_V2: LpmTrie<[u8; 8], [u8; 8]> = LpmTrie::with_max_entries(64, BPF_F_NO_PREALLOC);

/// The v1.19 development tree's `cilium_policy_v2_*` (value 12 B: precedence, cookie), which
/// tracer must refuse (no release of it was checked).
#[map(name = "POLICY_V2_19")]
static POLICY_V2_19: LpmTrie<[u8; 8], [u8; 12]> = LpmTrie::with_max_entries(64, BPF_F_NO_PREALLOC);

#[map(name = "CONFIG")]
static CONFIG: Array<u32> = Array::with_max_entries(2, 0);

#[classifier]
pub fn cil_from_container(ctx: TcContext) -> i32 {
    match verdict(&ctx) {
        Ok(Some(reason)) => {
            let line = match reason {
                DROP_POLICY_DENY => LINE_POLICY_DENY,
                _ => LINE_POLICY,
            };
            count(reason, line, ctx.len());
            if let (Ok(Some(port)), Some(&also)) = (dport(&ctx), CONFIG.get(1))
                && also != 0
                && u32::from(port) == also
            {
                count(DROP_UNROUTABLE, LINE_UNROUTABLE, ctx.len());
            }
            TC_ACT_SHOT
        }
        Ok(None) => {
            count(0, 0, ctx.len());
            CONTINUE
        }
        Err(_) => CONTINUE,
    }
}

/// The destination port of a TCP/UDP IPv4 packet (0 for other protocols).
fn dport(ctx: &TcContext) -> Result<Option<u16>, i64> {
    let proto = ctx.load::<u8>(ETH_HLEN + 9)?;
    if proto != 6 && proto != 17 {
        return Ok(Some(0));
    }
    let ihl = usize::from(ctx.load::<u8>(ETH_HLEN)? & 0x0f) * 4;
    Ok(Some(u16::from_be(ctx.load::<u16>(ETH_HLEN + ihl + 2)?)))
}

/// `Some(reason)` when the policy drops the packet.
fn verdict(ctx: &TcContext) -> Result<Option<u8>, i64> {
    if u16::from_be(ctx.load::<u16>(12)?) != ETH_P_IP {
        return Ok(None);
    }
    let proto = ctx.load::<u8>(ETH_HLEN + 9)?;
    let dst = ctx.load::<[u8; 4]>(ETH_HLEN + 16)?;
    let port = dport(ctx)?.unwrap_or(0);
    let mut ip_key = [0u8; 20];
    ip_key[3] = 1;
    ip_key[4] = dst[0];
    ip_key[5] = dst[1];
    ip_key[6] = dst[2];
    ip_key[7] = dst[3];
    let generation = CONFIG.get(0).copied().unwrap_or(0);
    let identity = if generation >= 3 {
        IPCACHE_V2.get(Key::new(64, ip_key)).map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
    } else {
        IPCACHE.get(Key::new(64, ip_key)).map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
    }
    .unwrap_or(WORLD_ID);
    let found = match generation {
        3 => lookup_lpm(&POLICY_V2, identity, proto, port),
        4 => lookup_lpm(&POLICY_V2_19, identity, proto, port),
        _ => lookup_lpm(&POLICY_LPM, identity, proto, port),
    };
    Ok(match found {
        Some(true) => Some(DROP_POLICY_DENY),
        Some(false) => None,
        None => Some(DROP_POLICY),
    })
}

/// The identity's entry and the any-identity entry; a deny of either wins. `N`: the value size
/// (24 B up to 1.17, 8 B in 1.18; the `deny` flag is bit 0 of byte 2 in all).
fn lookup_lpm<const N: usize>(map: &LpmTrie<[u8; 8], [u8; N]>, identity: u32, proto: u8, port: u16) -> Option<bool> {
    let p = port.to_be_bytes();
    let id = identity.to_ne_bytes();
    let l3 = map.get(Key::new(64, [id[0], id[1], id[2], id[3], 1, proto, p[0], p[1]]));
    let l4 = map.get(Key::new(64, [0, 0, 0, 0, 1, proto, p[0], p[1]]));
    match (l3, l4) {
        (None, None) => None,
        (a, b) => Some(a.is_some_and(|v| v[2] & 1 != 0) || b.is_some_and(|v| v[2] & 1 != 0)),
    }
}

/// Cilium's `update_metrics`: one more packet and its bytes for (reason, direction, line,
/// file); 1.14 and 1.15 keep line and file reserved (zero).
fn count(reason: u8, line: u16, bytes: u32) {
    let (line, file) = if CONFIG.get(0).copied() == Some(1) { (0, 0) } else { (line, FILE_BPF_LXC) };
    let l = line.to_ne_bytes();
    let key = [reason, METRIC_EGRESS, l[0], l[1], file, 0, 0, 0];
    if let Some(v) = METRICS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot; a program does not run concurrently with itself on one CPU.
        unsafe {
            (*v)[0] += 1;
            (*v)[1] += u64::from(bytes);
        }
    } else {
        let _ = METRICS.insert(key, [1, u64::from(bytes)], 0);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
