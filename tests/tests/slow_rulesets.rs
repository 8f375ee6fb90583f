//! A slow `iptables-save`/`nft` (a node with tens of thousands of rules) must not cost events
//! (issue 11): the ring is read on its own thread and ruleset listings run on a worker, so a
//! burst of netfilter drops whose rule only the rule counters can name is kept whole while
//! every listing takes 3 s. Needs root.
//!
//! Sizes: the event ring is 8 MiB (tracer-ebpf/src/maps.rs). With `--snaplen 2048` and
//! 1,400-byte datagrams an event takes 1,544 bytes there, so the ring holds about 5,400 of
//! them: the burst below (12,000, sent in well under a second) fits the ring when it is
//! drained, but not a ring left alone for the ≥ 9 s of the listings the event loop used to run
//! itself once 4,096 drops waited (7,900 events would have had to wait in the ring).
use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::Duration,
};

use integration_tests::{Feature, Node, TempDir, Tracer, cmd, pcap, require, wait};

const BURST: usize = 12_000;
const PAYLOAD: [u8; 1400] = [0x5a; 1400];
const PORT: u16 = 32_077;
/// Each listing sleeps this long first.
const DELAY_S: u32 = 3;

/// A directory of `iptables-save`/`nft`… wrappers that sleep `DELAY_S` then run the real tool,
/// first on the PATH the tracer gets.
fn slow_tools() -> (TempDir, String) {
    let dir = TempDir::new("tb-slowtools").unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    for tool in ["nft", "iptables-save", "ip6tables-save", "iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"] {
        let Some(real) = std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file()) else { continue };
        write_shim(&dir.join(tool), &real);
    }
    let path = format!("{}:{path}", dir.path().display());
    (dir, path)
}

fn write_shim(at: &Path, real: &Path) {
    std::fs::write(at, format!("#!/bin/sh\nsleep {DELAY_S}\nexec {} \"$@\"\n", real.display())).unwrap();
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_burst_is_kept_whole_while_ruleset_listings_are_slow() {
    // The rule is named per packet from its observer: BPF netfilter links (≥ 6.4).
    if !require(Feature::NetfilterLink) {
        return;
    }
    let (_tools, path) = slow_tools();
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    node.exec("iptables", &["-w", "-N", "CILIUM_FORWARD"]).unwrap();
    node.exec("iptables", &["-w", "-A", "FORWARD", "-m", "comment", "--comment", "cilium-feeder: CILIUM_FORWARD", "-j", "CILIUM_FORWARD"]).unwrap();
    // A statistic match (kube-proxy's load balancing uses them) depends on a counter the kernel
    // keeps per rule: neither the packet nor its conntrack facts decide it, so only the rule
    // counters of the window rule this one out, and every drop waits for a (slow) listing.
    // (The millionth packet would match; the burst is far shorter.)
    node.exec("iptables", &["-w", "-A", "CILIUM_FORWARD", "-m", "statistic", "--mode", "nth", "--every", "1000000", "--packet", "999999", "-j", "DROP"]).unwrap();
    let rule = node.iptables("filter", "CILIUM_FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]).unwrap();
    let run = Tracer::from_env()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .capture()
        .env("PATH", &path)
        .arg("--snaplen")
        .arg("2048")
        .arg("--max-event-rate")
        .arg("0")
        .expression(format!("udp and src host {} and dst port {PORT}", a.ip))
        .start()
        .unwrap();
    assert_eq!(a.send_udp(32_177, b.addr(PORT), BURST, &PAYLOAD).unwrap(), BURST);
    wait::until("the rule counter", Duration::from_mins(2), Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= BURST as u64).then_some(())))
        .unwrap();
    let done = run.stop().unwrap().ok().unwrap();
    let line = cmd::run_in(node.netns(), "iptables-save", &[] as &[&str])
        .unwrap()
        .lines()
        .find(|l| l.starts_with("-A ") && l.contains(&rule.comment))
        .unwrap()
        .to_string();
    let summary = done.summary().unwrap();
    assert_eq!((summary["drops"].as_u64(), summary["lost_events"].as_u64()), (Some(BURST as u64), Some(0)), "stderr:\n{}", done.stderr);
    let drops: Vec<_> = done.events.iter().filter(|e| e["type"] == "drop").collect();
    assert_eq!(drops.len(), BURST, "drop events in the JSON");
    for e in &drops {
        let nf = &e["netfilter"];
        assert_eq!((nf["rule"].as_str(), nf["attribution"].as_str()), (Some(line.as_str()), Some("counters")), "{e}");
    }
    assert_eq!(pcap::read(done.pcap().unwrap()).unwrap().packets.len(), BURST, "packets in the pcapng");
}
