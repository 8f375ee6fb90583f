//! Netfilter attribution (issue 3) on real rulesets and real traffic: every `NETFILTER_DROP`
//! names the table, chain and rule as the user's tool prints it, for iptables-nft,
//! iptables-legacy and native nftables, through jumps, in pods' own namespaces, and the
//! tracer leaves every ruleset exactly as it found it. Needs root.
use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use integration_tests::{Feature, Finished, Node, RunningCapture, Tracer, cmd, require, wait};
use serde_json::Value;

/// Bound on waiting for the kernel's own counters: only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_mins(1);

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Attribution rests on BPF netfilter observers: without them (Linux < 6.4) these tests skip,
/// saying so, instead of failing on a `netfilter: null` the tracer cannot avoid there.
fn observers_possible() -> bool {
    require(Feature::NetfilterLink)
}

/// How a lone matching rule must be attributed on this kernel: by its observer and rule
/// evaluation ("exact", or "counters" when a match cannot be evaluated), or, without BPF
/// netfilter links (< 6.4), by the rule counters of the window alone ("window").
fn expect_lone_rule_attribution(how: &str) {
    if Feature::NetfilterLink.probe().is_ok() {
        assert!(how == "exact" || how == "counters", "attribution {how}");
    } else {
        assert_eq!(how, "window", "attribution without observers");
    }
}

/// Stops the capture once it has counted `n` drops and read everything it counted.
fn stop(run: RunningCapture, n: u64) -> Finished {
    run.stop_after(n).unwrap().ok().unwrap()
}

/// The line `save` (iptables-save, iptables-legacy-save…) prints for the rule carrying
/// `needle` (a comment or other unique text), as the user would grep it.
fn save_line(netns: &str, save: &str, needle: &str) -> String {
    let out = cmd::run_in(netns, save, &[] as &[&str]).unwrap();
    out.lines()
        .find(|l| l.starts_with("-A ") && l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {save}:\n{out}"))
        .to_string()
}

/// The `netfilter` objects of the events whose dport is `dport`.
fn nf_of(done: &Finished, dport: u16) -> Vec<&Value> {
    done.events.iter().filter(|e| e["dport"] == dport).map(|e| &e["netfilter"]).collect()
}

/// Every event with `dport` is a `NETFILTER_DROP` attributed to `rule` with these fields.
fn expect_all(done: &Finished, dport: u16, n: usize, want: &Value) {
    let nfs = nf_of(done, dport);
    assert_eq!(nfs.len(), n, "events for port {dport}; stderr:\n{}", done.stderr);
    for nf in nfs {
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&nf[k], v, "netfilter.{k} for port {dport}: {nf}; stderr:\n{}", done.stderr);
        }
    }
}

fn by_rule_count(done: &Finished, rule: &str) -> u64 {
    done.summary().unwrap()["by_rule"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rule"] == rule)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn two_forward_rules_are_named_exactly() {
    if !observers_possible() {
        return;
    }
    let mut node = Node::new(3).unwrap();
    let (a, b, c) = (node.pod(0).clone(), node.pod(1).clone(), node.pod(2).clone());
    // A rule that matches neither flow comes first, so the answer is not "the first rule".
    let other = node.iptables("filter", "FORWARD", &["-d", &c.ip.to_string(), "-p", "tcp", "-j", "DROP"]).unwrap();
    let r1 = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "32001", "-j", "DROP"]).unwrap();
    let r2 = node.iptables("filter", "FORWARD", &["-d", &c.ip.to_string(), "-p", "udp", "--dport", "32002", "-j", "DROP"]).unwrap();
    let run = tracer().capture().expression(format!("udp and (port 32001 or port 32002) and src host {}", a.ip)).start().unwrap();
    assert_eq!(a.send_udp(32100, b.addr(32001), 7, b"one").unwrap(), 7);
    assert_eq!(a.send_udp(32101, c.addr(32002), 5, b"two").unwrap(), 5);
    wait::until("rule counters", TIMEOUT, Duration::from_millis(10), || {
        Ok((node.iptables_packets(&r1)? >= 7 && node.iptables_packets(&r2)? >= 5).then_some(()))
    })
    .unwrap();
    let done = stop(run, 12);
    assert_eq!(done.drops().unwrap(), 12);
    assert_eq!(node.iptables_packets(&other).unwrap(), 0);
    let l1 = save_line(node.netns(), "iptables-save", &r1.comment);
    let l2 = save_line(node.netns(), "iptables-save", &r2.comment);
    let common = |rule: &str| {
        serde_json::json!({"family": "ip", "table": "filter", "chain": "FORWARD", "hook": "forward",
            "priority": 0, "verdict": "DROP", "rule": rule, "backend": "iptables-nft", "attribution": "exact"})
    };
    expect_all(&done, 32001, 7, &common(&l1));
    expect_all(&done, 32002, 5, &common(&l2));
    assert_eq!(by_rule_count(&done, &l1), 7);
    assert_eq!(by_rule_count(&done, &l2), 5);
    // The pcapng comment carries the rule too.
    let comments = integration_tests::pcap::read(done.pcap().unwrap()).unwrap();
    assert!(comments.packets.iter().all(|p| p.comments.iter().any(|c| c.contains("-j DROP"))), "{:?}", comments.packets.first());
    eprintln!("two rules: {}", done.events[0]);
}

/// A forwarded packet's drop told by its route, with no observer at FORWARD: the node has
/// chains that can drop at PREROUTING (mangle), INPUT and FORWARD, so observers go before the
/// first two, and FORWARD's one chain is named from the route (`ip_forward`) of the drop. A
/// forwarded packet passes the PREROUTING observer first: its drop must still name the FORWARD
/// rule, not the mangle chain it last passed an observer of; drops at the other two hooks keep
/// their observers' slots.
#[test]
fn forwarded_drop_is_named_from_its_route_without_a_forward_observer() {
    if !observers_possible() {
        return;
    }
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let pre = node.iptables("mangle", "PREROUTING", &["-p", "udp", "--dport", "32073", "-j", "DROP"]).unwrap();
    let input = node.iptables("filter", "INPUT", &["-p", "udp", "--dport", "32072", "-j", "DROP"]).unwrap();
    let fwd = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "32071", "-j", "DROP"]).unwrap();
    // Observers in the node's namespace only: the links seen are all its own.
    let run = tracer().capture().arg("--netns").arg(node.netns()).expression(format!("udp and src host {} and portrange 32071-32073", a.ip)).start().unwrap();
    let links = integration_tests::kernel::observer_links();
    assert!(links.iter().any(|l| l.0 == 2 && l.1 == 0) && links.iter().any(|l| l.0 == 2 && l.1 == 1), "observers at PREROUTING and INPUT: {links:?}");
    assert!(!links.iter().any(|l| l.0 == 2 && (l.1 == 2 || l.1 == 4)), "no observer at FORWARD or POSTROUTING: {links:?}");
    assert_eq!(a.send_udp(32171, b.addr(32071), 6, b"forwarded").unwrap(), 6);
    assert_eq!(a.send_udp(32172, std::net::SocketAddrV4::new(node.gateway(), 32072), 4, b"to the node").unwrap(), 4);
    assert_eq!(a.send_udp(32173, b.addr(32073), 3, b"prerouting").unwrap(), 3);
    wait::until("rule counters", TIMEOUT, Duration::from_millis(10), || {
        Ok((node.iptables_packets(&fwd)? >= 6 && node.iptables_packets(&input)? >= 4 && node.iptables_packets(&pre)? >= 3).then_some(()))
    })
    .unwrap();
    let done = stop(run, 13);
    assert_eq!(done.drops().unwrap(), 13);
    let rule = |r: &integration_tests::IptRule| save_line(node.netns(), "iptables-save", &r.comment);
    let want = |table: &str, chain: &str, hook: &str, line: String| {
        serde_json::json!({"family": "ip", "table": table, "chain": chain, "hook": hook, "verdict": "DROP", "rule": line, "attribution": "exact"})
    };
    expect_all(&done, 32071, 6, &want("filter", "FORWARD", "forward", rule(&fwd)));
    expect_all(&done, 32072, 4, &want("filter", "INPUT", "input", rule(&input)));
    expect_all(&done, 32073, 3, &want("mangle", "PREROUTING", "prerouting", rule(&pre)));
    eprintln!("observers {links:?}; forwarded: {}", nf_of(&done, 32071)[0]);
}

#[test]
fn forward_policy_drop_without_a_matching_rule() {
    if !observers_possible() {
        return;
    }
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    // An ACCEPT for another port keeps the chain non-trivial; the flow below matches nothing.
    node.iptables("filter", "FORWARD", &["-p", "udp", "--dport", "9", "-j", "ACCEPT"]).unwrap();
    node.exec("iptables", &["-w", "-P", "FORWARD", "DROP"]).unwrap();
    let run = tracer().capture().expression(format!("udp port 32011 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(32110, b.addr(32011), 4, b"policy").unwrap(), 4);
    let done = stop(run, 4);
    node.exec("iptables", &["-w", "-P", "FORWARD", "ACCEPT"]).unwrap();
    assert_eq!(done.drops().unwrap(), 4);
    expect_all(&done, 32011, 4, &serde_json::json!({"table": "filter", "chain": "FORWARD", "rule": "policy DROP",
        "verdict": "DROP", "hook": "forward", "attribution": "exact"}));
    assert_eq!(by_rule_count(&done, "policy DROP"), 4);
}

#[test]
fn iptables_legacy_rule() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    node.exec("iptables-legacy", &["-w", "-A", "FORWARD", "-d", &b.ip.to_string(), "-p", "udp", "--dport", "32021", "-m", "comment", "--comment", "legacy-rule", "-j", "DROP"]).unwrap();
    let run = tracer().capture().expression(format!("udp port 32021 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(32120, b.addr(32021), 6, b"legacy").unwrap(), 6);
    let done = stop(run, 6);
    let line = save_line(node.netns(), "iptables-legacy-save", "legacy-rule");
    assert_eq!(done.drops().unwrap(), 6);
    expect_all(&done, 32021, 6, &serde_json::json!({"family": "ip", "table": "filter", "chain": "FORWARD",
        "hook": "forward", "priority": 0, "verdict": "DROP", "rule": line, "backend": "iptables-legacy"}));
    for nf in nf_of(&done, 32021) {
        expect_lone_rule_attribution(nf["attribution"].as_str().unwrap());
    }
    // The netns is gone with the node, and with it the legacy table.
}

#[test]
fn native_nft_rule_with_handle() {
    if !observers_possible() {
        return;
    }
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let body = format!(
        "chain fw_c {{ type filter hook forward priority -10; policy accept;\n ip daddr {} udp dport 32031 drop\n ip daddr {} udp dport 32032 counter drop\n }}",
        b.ip, b.ip
    );
    node.nft_table("inet", "tbfw", &body).unwrap();
    let listing = node.exec("nft", &["-a", "list", "chain", "inet", "tbfw", "fw_c"]).unwrap();
    let text_of = |port: &str| {
        let l = listing.lines().map(str::trim).find(|l| l.contains(port)).unwrap().to_string();
        // The counter's values change; the tracer names the rule without them.
        l.replace("counter packets 0 bytes 0", "counter")
    };
    let run = tracer().capture().expression(format!("udp and host {} and (port 32031 or port 32032)", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(32130, b.addr(32031), 3, b"nft").unwrap(), 3);
    assert_eq!(a.send_udp(32131, b.addr(32032), 2, b"nft").unwrap(), 2);
    let done = stop(run, 5);
    assert_eq!(done.drops().unwrap(), 5);
    for (port, n) in [(32031, 3), (32032, 2)] {
        let rule = text_of(&port.to_string());
        assert!(rule.contains("# handle "), "{rule}");
        expect_all(&done, port, n, &serde_json::json!({"family": "inet", "table": "tbfw", "chain": "fw_c", "hook": "forward",
            "priority": -10, "verdict": "DROP", "rule": rule, "backend": "nftables", "attribution": "exact"}));
    }
}

#[test]
fn rule_in_cilium_and_kube_chains_reached_by_jumps() {
    if !observers_possible() {
        return;
    }
    let mut node = Node::new(3).unwrap();
    let (a, b, c) = (node.pod(0).clone(), node.pod(1).clone(), node.pod(2).clone());
    for chain in ["CILIUM_FORWARD", "KUBE-FIREWALL"] {
        node.exec("iptables", &["-w", "-N", chain]).unwrap();
    }
    node.exec("iptables", &["-w", "-A", "FORWARD", "-m", "comment", "--comment", "cilium-feeder: CILIUM_FORWARD", "-j", "CILIUM_FORWARD"]).unwrap();
    node.exec("iptables", &["-w", "-A", "FORWARD", "-j", "KUBE-FIREWALL"]).unwrap();
    // A rule on conntrack state: the drop's own state (NEW, from the skb) rules it out, so
    // evaluation alone names the rule (before issue 16 the counters of the window had to).
    node.exec("iptables", &["-w", "-A", "CILIUM_FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]).unwrap();
    let cil = node.iptables("filter", "CILIUM_FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "32041", "-j", "DROP"]).unwrap();
    let kube = node.iptables("filter", "KUBE-FIREWALL", &["-d", &c.ip.to_string(), "-p", "udp", "--dport", "32042", "-j", "REJECT"]).unwrap();
    let run = tracer().capture().expression(format!("udp and src host {} and (port 32041 or port 32042)", a.ip)).start().unwrap();
    assert_eq!(a.send_udp(32140, b.addr(32041), 4, b"cilium").unwrap(), 4);
    assert_eq!(a.send_udp(32141, c.addr(32042), 3, b"kube").unwrap(), 3);
    wait::until("rule counters", TIMEOUT, Duration::from_millis(10), || {
        Ok((node.iptables_packets(&cil)? >= 4 && node.iptables_packets(&kube)? >= 3).then_some(()))
    })
    .unwrap();
    let done = stop(run, 7);
    let cl = save_line(node.netns(), "iptables-save", &cil.comment);
    let kl = save_line(node.netns(), "iptables-save", &kube.comment);
    expect_all(&done, 32041, 4, &serde_json::json!({"table": "filter", "chain": "CILIUM_FORWARD", "hook": "forward",
        "verdict": "DROP", "rule": cl, "path": ["FORWARD", "CILIUM_FORWARD"], "attribution": "exact"}));
    // KUBE-FIREWALL comes after CILIUM_FORWARD's INVALID rule: the state decides here too.
    expect_all(&done, 32042, 3, &serde_json::json!({"table": "filter", "chain": "KUBE-FIREWALL", "hook": "forward",
        "verdict": "REJECT", "rule": kl, "path": ["FORWARD", "KUBE-FIREWALL"], "attribution": "exact"}));
    assert!(done.events.iter().all(|e| e["ct"]["state"] == "NEW"), "{}", done.events[0]);
    assert_eq!(by_rule_count(&done, &cl), 4);
    assert_eq!(by_rule_count(&done, &kl), 3);
}

#[test]
fn input_rule_inside_a_pod_namespace() {
    if !observers_possible() {
        return;
    }
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    cmd::run_in(&b.netns, "iptables", &["-w", "-A", "INPUT", "-p", "udp", "--dport", "32051", "-m", "comment", "--comment", "pod-input", "-j", "DROP"]).unwrap();
    let run = tracer().capture().expression(format!("udp port 32051 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(32150, b.addr(32051), 5, b"input").unwrap(), 5);
    let done = stop(run, 5);
    let line = save_line(&b.netns, "iptables-save", "pod-input");
    assert_eq!(done.drops().unwrap(), 5);
    let inode = b.netns_inode().unwrap();
    assert!(done.events.iter().all(|e| e["netns"] == inode && e["ifname"] == "eth0"), "{}", done.events[0]);
    expect_all(&done, 32051, 5, &serde_json::json!({"table": "filter", "chain": "INPUT", "hook": "input",
        "verdict": "DROP", "rule": line, "attribution": "exact"}));
}

#[test]
fn tcp_reject_with_reset() {
    if !observers_possible() {
        return;
    }
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let r = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "tcp", "--dport", "32061", "-j", "REJECT", "--reject-with", "tcp-reset"]).unwrap();
    let run = tracer().capture().expression(format!("tcp port 32061 and host {}", b.ip)).start().unwrap();
    let res = a.tcp_connect(b.addr(32061), 3, Duration::from_secs(30)).unwrap();
    let done = stop(run, 3);
    assert_eq!(res.refused, 3, "the REJECT answered each SYN with a RST");
    let line = save_line(node.netns(), "iptables-save", &r.comment);
    // The RSTs the REJECT sends pass OUTPUT observers between the last FORWARD observer and
    // the drop; the attribution must still name the REJECT rule.
    expect_all(&done, 32061, 3, &serde_json::json!({"chain": "FORWARD", "verdict": "REJECT", "rule": line, "attribution": "exact"}));
}

/// Rulesets as the tools print them, without the "Generated … on <date>" comments.
fn rulesets(netns: Option<&str>) -> String {
    let mut out = String::new();
    for (prog, args) in [("iptables-save", vec![]), ("iptables-legacy-save", vec![]), ("ip6tables-save", vec![]), ("nft", vec!["list", "ruleset"])] {
        let text = match netns {
            Some(ns) => cmd::run_in(ns, prog, &args).unwrap_or_default(),
            None => cmd::run(prog, &args).unwrap_or_default(),
        };
        let _ = writeln!(out, "== {prog}");
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            out.push_str(&without_counters(l));
            out.push('\n');
        }
    }
    out
}

/// `counter packets 2 bytes 58` → `counter`: the traffic moves counters, not the ruleset.
fn without_counters(line: &str) -> String {
    let w: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < w.len() {
        out.push(w[i]);
        i += if w[i] == "counter" && w.get(i + 1) == Some(&"packets") { 5 } else { 1 };
    }
    out.join(" ")
}

#[test]
fn rulesets_are_unchanged_by_a_capture() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "32071", "-j", "DROP"]).unwrap();
    node.nft_table("inet", "tbkeep", "chain c { type filter hook input priority 5; policy accept; }").unwrap();
    let before = (rulesets(Some(node.netns())), rulesets(Some(&b.netns)), rulesets(None));
    let run = tracer().capture().expression(format!("udp port 32071 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(32170, b.addr(32071), 2, b"x").unwrap(), 2);
    let done = stop(run, 2);
    assert_eq!(done.drops().unwrap(), 2);
    let line = save_line(node.netns(), "iptables-save", &rule.comment);
    expect_all(&done, 32071, 2, &serde_json::json!({"table": "filter", "chain": "FORWARD", "hook": "forward", "rule": line}));
    for nf in nf_of(&done, 32071) {
        expect_lone_rule_attribution(nf["attribution"].as_str().unwrap());
    }
    let after = (rulesets(Some(node.netns())), rulesets(Some(&b.netns)), rulesets(None));
    assert_eq!(before.0, after.0, "node namespace ruleset changed");
    assert_eq!(before.1, after.1, "pod namespace ruleset changed");
    assert_eq!(before.2, after.2, "root namespace ruleset changed");
}

/// `--stack` (issue 16): every drop event carries the kernel stack from the function that
/// freed the packet out; for a netfilter DROP it runs through the function its location names
/// (`nft_do_chain` on newer kernels, `nf_hook_slow` on 6.1) and `nf_hook_slow`; the pcapng
/// comment and the summary's `by_stack` carry it too. Needs no observers.
#[test]
fn stack_runs_through_the_netfilter_code_that_dropped() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "32061", "-j", "DROP"]).unwrap();
    let run = tracer().capture().arg("--stack").expression(format!("udp and dst port 32061 and src host {}", a.ip)).start().unwrap();
    assert_eq!(a.send_udp(32160, b.addr(32061), 5, b"stack").unwrap(), 5);
    wait::until("the rule's counter", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= 5).then_some(()))).unwrap();
    let done = stop(run, 5);
    assert_eq!(done.events.len(), 5, "stderr:\n{}", done.stderr);
    let function = |frame: &str| frame.split_once('+').map_or(frame, |(f, _)| f).to_string();
    let first: Vec<String> = done.events[0]["stack"].as_array().unwrap_or_else(|| panic!("no stack: {}", done.events[0])).iter().map(|f| f.as_str().unwrap().to_string()).collect();
    for e in &done.events {
        let stack: Vec<String> = e["stack"].as_array().unwrap().iter().map(|f| function(f.as_str().unwrap())).collect();
        let at = function(e["location"].as_str().unwrap());
        assert!(stack.contains(&at), "the stack runs through the drop's location {at}: {stack:?}");
        assert!(stack.iter().any(|f| f == "nf_hook_slow"), "through nf_hook_slow: {stack:?}");
        assert!(!stack[0].starts_with("bpf_") && !stack[0].starts_with("__bpf_"), "the probe's own frames are left out: {stack:?}");
    }
    // One packet may take another path to the drop (the first waits for neighbour resolution):
    // every event's stack is counted under its own.
    let s = done.summary().unwrap();
    let rows = s["by_stack"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["count"].as_u64().unwrap()).sum::<u64>(), 5, "{s}");
    assert!(rows.iter().all(|r| done.events.iter().any(|e| e["stack"] == r["stack"])), "by_stack holds the events' stacks: {s}");
    let comments = integration_tests::pcap::read(done.pcap().unwrap()).unwrap();
    assert!(comments.packets.iter().all(|p| p.comments.iter().any(|c| c.contains(" stack=\"") && c.contains("nf_hook_slow"))), "{:?}", comments.packets.first());
    eprintln!("stack of a netfilter drop: {first:?}");
}

/// The conntrack and mark facts of each event: (`ct.state`, `mark`).
fn ct_facts(done: &Finished, dport: u16) -> Vec<(String, String)> {
    done.events.iter().filter(|e| e["dport"] == dport).map(|e| (e["ct"]["state"].as_str().unwrap_or("-").to_string(), e["mark"].as_str().unwrap_or("-").to_string())).collect()
}

/// Issue 16: rules on conntrack state and marks before the DROP that acted are decided with
/// what the skb held at the drop (`ct`, `mark`), so the attribution is `exact` where
/// observers place the hook; without them (6.1) the facts rule candidates out and the
/// counters of the window decide among the rest. Each back end: iptables-nft, legacy, nft.
fn state_and_mark_guards(backend: &str) {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let dst = b.ip.to_string();
    // Port 32072's packets get mark 0x200 (in mangle, a table of its own: the filter table
    // sets no marks, so its rules see what the drop shows).
    let filter = [
        vec!["-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
        vec!["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        vec!["-d", &dst, "-p", "udp", "-m", "mark", "!", "--mark", "0x200/0xf00", "-j", "DROP"],
        vec!["-d", &dst, "-p", "udp", "--dport", "32072", "-j", "DROP"],
    ];
    let mangle = ["-d", &dst, "-p", "udp", "--dport", "32072", "-j", "MARK", "--set-xmark", "0x200/0xf00"];
    let (save, family, table, chain) = match backend {
        "iptables-nft" => {
            node.iptables("mangle", "FORWARD", &mangle).unwrap();
            for r in &filter {
                node.iptables("filter", "FORWARD", r).unwrap();
            }
            ("iptables-save", "ip", "filter", "FORWARD")
        }
        "iptables-legacy" => {
            let add = |t: &str, r: &[&str]| node.exec("iptables-legacy", &[&["-w", "-t", t, "-A", "FORWARD"], r].concat()).unwrap();
            add("mangle", &mangle);
            for r in &filter {
                add("filter", r);
            }
            ("iptables-legacy-save", "ip", "filter", "FORWARD")
        }
        _ => {
            node.nft_table("inet", "ctmark", &format!("chain m {{ type filter hook forward priority -150;\n ip daddr {dst} udp dport 32072 meta mark set 0x200\n }}")).unwrap();
            let body = format!(
                "chain f {{ type filter hook forward priority 0; policy accept;\n ct state invalid drop\n ct state established,related accept\n ip daddr {dst} meta l4proto udp meta mark & 0xf00 != 0x200 drop\n ip daddr {dst} udp dport 32072 drop\n }}"
            );
            node.nft_table("inet", "ctfw", &body).unwrap();
            ("", "inet", "ctfw", "f")
        }
    };
    let run = tracer().capture().expression(format!("udp and (port 32071 or port 32072) and src host {}", a.ip)).start().unwrap();
    assert_eq!(a.send_udp(32170, b.addr(32071), 3, b"mark").unwrap(), 3);
    assert_eq!(a.send_udp(32171, b.addr(32072), 2, b"mark").unwrap(), 2);
    let done = stop(run, 5);
    assert_eq!(done.drops().unwrap(), 5, "stderr:\n{}", done.stderr);
    assert_eq!(ct_facts(&done, 32071), vec![("NEW".to_string(), "0x0".to_string()); 3], "{}", done.events[0]);
    assert_eq!(ct_facts(&done, 32072), vec![("NEW".to_string(), "0x200".to_string()); 2]);
    let rule_of = |needle: &str| {
        if save.is_empty() {
            let listing = node.exec("nft", &["-a", "list", "chain", family, table, chain]).unwrap();
            listing.lines().map(str::trim).find(|l| l.contains(needle) && l.contains("drop")).unwrap().to_string()
        } else {
            let out = cmd::run_in(node.netns(), save, &[] as &[&str]).unwrap();
            out.lines().find(|l| l.starts_with(&format!("-A {chain}")) && l.contains(needle) && l.ends_with("-j DROP")).unwrap().to_string()
        }
    };
    let (by_mark, by_port) = if save.is_empty() { (rule_of("0x00000f00"), rule_of("dport 32072")) } else { (rule_of("--mark 0x200/0xf00"), rule_of("--dport 32072")) };
    for (port, n, rule) in [(32071, 3, &by_mark), (32072, 2, &by_port)] {
        let nfs = nf_of(&done, port);
        assert_eq!(nfs.len(), n);
        for nf in nfs {
            if Feature::NetfilterLink.probe().is_ok() {
                assert_eq!((nf["table"].as_str(), nf["rule"].as_str(), nf["attribution"].as_str()), (Some(table), Some(rule.as_str()), Some("exact")), "{nf}\nstderr:\n{}", done.stderr);
            } else {
                // 6.1: the hook is unknown and the counters decide; the INVALID rule and the
                // other DROP are ruled out by the facts, never offered as candidates.
                let named = nf["rule"].as_str() == Some(rule.as_str());
                let listed = nf["candidates"].as_array().is_some_and(|c| c.iter().any(|c| c.as_str().is_some_and(|c| c.ends_with(rule.as_str()))));
                assert!(named || listed, "{nf}");
                let offered = nf["candidates"].as_array().map(|c| c.iter().map(|c| c.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()).unwrap_or_default();
                assert!(!offered.iter().any(|c| c.contains("INVALID") || c.contains("invalid")), "{nf}");
            }
        }
    }
    let comments = integration_tests::pcap::read(done.pcap().unwrap()).unwrap();
    assert!(comments.packets.iter().all(|p| p.comments.iter().any(|c| c.contains(" ct=\"NEW original"))), "{:?}", comments.packets.first());
    for port in [32071, 32072] {
        eprintln!("{backend} port {port}: {}", nf_of(&done, port)[0]);
    }
}

#[test]
fn ct_state_and_mark_guards_iptables_nft() {
    state_and_mark_guards("iptables-nft");
}

#[test]
fn ct_state_and_mark_guards_iptables_legacy() {
    state_and_mark_guards("iptables-legacy");
}

#[test]
fn ct_state_and_mark_guards_native_nft() {
    if !observers_possible() {
        return;
    }
    state_and_mark_guards("nftables");
}

/// Issue 16: a TCP segment far outside its connection's window is INVALID to conntrack, and
/// `-m conntrack --ctstate INVALID -j DROP` drops it: the event says `ct.state` INVALID and
/// names that rule.
#[test]
fn ct_state_invalid_for_an_out_of_window_segment() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let rule = node.iptables("filter", "FORWARD", &["-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]).unwrap();
    let listener = b.listen_tcp(32081).unwrap();
    let conn = a.tcp_open(b.addr(32081), TIMEOUT).unwrap();
    wait::until("the connection accepted", TIMEOUT, Duration::from_millis(10), || Ok((listener.connections() >= 1).then_some(()))).unwrap();
    let SocketAddr::V4(from) = conn.local_addr().unwrap() else { panic!("not IPv4") };
    let run = tracer().capture().expression(format!("tcp and dst port 32081 and src host {}", a.ip)).start().unwrap();
    // A quarter of the sequence space past what the client sends next: over the upper bound
    // of the window, which conntrack calls INVALID (a segment under the lower bound it would
    // only ignore, as a possible retransmission).
    let (snd, rcv) = integration_tests::segments::tcp_seqs(&conn).unwrap();
    let numbers = (snd.wrapping_add(1 << 30), rcv);
    assert_eq!(a.send_tcp_segments(from, b.addr(32081), numbers, integration_tests::segments::ACK, 3).unwrap(), 3);
    wait::until("the INVALID rule's counter", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= 3).then_some(()))).unwrap();
    let done = stop(run, 3);
    drop(conn);
    listener.stop().unwrap();
    let line = save_line(node.netns(), "iptables-save", &rule.comment);
    assert_eq!(done.events.len(), 3, "stderr:\n{}", done.stderr);
    for e in &done.events {
        assert_eq!(e["ct"], serde_json::json!({"state": "INVALID"}), "{e}");
        assert_eq!(e["netfilter"]["rule"], line.as_str(), "{e}");
        expect_lone_rule_attribution(e["netfilter"]["attribution"].as_str().unwrap());
    }
}
