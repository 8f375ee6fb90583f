//! Cilium's datapath state pinned under the bpffs (`<bpffs>/tc/globals/`): the endpoint map
//! (`cilium_lxc`: pod IP → host-side interface) and the ipcache (IP → identity). State here
//! survives agent restarts (incident 2), so entries can outlive the interfaces and pods they
//! describe. Maps are opened read-only in intent (we only look up and iterate) with aya.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use super::{
    cni::CniCache,
    node::{Link, fmt_mac},
    report::{Finding, Outcome, Severity},
};
use crate::{
    enrich::cilium::{
        endpoints::{self as layout, Endpoint, IpcacheEntry, Layout},
        read::{read_endpoints, read_ipcache},
    },
    netfilter::packet::Cidr,
};
const GLOBALS: &str = "tc/globals";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Identities below this are Cilium's reserved ones (`pkg/identity` `MinimalNumericIdentity`).
const MIN_POD_IDENTITY: u32 = 256;

#[derive(Debug, Default)]
pub struct CiliumState {
    pub globals: PathBuf,
    /// Whether the bpffs holds any pinned `cilium_*` object.
    pub pinned: bool,
    /// `None`: no `cilium_lxc` pinned. `Err`: present but unreadable or of an unknown layout.
    pub endpoints: Option<Result<Vec<Endpoint>, String>>,
    pub ipcache: Option<Result<(Layout, Vec<IpcacheEntry>), String>>,
    /// Entries skipped because their address family was not IPv4/IPv6.
    pub undecodable: usize,
}

fn is_bpffs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs(2) into a zeroed struct we own, with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    (unsafe { libc::statfs(c.as_ptr(), &raw mut st) }) == 0 && (st.f_type & 0xffff_ffff) == BPF_FS_MAGIC
}

/// Reads what there is; `Err` only when `bpffs` is given but is not a bpffs mount.
pub fn load(bpffs: &Path) -> Result<CiliumState, String> {
    if !is_bpffs(bpffs) {
        return Err(format!("{} is not a mounted bpffs (mount -t bpf); no pinned Cilium maps can be read there", bpffs.display()));
    }
    let globals = bpffs.join(GLOBALS);
    let mut st = CiliumState { globals: globals.clone(), ..CiliumState::default() };
    st.pinned = std::fs::read_dir(&globals).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("cilium_")));
    let lxc = globals.join(layout::LXC.pin_name);
    if lxc.exists() {
        st.endpoints = Some(read_endpoints(&lxc, &mut st.undecodable));
    }
    // 1.18 pins cilium_ipcache_v2 and may leave the old map beside it; the new one is current.
    for l in [layout::IPCACHE_V2, layout::IPCACHE_V1] {
        let p = globals.join(l.pin_name);
        if p.exists() {
            st.ipcache = Some(read_ipcache(&p, l, &mut st.undecodable).map(|v| (l, v)));
            break;
        }
    }
    Ok(st)
}

fn endpoint_text(e: &Endpoint) -> String {
    format!("{} → ifindex {} (endpoint {}, identity {}, pod MAC {}, host-side MAC {})", e.ip, e.ifindex, e.lxc_id, e.sec_id, fmt_mac(e.mac), fmt_mac(e.node_mac))
}

/// `cilium_lxc` against the node's interfaces and the CNI cache.
pub fn check_endpoints(st: &CiliumState, links: &[Link], cni: Option<&CniCache>) -> Outcome {
    let Some(endpoints) = &st.endpoints else {
        return Outcome::Skipped(format!("no {} pinned under {}", layout::LXC.pin_name, st.globals.display()));
    };
    let endpoints = match endpoints {
        Ok(e) => e,
        Err(e) => return Outcome::Error(e.clone()),
    };
    let by_index: HashMap<u32, &Link> = links.iter().map(|l| (l.ifindex, l)).collect();
    let mut stale = Vec::new();
    let mut pods = 0;
    for e in endpoints.iter().filter(|e| !e.is_host()) {
        pods += 1;
        // No interface recorded (e.g. endpoints living in the host namespace): nothing to compare.
        if e.ifindex == 0 {
            continue;
        }
        match by_index.get(&e.ifindex) {
            None => stale.push(format!("{}: no interface has ifindex {} any more", endpoint_text(e), e.ifindex)),
            Some(l) if e.node_mac != [0; 6] && l.mac.is_some_and(|m| m != e.node_mac) => stale.push(format!(
                "{}: ifindex {} is now {} with MAC {} (a different interface reused the index)",
                endpoint_text(e),
                e.ifindex,
                l.name,
                l.mac.map_or_else(String::new, fmt_mac)
            )),
            Some(_) => {}
        }
    }
    let mut findings = Vec::new();
    if !stale.is_empty() {
        findings.push(Finding::new(
            "cilium.endpoint-stale",
            Severity::Critical,
            format!("{} of {} Cilium endpoint entries point at interfaces that are gone or reused", stale.len(), pods),
            stale,
            format!(
                "Traffic to these pod IPs is delivered into nothing. Restart the cilium agent on this node so it restores and garbage-collects its endpoints; if the entries survive the restart (state kept in {} and /var/run/cilium), drain the node, stop the agent, remove the stale pinned state, and start it again — or reboot the node.",
                st.globals.display()
            ),
        ));
    }
    // An interface is covered by an entry with its ifindex and (when the entry has one) its MAC.
    let mut by_ifindex: HashMap<u32, Vec<&Endpoint>> = HashMap::new();
    for e in endpoints.iter().filter(|e| !e.is_host()) {
        by_ifindex.entry(e.ifindex).or_default().push(e);
    }
    let covered = |l: &Link| by_ifindex.get(&l.ifindex).is_some_and(|es| es.iter().any(|e| e.node_mac == [0; 6] || l.mac == Some(e.node_mac)));
    let orphans: Vec<String> = links
        .iter()
        .filter(|l| l.is_lxc() && !covered(l))
        .map(|l| format!("{} (ifindex {}, MAC {}) has no entry in {}", l.name, l.ifindex, l.mac.map_or_else(String::new, fmt_mac), layout::LXC.pin_name))
        .collect();
    if !orphans.is_empty() {
        findings.push(Finding::new(
            "cilium.lxc-without-endpoint",
            Severity::Warning,
            format!("{} lxc interfaces have no Cilium endpoint entry", orphans.len()),
            orphans,
            "Cilium no longer knows these pod interfaces: either their pods are gone and the veths were left behind (delete them with `ip link del`), or Cilium lost the endpoints (check `cilium-dbg endpoint list` and restart the agent).",
        ));
    }
    if let Some(cni) = cni {
        let endpoint_ips: HashSet<IpAddr> = endpoints.iter().map(|e| e.ip).collect();
        let names: HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        let missing: Vec<String> = cni
            .results
            .iter()
            .filter(|r| r.host_ifaces.iter().any(|i| names.contains(i.as_str())))
            .flat_map(|r| r.ips.iter().filter(|ip| !endpoint_ips.contains(ip)).map(move |ip| format!("{} ({}, {}) is not in {}", ip, r.label(), r.host_ifaces.join(","), layout::LXC.pin_name)))
            .collect();
        if !missing.is_empty() {
            findings.push(Finding::new(
                "cilium.pod-without-endpoint",
                Severity::Warning,
                format!("{} pod IPs set up by CNI have no Cilium endpoint entry", missing.len()),
                missing,
                "These pods have their interface but Cilium does not deliver to them: restart the cilium agent on this node so it restores its endpoints, then recreate the pods if they stay unreachable.",
            ));
        }
    }
    let detail = format!(
        "{} endpoint entries ({} endpoints, {} host IPs) in {}; Cilium {} layout{}",
        endpoints.len(),
        pods,
        endpoints.len() - pods,
        layout::LXC.pin_name,
        layout::LXC.releases,
        if st.undecodable > 0 { format!("; {} entries of unknown family skipped", st.undecodable) } else { String::new() }
    );
    Outcome::checked(detail, findings)
}

/// ipcache host entries for local pod IPs that no CNI result knows.
pub fn check_ipcache(st: &CiliumState, cni: Option<&CniCache>, pod_cidrs: &[Cidr]) -> Outcome {
    let Some(ipc) = &st.ipcache else {
        return Outcome::Skipped(format!("no cilium_ipcache(_v2) pinned under {}", st.globals.display()));
    };
    let (l, entries) = match ipc {
        Ok(v) => v,
        Err(e) => return Outcome::Error(e.clone()),
    };
    let Some(cni) = cni else {
        return Outcome::Skipped(format!("{} entries in {}; no CNI cache to compare them with", entries.len(), l.pin_name));
    };
    // Local pod IPs: endpoints this node delivers to, and addresses in --pod-cidr that are
    // not behind another node.
    let local: HashSet<IpAddr> = match &st.endpoints {
        Some(Ok(eps)) => eps.iter().filter(|e| !e.is_host()).map(|e| e.ip).collect(),
        _ => HashSet::new(),
    };
    let known: HashSet<IpAddr> = cni.results.iter().flat_map(|r| r.ips.iter().copied()).collect();
    // Reserved identities (< 256: host, world, health, ingress…) are Cilium's own addresses.
    let unknown: Vec<String> = entries
        .iter()
        .filter(|e| e.is_host_prefix() && e.sec_identity >= MIN_POD_IDENTITY && !known.contains(&e.ip))
        .filter(|e| local.contains(&e.ip) || (e.tunnel_endpoint.is_none() && pod_cidrs.iter().any(|c| c.contains(e.ip))))
        .map(|e| format!("{}/{} identity {} — no CNI result in {} has this IP", e.ip, e.prefix_len, e.sec_identity, cni.dir.display()))
        .collect();
    let mut findings = Vec::new();
    if !unknown.is_empty() {
        findings.push(Finding::new(
            "cilium.ipcache-unknown-pod",
            Severity::Warning,
            format!("{} local pod IPs in {} belong to no pod this node set up", unknown.len(), l.pin_name),
            unknown,
            "Leftover identity state for pods that no longer exist: a new pod given one of these IPs inherits the old identity until the agent resyncs. Restart the cilium agent; if entries persist, clear Cilium's pinned state during a drain.",
        ));
    }
    Outcome::checked(format!("{} entries in {} (Cilium {} layout), {} local pod IPs", entries.len(), l.pin_name, l.releases, local.len()), findings)
}
