//! Host settings and leftovers that silently break pod networking: forwarding, reverse-path
//! filtering, full conntrack and neighbour tables, pod interfaces and namespaces that outlived
//! their pods (incident 2: tens of thousands of lxc interfaces on one node).
use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use super::{
    cni::CniCache,
    node::{self, Link},
    report::{Finding, Outcome, Severity},
};

/// Fill levels (percent) for conntrack and neighbour tables.
const WARN_PCT: u64 = 75;
const CRIT_PCT: u64 = 90;
/// Processes scanned at most for their network namespace.
const MAX_PROCS: usize = 1_000_000;
const NSFS_MAGIC: i64 = 0x6e73_6673;

pub fn check_forwarding(links: &[Link], cilium: bool) -> Outcome {
    let pods = links.iter().any(Link::is_lxc);
    if !pods && !cilium {
        return Outcome::Skipped("no pod interfaces and no Cilium devices: not a pod node".into());
    }
    let Some(v4) = node::sysctl("net/ipv4/ip_forward") else {
        return Outcome::Error("cannot read /proc/sys/net/ipv4/ip_forward".into());
    };
    let mut findings = Vec::new();
    if v4 == "0" {
        findings.push(Finding::new(
            "host.ip-forward-off",
            Severity::Critical,
            "IPv4 forwarding is off: pods cannot reach anything beyond this node",
            vec!["net.ipv4.ip_forward = 0".into()],
            "Set `sysctl -w net.ipv4.ip_forward=1` and persist it in /etc/sysctl.d/; find what reset it (a sysctl file, a NetworkManager profile, a hardening script).",
        ));
    }
    Outcome::checked(format!("net.ipv4.ip_forward = {v4}"), findings)
}

pub fn check_rp_filter(links: &[Link]) -> Outcome {
    let devices: Vec<&Link> = links.iter().filter(|l| l.is_lxc() || l.name.starts_with("cilium_")).collect();
    if devices.is_empty() {
        return Outcome::Skipped("no lxc or cilium_* devices".into());
    }
    let all: u8 = node::sysctl("net/ipv4/conf/all/rp_filter").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut strict = Vec::new();
    for l in &devices {
        let Some(dev) = node::sysctl(&format!("net/ipv4/conf/{}/rp_filter", l.name)).and_then(|v| v.parse::<u8>().ok()) else { continue };
        // The kernel uses the larger of conf/all and conf/<dev>.
        if all.max(dev) == 1 {
            strict.push(format!("{}: rp_filter {dev}, all {all} → strict", l.name));
        }
    }
    let findings = if strict.is_empty() {
        Vec::new()
    } else {
        vec![Finding::new(
            "host.rp-filter-strict",
            Severity::Warning,
            format!("strict reverse-path filtering on {} Cilium/pod devices", strict.len()),
            strict,
            "Strict rp_filter drops pod traffic whose return route differs (kfree_skb reason IP_RPFILTER). Set it to 0 on lxc*/cilium_* (Cilium does so at start; systemd's 50-default.conf or a hardening profile may have reset it): `sysctl -w net.ipv4.conf.all.rp_filter=0` and a /etc/sysctl.d/ file with `net.ipv4.conf.lxc*.rp_filter = 0`.",
        )]
    };
    Outcome::checked(format!("{} devices checked, conf/all/rp_filter = {all}", devices.len()), findings)
}

fn fill(count: u64, max: u64) -> u64 {
    count.saturating_mul(100).checked_div(max).unwrap_or(0)
}

pub fn check_conntrack() -> Outcome {
    let read = |p: &str| node::sysctl(p).and_then(|v| v.parse::<u64>().ok());
    let (Some(count), Some(max)) = (read("net/netfilter/nf_conntrack_count"), read("net/netfilter/nf_conntrack_max")) else {
        return Outcome::Skipped("no conntrack in this network namespace (/proc/sys/net/netfilter/nf_conntrack_count)".into());
    };
    let pct = fill(count, max);
    let findings = if pct >= WARN_PCT {
        vec![Finding::new(
            "host.conntrack-full",
            if pct >= CRIT_PCT { Severity::Critical } else { Severity::Warning },
            format!("conntrack table {pct}% full"),
            vec![format!("nf_conntrack_count {count} of nf_conntrack_max {max}")],
            "When the table is full new connections are dropped (dmesg: \"nf_conntrack: table full, dropping packet\"). Raise net.netfilter.nf_conntrack_max, lower timeouts, or find the connection flood (`conntrack -S`, `conntrack -L | sort`).",
        )]
    } else {
        Vec::new()
    };
    Outcome::checked(format!("{count} of {max} entries ({pct}%)"), findings)
}

pub fn check_neighbours() -> Outcome {
    let (v4, v6) = match node::neighbour_counts() {
        Ok(c) => c,
        Err(e) => return Outcome::Error(format!("{e:#}")),
    };
    let mut findings = Vec::new();
    let mut detail = Vec::new();
    for (fam, count, sysctl) in [("IPv4", v4, "net/ipv4/neigh/default/gc_thresh3"), ("IPv6", v6, "net/ipv6/neigh/default/gc_thresh3")] {
        let Some(max) = node::sysctl(sysctl).and_then(|v| v.parse::<u64>().ok()) else { continue };
        let count = count as u64;
        let pct = fill(count, max);
        detail.push(format!("{fam} {count}/{max}"));
        if pct >= CRIT_PCT {
            findings.push(Finding::new(
                "host.neighbour-table-full",
                if count >= max { Severity::Critical } else { Severity::Warning },
                format!("{fam} neighbour table {pct}% of gc_thresh3"),
                vec![format!("{count} {fam} neighbour entries, {} = {max}", sysctl.replace('/', "."))],
                "Past gc_thresh3 the kernel refuses new neighbours (dmesg: \"neighbour table overflow\") and packets to new next hops are dropped. Raise gc_thresh1/2/3 (e.g. 8192/32768/65536 on large nodes) in /etc/sysctl.d/.",
            ));
        }
    }
    if detail.is_empty() {
        // gc_thresh* live in the initial namespace only (the limits are global).
        return Outcome::Skipped(format!("{v4} IPv4 / {v6} IPv6 entries; gc_thresh3 is not visible from this network namespace"));
    }
    Outcome::checked(detail.join(", "), findings)
}

/// lxc interfaces against the pods the CNI cache knows, both ways.
pub fn check_pod_interfaces(links: &[Link], cni: Option<&CniCache>) -> Outcome {
    let lxc: Vec<&Link> = links.iter().filter(|l| l.is_lxc()).collect();
    let Some(cni) = cni else {
        return Outcome::Skipped(format!("{} lxc interfaces; no CNI cache to compare with", lxc.len()));
    };
    let known: HashSet<&str> = cni.results.iter().flat_map(|r| r.host_ifaces.iter().map(String::as_str)).collect();
    let names: HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let orphans: Vec<String> = lxc.iter().filter(|l| !known.contains(l.name.as_str())).map(|l| format!("{} (ifindex {}) is in no CNI result", l.name, l.ifindex)).collect();
    let stale: Vec<String> = cni
        .results
        .iter()
        .filter(|r| !r.host_ifaces.is_empty() && r.host_ifaces.iter().all(|i| !names.contains(i.as_str())))
        .map(|r| format!("{} ({}): host interface {} is gone; IPs {}", r.file, r.label(), r.host_ifaces.join(","), r.ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")))
        .collect();
    let mut findings = Vec::new();
    if !orphans.is_empty() {
        findings.push(Finding::new(
            "host.lxc-without-pod",
            Severity::Warning,
            format!("{} of {} lxc interfaces belong to no pod in the CNI cache", orphans.len(), lxc.len()),
            orphans,
            "Leftover pod veths: each costs an ifindex, tc programs and neighbour entries, and in large numbers they slow every Cilium regeneration (incident 2). Confirm no pod uses them (`crictl pods`), then delete them with `ip link del <name>`.",
        ));
    }
    if !stale.is_empty() {
        findings.push(Finding::new(
            "host.cni-result-stale",
            Severity::Warning,
            format!("{} CNI results describe pods whose interface no longer exists", stale.len()),
            stale,
            format!("The runtime never ran CNI DEL for these sandboxes. Check `crictl pods` for them; if they are gone, remove the files from {}.", cni.dir.display()),
        ));
    }
    Outcome::checked(format!("{} lxc interfaces, {} pods in the CNI cache", lxc.len(), cni.results.len()), findings)
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs(2) into a zeroed struct we own, with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    ((unsafe { libc::statfs(c.as_ptr(), &raw mut st) }) == 0).then_some(st.f_type & 0xffff_ffff)
}

/// Container-runtime namespaces (`cni-…`) under `dir` that no process uses.
pub fn check_leftover_netns(dir: &Path) -> Outcome {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Outcome::Skipped(format!("no {}", dir.display()));
    };
    let in_use: HashSet<u64> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .take(MAX_PROCS)
                .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                .filter_map(|e| std::fs::metadata(e.path().join("ns/net")).ok().map(|m| m.ino()))
                .collect()
        })
        .unwrap_or_default();
    let mut total = 0;
    let mut leftovers = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        total += 1;
        if !name.starts_with("cni-") {
            continue;
        }
        let path = e.path();
        if fs_magic(&path) != Some(NSFS_MAGIC) {
            leftovers.push(format!("{}: not a mounted namespace any more (a dangling file)", path.display()));
        } else if let Ok(m) = std::fs::metadata(&path)
            && !in_use.contains(&m.ino())
        {
            leftovers.push(format!("{}: network namespace {} has no process", path.display(), m.ino()));
        }
    }
    let findings = if leftovers.is_empty() {
        Vec::new()
    } else {
        vec![Finding::new(
            "host.netns-leftover",
            Severity::Warning,
            format!("{} pod network namespaces outlived their pods", leftovers.len()),
            leftovers,
            "The runtime did not tear these sandboxes down (their interfaces and addresses may still be held). Check `crictl pods`; for ones no pod uses, `ip netns delete <name>` (or umount and remove the file).",
        )]
    };
    Outcome::checked(format!("{total} entries in {}", dir.display()), findings)
}
