//! A slow `iptables-save`/`nft` (a node with tens of thousands of rules) must not cost events
//! (issue 11): the ring is read on its own thread and ruleset listings run on a worker, so a
//! burst of netfilter drops whose rule only the rule counters can name is kept whole while
//! every listing takes 3 s (iptables-legacy: its counters are only read by listing). And with
//! `nf_tables`, a counter window does not list the rules at all while they stand (issue 18):
//! the counters come over netlink, and a change of the rules brings one listing. Needs root.
//!
//! Sizes: the event ring is 8 MiB (tracer-ebpf/src/maps.rs). With `--snaplen 2048` and
//! 1,400-byte datagrams an event takes 1,562 bytes there, so the ring holds about 5,400 of
//! them. The burst below (12,000) is more than a ring left alone for the ≥ 9 s of the listings
//! the event loop used to run itself once 4,096 drops waited could keep: 7,900 events would
//! have had to wait in it. It goes in chunks, each waited for at the rule's counter (dropped,
//! so in the ring), a pace any machine's reader keeps: one sent whole fills the ring in ten
//! milliseconds on a fast machine, a test of how soon the reader is scheduled instead.
use std::time::Duration;

use integration_tests::{Feature, IptRule, Node, TempDir, Tracer, cmd, pcap, require, rules, wait};

const BURST: usize = 12_000;
const CHUNK: usize = 1_000;
const PAYLOAD: [u8; 1400] = [0x5a; 1400];
const PORT: u16 = 32_077;
/// Each listing sleeps this long first.
const DELAY_S: u32 = 3;

#[test]
fn a_burst_is_kept_whole_while_ruleset_listings_are_slow() {
    // The rule is named per packet from its observer: BPF netfilter links (≥ 6.4).
    if !require(Feature::NetfilterLink) {
        return;
    }
    let (_tools, path) = rules::wrapped_tools(|_, _| format!("sleep {DELAY_S}"));
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    // Legacy tables have no generation: every window lists them (slowly) again.
    let rule = rules::guarded_drop(&mut node, "iptables-legacy", "CILIUM_FORWARD", b.ip, PORT).unwrap();
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
    for sent in (CHUNK..=BURST).step_by(CHUNK) {
        assert_eq!(a.send_udp(32_177, b.addr(PORT), CHUNK, &PAYLOAD).unwrap(), CHUNK);
        wait::until("the rule counter", Duration::from_mins(2), Duration::from_millis(5), || Ok((node.iptables_packets(&rule)? >= sent as u64).then_some(())))
            .unwrap();
    }
    let done = run.stop().unwrap().ok().unwrap();
    let line = cmd::run_in(node.netns(), "iptables-legacy-save", &[] as &[&str])
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

fn listings(tools: &TempDir) -> usize {
    std::fs::read_to_string(tools.join("runs.log")).map_or(0, |s| s.lines().count())
}

#[test]
fn counter_windows_list_the_rules_again_only_when_they_change() {
    const PORT: u16 = 32_078;
    const OTHER: u16 = 32_079;
    const N: usize = 40;
    // Each run of a listing tool is a line in the log.
    let (tools, path) = rules::wrapped_tools(|dir, tool| format!("echo {tool} >> {}", dir.join("runs.log").display()));
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let rule = rules::guarded_drop(&mut node, "iptables", "CILIUM_FORWARD", b.ip, PORT).unwrap();
    // A second chain, whose drops come after windows that read only the first's counters.
    let other = rules::guarded_drop(&mut node, "iptables", "KUBE-FORWARD", b.ip, OTHER).unwrap();
    let run = Tracer::from_env()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .capture()
        .env("PATH", &path)
        .env("RUST_LOG", "tracer::netfilter::snapshot=debug")
        .arg("--max-event-rate")
        .arg("0")
        .expression(format!("udp and src host {} and (dst port {PORT} or dst port {OTHER})", a.ip))
        .start()
        .unwrap();
    // Bursts, each attributed (written) before the next: the first after whatever listing the
    // start or the first window needed, the second with the rules unchanged, the third to the
    // other chain (its counters last read before the second), the fourth after a rule went in
    // before the DROP (every position below it moved).
    let mut seen = Vec::new();
    for (burst, port) in (1..=4u64).zip([PORT, PORT, OTHER, PORT]) {
        if burst == 4 {
            node.exec("iptables", &["-w", "-I", "CILIUM_FORWARD", "1", "-p", "udp", "--dport", "9", "-j", "ACCEPT"]).unwrap();
        }
        let before = listings(&tools);
        assert_eq!(a.send_udp(32_178, b.addr(port), N, &[0x5a; 64]).unwrap(), N);
        run.wait_for_written(burst * N as u64).unwrap();
        seen.push((before, listings(&tools)));
    }
    let done = run.stop().unwrap().ok().unwrap();
    for i in [1, 2] {
        assert_eq!(seen[i].0, seen[i].1, "a window with the rules unchanged ran no listing tool (runs before/after each burst: {seen:?})");
    }
    assert!(seen[3].1 > seen[3].0, "the changed rules were listed again (runs before/after each burst: {seen:?})");
    // Observers place each drop at its hook: a window reads the counters of its candidate
    // chains alone (CILIUM_FORWARD's for the first port; for the other, KUBE-FORWARD's and
    // CILIUM_FORWARD's, whose statistic rule could have dropped it too), not those of the
    // node's other chains. Without BPF netfilter links (< 6.4) any hook could have: every one.
    let reads: Vec<&str> = done.stderr.lines().filter(|l| l.contains("read over netlink")).collect();
    let wanted: &[&str] = if Feature::NetfilterLink.probe().is_ok() { &["counters of 1 chains", "counters of 2 chains"] } else { &["counters of every chain"] };
    assert!(reads.len() >= 2 && reads.iter().all(|l| wanted.iter().any(|w| l.contains(w))), "each window without a change reads {wanted:?}: {reads:#?}");
    let saved = cmd::run_in(node.netns(), "iptables-save", &[] as &[&str]).unwrap();
    let line = |r: &IptRule| saved.lines().find(|l| l.starts_with("-A ") && l.contains(&r.comment)).unwrap().to_string();
    assert_eq!(node.iptables_packets(&rule).unwrap(), 3 * N as u64);
    assert_eq!(node.iptables_packets(&other).unwrap(), N as u64);
    let drops: Vec<_> = done.events.iter().filter(|e| e["type"] == "drop").collect();
    assert_eq!(drops.len(), 4 * N, "stderr:\n{}", done.stderr);
    for e in &drops {
        let nf = &e["netfilter"];
        let by = if e["dport"] == OTHER { &other } else { &rule };
        assert_eq!(nf["rule"].as_str(), Some(line(by).as_str()), "{e}");
        // Observers name the hook (counters decide between two rules); without BPF netfilter
        // links only the window's counters do.
        assert!(matches!(nf["attribution"].as_str(), Some("counters" | "window")), "{e}");
    }
}
