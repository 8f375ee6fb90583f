//! Rulesets of a Kubernetes-sized node (issue 18), shared by the scale test and the bench's
//! scale arm (through `testbed-node --print-kube-rules`); listing tools that wait or log, and
//! a DROP only the rule counters can name (the counter-window tests).
use std::{fmt::Write as _, net::Ipv4Addr, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::Result;

use crate::{IptRule, Node, TempDir};

/// `iptables-nft-restore --noflush` input: KUBE-SERVICES jumped to from FORWARD, one
/// KUBE-SVC chain per service (comment, a conntrack rule, an ACCEPT for its endpoints' range,
/// a DROP for another port). None of it matches UDP: a UDP drop after it is decided by rule
/// evaluation alone after walking all of it.
#[must_use]
pub fn kube_proxy_like(rules: usize) -> String {
    let services = rules / 4;
    let mut s = String::from("*filter\n:KUBE-SERVICES - [0:0]\n");
    for i in 0..services {
        writeln!(s, ":KUBE-SVC-{i:05} - [0:0]").expect("writing to a String");
    }
    s.push_str("-A FORWARD -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    for i in 0..services {
        let (hi, lo) = (i / 250, i % 250 + 1);
        writeln!(s, "-A KUBE-SERVICES -d 10.96.{hi}.{lo}/32 -p tcp -m comment --comment \"ns/svc-{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-{i:05}").expect("writing to a String");
        writeln!(s, "-A KUBE-SVC-{i:05} -m comment --comment \"ns/svc-{i}:http\" -m conntrack --ctstate INVALID -j DROP").expect("writing to a String");
        writeln!(s, "-A KUBE-SVC-{i:05} -s 10.244.{}.0/24 -m comment --comment \"ns/svc-{i}:http -> endpoints\" -j ACCEPT", i % 250).expect("writing to a String");
        writeln!(s, "-A KUBE-SVC-{i:05} -p tcp -m comment --comment \"ns/svc-{i}:http other port\" -m tcp --dport 81 -j DROP").expect("writing to a String");
    }
    s.push_str("COMMIT\n");
    s
}

/// A directory of wrappers for the ruleset listing tools, first on the `PATH` returned (for the
/// tracer's environment): each runs the shell line `first(dir, tool)`, then the real tool.
#[must_use]
pub fn wrapped_tools(first: impl Fn(&Path, &str) -> String) -> (TempDir, String) {
    let dir = TempDir::new("tb-tools").expect("a temporary directory");
    let path = std::env::var("PATH").unwrap_or_default();
    for tool in ["nft", "iptables-save", "ip6tables-save", "iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"] {
        let Some(real) = std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file()) else { continue };
        let at = dir.join(tool);
        std::fs::write(&at, format!("#!/bin/sh\n{}\nexec {} \"$@\"\n", first(dir.path(), tool), real.display())).expect("a wrapper written");
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).expect("a wrapper made executable");
    }
    let path = format!("{}:{path}", dir.path().display());
    (dir, path)
}

/// FORWARD → `chain`: an `nth` statistic DROP, then a DROP of udp to `to`:`port` (the one
/// returned), with `tool` (iptables or iptables-legacy). A statistic match (kube-proxy's load
/// balancing uses them) depends on a counter the kernel keeps per rule: neither the packet nor
/// its conntrack facts decide it, so only the rule counters of the window rule it out and every
/// drop waits for a window. (The millionth packet would match; the bursts are shorter.)
pub fn guarded_drop(node: &mut Node, tool: &str, chain: &str, to: Ipv4Addr, port: u16) -> Result<IptRule> {
    node.exec(tool, &["-w", "-N", chain])?;
    node.exec(tool, &["-w", "-A", "FORWARD", "-m", "comment", "--comment", &format!("feeder: {chain}"), "-j", chain])?;
    node.exec(tool, &["-w", "-A", chain, "-m", "statistic", "--mode", "nth", "--every", "1000000", "--packet", "999999", "-j", "DROP"])?;
    let rule: &[&str] = &["-d", &to.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"];
    if tool == "iptables-legacy" { node.iptables_legacy("filter", chain, rule) } else { node.iptables("filter", chain, rule) }
}
