//! One snapshot of the node's network state: iptables (both back ends, with counters), the
//! nftables ruleset, links/addresses/routes/rules/neighbours of the root and the named network
//! namespaces, conntrack statistics, the sysctls that decide pod connectivity, and the doctor
//! report. Read-only; a missing tool or a failing command is recorded, never fatal.
use std::path::Path;

use serde_json::{Map, Value, json};

use super::{Format, Recorder};
use crate::doctor::{self, node};

/// Named namespaces snapshotted at most (a node has about one per pod; this bounds the time).
const MAX_NETNS: usize = 256;
const NETNS_DIR: &str = "/var/run/netns";

struct Cmd {
    file: String,
    program: &'static str,
    args: Vec<String>,
    format: Format,
}

fn cmd(file: impl Into<String>, program: &'static str, args: &[&str], format: Format) -> Cmd {
    Cmd { file: file.into(), program, args: args.iter().map(|s| (*s).to_string()).collect(), format }
}

fn ip_cmds(prefix: &str, netns: Option<&str>) -> Vec<Cmd> {
    let views: [(&str, &[&str]); 7] = [
        ("link", &["-d", "-j", "link", "show"]),
        ("addr", &["-d", "-j", "addr", "show"]),
        ("route4", &["-d", "-j", "-4", "route", "show", "table", "all"]),
        ("route6", &["-d", "-j", "-6", "route", "show", "table", "all"]),
        ("rule4", &["-j", "-4", "rule", "show"]),
        ("rule6", &["-j", "-6", "rule", "show"]),
        ("neigh", &["-d", "-j", "neigh", "show"]),
    ];
    views
        .iter()
        .map(|(name, args)| {
            let mut full: Vec<String> = netns.map(|n| vec!["-n".to_string(), n.to_string()]).unwrap_or_default();
            full.extend(args.iter().map(|s| (*s).to_string()));
            Cmd { file: format!("{prefix}/{name}.json"), program: "ip", args: full, format: Format::Json }
        })
        .collect()
}

/// Names under /var/run/netns, sorted, at most `MAX_NETNS` (the rest are recorded as skipped).
fn named_netns(rec: &mut Recorder, phase: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.contains('/') && !n.starts_with('.')).collect())
        .unwrap_or_default();
    names.sort();
    if names.len() > MAX_NETNS {
        rec.skip(format!("{phase}: ip state of {} namespaces under {NETNS_DIR}", names.len() - MAX_NETNS), format!("more than {MAX_NETNS} namespaces"));
        names.truncate(MAX_NETNS);
    }
    names
}

pub fn take(rec: &mut Recorder, phase: &'static str) {
    let mut cmds = vec![
        cmd("netfilter/iptables-nft-v4.txt", "iptables-nft-save", &["-c"], Format::IptablesSave),
        cmd("netfilter/iptables-nft-v6.txt", "ip6tables-nft-save", &["-c"], Format::IptablesSave),
        cmd("netfilter/iptables-legacy-v4.txt", "iptables-legacy-save", &["-c"], Format::IptablesSave),
        cmd("netfilter/iptables-legacy-v6.txt", "ip6tables-legacy-save", &["-c"], Format::IptablesSave),
        cmd("netfilter/nft.json", "nft", &["-j", "list", "ruleset"], Format::Json),
    ];
    cmds.extend(ip_cmds("ip/root", None));
    for n in named_netns(rec, phase) {
        cmds.extend(ip_cmds(&format!("ip/netns/{n}"), Some(&n)));
    }
    for c in cmds {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let source = format!("{} {}", c.program, c.args.join(" "));
        match node::run(c.program, &args) {
            Ok(Some(out)) => rec.write(phase, &c.file, &source, c.format, out.as_bytes()),
            Ok(None) => rec.skip(format!("{phase}/{}", c.file), format!("{} is not installed", c.program)),
            Err(e) => rec.skip(format!("{phase}/{}", c.file), format!("{e:#}")),
        }
    }
    let stat = "/proc/net/stat/nf_conntrack";
    match std::fs::read(stat) {
        Ok(b) => rec.write(phase, "conntrack/stat.txt", stat, Format::Text, &b),
        Err(e) => rec.skip(format!("{phase}/conntrack/stat.txt"), format!("cannot read {stat}: {e}")),
    }
    rec.write_json(phase, "sysctls.json", "/proc/sys", &sysctls());
    match doctor::collect(&crate::args::DoctorArgs::default()) {
        Ok(report) => rec.write(phase, "doctor.json", "tracer doctor --json", Format::Json, report.to_json().as_bytes()),
        Err(e) => rec.skip(format!("{phase}/doctor.json"), format!("{e:#}")),
    }
}

/// The sysctls that decide whether pod traffic flows, plus per-device ones for pod-facing
/// devices.
fn sysctls() -> Value {
    let mut keys: Vec<String> = [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/forwarding",
        "net/ipv6/conf/all/forwarding",
        "net/ipv4/conf/all/rp_filter",
        "net/ipv4/conf/default/rp_filter",
        "net/ipv4/conf/all/accept_local",
        "net/netfilter/nf_conntrack_count",
        "net/netfilter/nf_conntrack_max",
        "net/netfilter/nf_conntrack_buckets",
        "net/netfilter/nf_conntrack_tcp_be_liberal",
        "net/ipv4/neigh/default/gc_thresh1",
        "net/ipv4/neigh/default/gc_thresh2",
        "net/ipv4/neigh/default/gc_thresh3",
        "net/ipv6/neigh/default/gc_thresh3",
        "net/core/netdev_max_backlog",
        "net/core/rmem_max",
        "net/core/wmem_max",
        "net/bridge/bridge-nf-call-iptables",
        "kernel/unprivileged_bpf_disabled",
        "net/core/bpf_jit_enable",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    if let Ok(devs) = std::fs::read_dir("/proc/sys/net/ipv4/conf") {
        let mut names: Vec<String> = devs.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("lxc") || n.starts_with("cilium_") || n.starts_with("eth")).collect();
        names.sort();
        for n in names.into_iter().take(4096) {
            keys.push(format!("net/ipv4/conf/{n}/rp_filter"));
            keys.push(format!("net/ipv4/conf/{n}/forwarding"));
        }
    }
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = node::sysctl(&k) {
            m.insert(k.replace('/', "."), Value::String(v));
        }
    }
    Value::Object(m)
}

/// Kernel, OS and tool versions (once per bundle).
pub fn versions() -> Value {
    let tool = |p: &str, args: &[&str]| -> Value {
        match node::run(p, args) {
            Ok(Some(out)) => Value::String(out.lines().next().unwrap_or("").trim().to_string()),
            Ok(None) => Value::Null,
            Err(e) => Value::String(format!("error: {e:#}")),
        }
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())));
    json!({
        "tracer": env!("CARGO_PKG_VERSION"),
        "kernel_release": read_trim("/proc/sys/kernel/osrelease"),
        "kernel_version": read_trim("/proc/version"),
        "os": os,
        "tools": {
            "iptables": tool("iptables", &["--version"]),
            "iptables-legacy": tool("iptables-legacy", &["--version"]),
            "nft": tool("nft", &["--version"]),
            "ip": tool("ip", &["-V"]),
            "tc": tool("tc", &["-V"]),
            "bpftool": tool("bpftool", &["version"]),
        }
    })
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(p)).ok().map(|s| s.trim().to_string())
}
