//! A Kubernetes-sized node (issue 18): 20,000 kube-proxy-like rules in the node namespace (one
//! chain per service, jumped to from a KUBE-SERVICES chain reached from FORWARD, comments,
//! conntrack and ACCEPT/DROP rules) and 100 pod namespaces with a rule of their own. The capture
//! is ready without reading the rules (observers are placed from the base chains), the drop by
//! the rule after all of them is still named `exact`, and a rule added during the capture is
//! named too. Needs root.
use std::{time::Duration, time::Instant};

use integration_tests::{Feature, Node, Tracer, cmd, require, rules::kube_proxy_like};

/// Rules in the node namespace (about: each service adds four).
const RULES: usize = 20_000;
const PODS: usize = 100;
/// Generous for CI; the issue asks for under a second on the bench machine (`cargo xtask bench`
/// holds that target).
const READY_WITHIN: Duration = Duration::from_secs(2);
/// On a slow day (a loaded CI machine) start-up is slower with or without rules: the bound is
/// then this many times the same node's ready time without the 20,000 rules, measured in the
/// same run. Reading the rules before ready took 12-14 s against 0.6 s: far past it.
const GROWTH: u32 = 2;
const PORT: u16 = 32_181;
const ADDED_PORT: u16 = 32_182;

fn save_line(netns: &str, needle: &str) -> String {
    let out = cmd::run_in(netns, "iptables-save", &[] as &[&str]).unwrap();
    out.lines().find(|l| l.starts_with("-A ") && l.contains(needle)).unwrap_or_else(|| panic!("no rule with {needle:?}")).to_string()
}

#[test]
fn ready_fast_and_exact_with_20000_rules_and_100_pod_namespaces() {
    // Observers (and a start-up that needs only the base chains) are BPF netfilter links.
    if !require(Feature::NetfilterLink) {
        return;
    }
    // Dropping the node deletes its namespaces, and the rules with them, even on a failure.
    let mut node = Node::new(PODS).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    for p in node.pods() {
        cmd::run_in(&p.netns, "iptables", &["-w", "-A", "INPUT", "-p", "tcp", "--dport", "6443", "-j", "DROP"]).unwrap();
    }
    let expr = format!("udp and src host {} and (dst port {PORT} or dst port {ADDED_PORT})", a.ip);
    let tracer = Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"));
    // The same node without the rules: how fast this machine starts a capture today.
    let began = Instant::now();
    let run = tracer.capture().expression(expr.clone()).start().unwrap();
    let without = began.elapsed();
    drop(run.stop().unwrap());
    cmd::run_with_input("ip", &["netns", "exec", node.netns(), "iptables-nft-restore", "--noflush"], &kube_proxy_like(RULES)).unwrap();
    let last = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]).unwrap();
    let listed = cmd::run_in(node.netns(), "iptables-save", &[] as &[&str]).unwrap().lines().filter(|l| l.starts_with("-A ")).count();
    assert!(listed > RULES, "{listed} rules loaded");

    let began = Instant::now();
    let run = tracer.capture().env("RUST_LOG", "info").expression(expr).start().unwrap();
    let ready = began.elapsed();
    // At once: most likely before the tracer has read the rules; these drops wait for them.
    assert_eq!(a.send_udp(40_001, b.addr(PORT), 5, b"x").unwrap(), 5);
    run.wait_for_drops(5).unwrap();
    let added = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &ADDED_PORT.to_string(), "-j", "DROP"]).unwrap();
    assert_eq!(a.send_udp(40_002, b.addr(ADDED_PORT), 5, b"y").unwrap(), 5);
    let done = run.stop_after(10).unwrap().ok().unwrap();
    eprintln!("ready after {ready:?} with {listed} rules and {PODS} pod namespaces ({without:?} without the rules)");
    let bound = READY_WITHIN.max(without * GROWTH);
    assert!(ready < bound, "ready after {ready:?} (bound {bound:?}; {without:?} without the rules); stderr:\n{}", done.stderr);

    assert_eq!(done.drops().unwrap(), 10, "stderr:\n{}", done.stderr);
    for (port, rule, n) in [(PORT, &last, 5), (ADDED_PORT, &added, 5)] {
        let line = save_line(node.netns(), &rule.comment);
        let nfs: Vec<_> = done.events.iter().filter(|e| e["dport"] == port).map(|e| &e["netfilter"]).collect();
        assert_eq!(nfs.len(), n, "events for port {port}; stderr:\n{}", done.stderr);
        for nf in nfs {
            assert_eq!((nf["rule"].as_str(), nf["attribution"].as_str()), (Some(line.as_str()), Some("exact")), "port {port}: {nf}; stderr:\n{}", done.stderr);
        }
    }
    drop(node);
    // Nothing of the node is left (its namespaces held the rules).
    let left = cmd::run("ip", &["netns", "list"]).unwrap();
    assert!(!left.lines().any(|l| l.starts_with(&format!("{} ", a.netns)) || l == a.netns), "{left}");
}
