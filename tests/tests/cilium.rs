//! Cilium's own drop reason for drops by Cilium programs, against the real `tracer` binary and
//! a Cilium-like datapath (`cilium-fixture`): `cil_from_container` on a pod's lxc with Cilium's
//! metrics, endpoint, ipcache and policy maps pinned in a private bpffs, in the layouts of
//! Cilium 1.14, 1.16, 1.17 and 1.18 (and the unchecked v1.19 development layout, refused). Real packets between pods; the JSON, summary, table and pcapng must
//! carry the reason, source line, endpoint, identities and deciding policy entry; two reasons
//! counted in one window are ambiguous; a layout of no known release is refused. Needs root;
//! nodes use the `cl` prefix and 10.232.0.0/16.
use integration_tests::{
    Attach, CiliumFixture, CiliumLayout, CiliumOptions, Finished, Node, NodeOptions, Pod, TempDir, Tracer,
    cilium_fixture::{LINE_POLICY, LINE_POLICY_DENY, LINE_UNROUTABLE},
};
use serde_json::{Value, json};

const ENDPOINT_ID: u16 = 1234;
const CLIENT_IDENTITY: u32 = 3000;
const SERVER_IDENTITY: u32 = 4000;
const UDP: u8 = 17;

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn node() -> Node {
    Node::with_options(NodeOptions { prefix: "cl".into(), range: [10, 232], pods: 2, ..NodeOptions::default() }).unwrap()
}

fn fixture_bin() -> std::path::PathBuf {
    std::env::var_os("CILIUM_FIXTURE_BIN").map_or_else(|| env!("CARGO_BIN_EXE_cilium-fixture").into(), Into::into)
}

/// A libcni cache naming the node's pods `default/web-N` (so events carry pods).
fn cni_cache(node: &Node) -> TempDir {
    integration_tests::cni::cni_cache(node, true).unwrap()
}

/// The client pod (endpoint 1234, identity 3000) may send UDP only to `allowed_port` of the
/// server pod (identity 4000); `deny_port`, when given, is denied outright.
fn datapath(node: &Node, layout: CiliumLayout, allowed_port: u16, deny_port: Option<u16>, also_unroutable_port: u16) -> CiliumFixture {
    let (client, server) = (node.pod(0), node.pod(1));
    let mut policy = vec![(false, SERVER_IDENTITY, UDP, allowed_port)];
    if let Some(p) = deny_port {
        policy.push((true, 0, UDP, p));
    }
    CiliumFixture::start(&CiliumOptions {
        bin: fixture_bin(),
        netns: Some(node.netns_path()),
        iface: client.lxc.clone(),
        attach: Attach::tcx_or_cls_bpf(),
        layout,
        endpoint: (ENDPOINT_ID, client.ip, CLIENT_IDENTITY),
        ipcache: vec![(server.ip, SERVER_IDENTITY)],
        policy,
        also_unroutable_port,
    })
    .unwrap()
}

/// Sends `n` datagrams from the client to the server's `port` under a capture of them.
fn capture(node: &Node, fix: &CiliumFixture, cache: &TempDir, port: u16, n: usize) -> Finished {
    let (client, server) = (node.pod(0), node.pod(1));
    let run = tracer()
        .capture()
        .arg("--cilium-bpffs")
        .arg(fix.bpffs())
        .arg("--cni-cache-dir")
        .arg(cache.path())
        .expression(format!("host {} and udp port {port}", server.ip))
        .start()
        .unwrap();
    assert_eq!(client.send_udp(port - 1, server.addr(port), n, b"cilium says no").unwrap(), n);
    run.stop_after(n as u64).unwrap()
}

fn endpoint(client: &Pod) -> Value {
    json!({"id": ENDPOINT_ID, "ifname": client.lxc, "pod": "default/web-0"})
}

fn check_common(done: &Finished, client: &Pod, n: u64, version: &str) {
    assert_eq!(done.drops().unwrap(), n, "stderr:\n{}", done.stderr);
    assert_eq!(done.events.len() as u64, n);
    for e in &done.events {
        assert_eq!(e["tc"]["prog"], "cil_from_container", "{e}");
        let c = &e["cilium"];
        assert_eq!(c["endpoint"], endpoint(client), "{e}");
        assert_eq!(c["identity"], json!({"src": CLIENT_IDENTITY, "dst": SERVER_IDENTITY}), "{e}");
        assert_eq!(c["version"], version, "{e}");
    }
}

#[test]
fn cilium_1_14_policy_denied_for_lack_of_an_allow_entry() {
    let node = node();
    let cache = cni_cache(&node);
    let fix = datapath(&node, CiliumLayout::V1_14, 40_000, None, 0);
    let done = capture(&node, &fix, &cache, 41_001, 20);
    let client = node.pod(0);
    check_common(&done, client, 20, "1.14-1.16");
    for e in &done.events {
        let c = &e["cilium"];
        assert_eq!((&c["reason"], &c["code"], &c["direction"]), (&json!("Policy denied"), &json!(133), &json!("egress")), "{e}");
        assert!(c.get("file").is_none() && c.get("line").is_none(), "1.14/1.15 metrics keys record no file or line: none guessed: {e}");
        assert_eq!(c["attribution"], "metrics", "only our drops moved the counter: {e}");
        assert_eq!(
            c["policy"],
            json!({"map": "cilium_policy_01234", "direction": "egress", "identity": SERVER_IDENTITY, "protocol": UDP, "dport": 41_001, "decision": "no allow entry", "entries": 1}),
            "{e}"
        );
    }
    let s = done.summary().unwrap();
    assert_eq!(s["by_cilium_reason"], json!([{"reason": "Policy denied (133) egress", "code": 133, "count": 20}]), "{s}");
    assert!(done.stderr.contains("CILIUM REASON") && done.stderr.contains("Policy denied (133) egress  20"), "table:\n{}", done.stderr);
    // For the record.
    eprintln!("{}\n{}", serde_json::to_string(&done.events[0]).unwrap(), done.stderr);
    let pcap = integration_tests::pcap::read(done.pcap().unwrap()).unwrap();
    assert_eq!(pcap.packets.len(), 20);
    for p in &pcap.packets {
        let c = p.comments.join(" ");
        assert!(
            c.contains(&format!(
                "cilium=\"Cilium: Policy denied (133) egress; endpoint {ENDPOINT_ID} {} (pod default/web-0); identity {CLIENT_IDENTITY} > {SERVER_IDENTITY}; policy cilium_policy_01234: no allow entry for identity {SERVER_IDENTITY} 17/41001 egress; Cilium 1.14-1.16, metrics\"",
                client.lxc
            )),
            "{c}"
        );
    }
    fix.stop().unwrap();
}

#[test]
fn cilium_1_16_policy_denied_by_a_deny_entry() {
    let (node, fix) = denied_by_a_deny_entry(CiliumLayout::V1_16, "1.14-1.16", "cilium_policy_01234");
    doctor_names_enforcement_and_policy_drops(&node, &fix);
    fix.stop().unwrap();
}

#[test]
fn cilium_1_17_policy_denied_by_a_deny_entry() {
    let (_node, fix) = denied_by_a_deny_entry(CiliumLayout::V1_17, "1.17", "cilium_policy_v2_01234");
    assert!(fix.bpffs().join("tc/globals/cilium_ipcache").exists() && !fix.bpffs().join("tc/globals/cilium_ipcache_v2").exists());
    fix.stop().unwrap();
}

#[test]
fn cilium_1_18_policy_denied_by_a_deny_entry() {
    let (_node, fix) = denied_by_a_deny_entry(CiliumLayout::V1_18, "1.18", "cilium_policy_v2_01234");
    assert!(fix.bpffs().join("tc/globals/cilium_ipcache_v2").exists() && !fix.bpffs().join("tc/globals/cilium_ipcache").exists());
    fix.stop().unwrap();
}

fn denied_by_a_deny_entry(layout: CiliumLayout, version: &str, map: &str) -> (Node, CiliumFixture) {
    let node = node();
    let cache = cni_cache(&node);
    let fix = datapath(&node, layout, 40_000, Some(42_001), 0);
    let done = capture(&node, &fix, &cache, 42_001, 15);
    check_common(&done, node.pod(0), 15, version);
    for e in &done.events {
        let c = &e["cilium"];
        assert_eq!((&c["reason"], &c["code"], &c["line"], &c["file"]), (&json!("Policy denied by denylist"), &json!(181), &json!(LINE_POLICY_DENY), &json!("bpf_lxc.c")), "{e}");
        assert_eq!(c["attribution"], "metrics", "{e}");
        assert_eq!(c["policy"]["decision"], "deny entry", "{e}");
        assert_eq!(c["policy"]["entry"], json!({"identity": 0, "protocol": UDP, "dport": 42_001, "deny": true}), "{e}");
        assert_eq!(c["policy"]["map"], map, "{e}");
    }
    let s = done.summary().unwrap();
    assert_eq!(s["by_cilium_reason"][0]["code"], 181, "{s}");
    (node, fix)
}

/// `tracer doctor`: the endpoint's enforcement and entries, and the policy drops counted.
fn doctor_names_enforcement_and_policy_drops(node: &Node, fix: &CiliumFixture) {
    let out = std::process::Command::new(&tracer().bin).arg("doctor").arg("--json").arg("--netns").arg(node.netns_path()).arg("--bpffs").arg(fix.bpffs()).output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let check = r["checks"].as_array().unwrap().iter().find(|c| c["check"] == "cilium.policy").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(check["status"], "findings", "{r:#}");
    let detail = check["detail"].as_str().unwrap();
    let ep = format!("endpoint {ENDPOINT_ID} ({}, identity {CLIENT_IDENTITY}): ingress enforced (0 entries), egress enforced (2 entries) in cilium_policy_01234", node.pod(0).ip);
    assert!(detail.starts_with("Cilium 1.14-1.16 layout; 1 endpoints: ") && detail.contains(&ep), "{detail}");
    let f = r["findings"].as_array().unwrap().iter().find(|f| f["id"] == "cilium.policy-denied-drops").unwrap_or_else(|| panic!("{r:#}"));
    assert!(f["summary"].as_str().unwrap().starts_with("Cilium's policy dropped 15 packets since the agent started (15 Cilium drops in all)"), "{f}");
    assert_eq!(f["evidence"], json!([format!("15 × Policy denied by denylist (181) at bpf_lxc.c:{LINE_POLICY_DENY} egress")]), "{f}");
}

#[test]
fn cilium_two_reasons_in_one_window_are_ambiguous() {
    let node = node();
    let cache = cni_cache(&node);
    let fix = datapath(&node, CiliumLayout::V1_16, 40_000, None, 43_001);
    let done = capture(&node, &fix, &cache, 43_001, 3);
    check_common(&done, node.pod(0), 3, "1.14-1.16");
    for e in &done.events {
        let c = &e["cilium"];
        assert_eq!(c["attribution"], "ambiguous", "{e}");
        assert!(c.get("reason").is_none() && c.get("policy").is_none(), "nothing guessed: {e}");
        let cands: Vec<(u64, u64)> = c["candidates"].as_array().unwrap().iter().map(|k| (k["code"].as_u64().unwrap(), k["line"].as_u64().unwrap())).collect();
        assert_eq!(cands, vec![(133, u64::from(LINE_POLICY)), (151, u64::from(LINE_UNROUTABLE))], "{e}");
        assert_eq!(c["candidates"][1]["reason"], "Stale or unroutable IP", "{e}");
    }
    fix.stop().unwrap();
}

/// A capture on `layout` to `port`: exactly one stderr line names `map`, and says `what` and
/// that it will not guess; the drops are still the program's, with nothing read from Cilium.
fn refused_in_one_line(layout: CiliumLayout, port: u16, map: &str, what: &str) {
    let node = node();
    let cache = cni_cache(&node);
    let fix = datapath(&node, layout, 40_000, None, 0);
    let done = capture(&node, &fix, &cache, port, 5);
    let lines: Vec<&str> = done.stderr.lines().filter(|l| l.contains(map)).collect();
    assert_eq!(lines.len(), 1, "{}", done.stderr);
    assert!(lines[0].contains(what) && lines[0].contains("will not guess"), "{}", lines[0]);
    assert_eq!(done.drops().unwrap(), 5);
    for e in &done.events {
        assert_eq!(e["tc"]["prog"], "cil_from_container", "the drop is still attributed to the program: {e}");
        assert!(e.get("cilium").is_none(), "nothing read from a layout we do not know: {e}");
    }
    fix.stop().unwrap();
}

#[test]
fn cilium_unknown_metrics_layout_is_refused_in_one_line() {
    refused_in_one_line(CiliumLayout::BadMetrics, 44_001, "cilium_metrics", "unknown layout (PerCpuHash, key 8 B, value 24 B)");
}

/// The v1.19 development tree's policy map (12 B values): no release of it was checked, so it
/// is refused like an unknown layout, and nothing is read.
#[test]
fn cilium_unverified_1_19_policy_layout_is_refused_in_one_line() {
    refused_in_one_line(CiliumLayout::V1_19Dev, 45_001, "cilium_policy_v2_01234", "unknown layout (LpmTrie, key 12 B, value 12 B)");
}

#[test]
fn cilium_fixture_leaves_nothing_mounted_or_pinned() {
    let node = node();
    let fix = datapath(&node, CiliumLayout::V1_14, 40_000, None, 0);
    let dir = fix.bpffs().to_path_buf();
    assert!(dir.join("tc/globals/cilium_metrics").exists() && dir.join("tc/globals/cilium_policy_01234").exists());
    fix.stop().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&dir.display().to_string()), "bpffs still mounted");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
