//! `tracer merge` (issue 14) on two nodes' bundles: two netns nodes joined by a veth (pod
//! traffic of node A routed to node B's pod), an iptables DROP planted on node B, a capture per
//! node with its own `--node-name` and `--netns` (node A follows the flow with `--path --all`;
//! node B sees its drop), then one merge: totals are the sums of the inputs' summaries, the flow
//! is listed as cross-node, the clock offset rests on the matched packets, tshark reads the
//! merged pcapng with `node/ifname` interfaces, every JSON line has its `node`. Then inputs that
//! must be refused in one line with nothing written. Needs root.
use std::{
    collections::BTreeSet,
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use integration_tests::{
    Finished, Node, NodeOptions, RunningCapture, TempDir, Tracer, cmd, pcap,
    watch::{Watch, unpack},
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_mins(2);
/// The flow from node A's pod to node B's pod, and the port of the traffic that dies on A.
const PORT: u16 = 47_301;
const SPORT: u16 = 47_302;
const BLACKHOLE_SPORT: u16 = 47_303;
/// Datagrams dropped on node B (cross-node) and on node A (its blackhole route).
const TO_B: usize = 6;
const ON_A: usize = 4;

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn node() -> Node {
    Node::with_options(NodeOptions { prefix: "mg".into(), range: [10, 236], pods: 1, ..NodeOptions::default() }).unwrap()
}

/// A veth between two node namespaces (as the nodes' network between them) and a route on
/// `a` to `b`'s pod over it; deleting one end on drop removes both (and the route).
struct Link {
    netns: String,
}

impl Link {
    const A_END: &str = "mgtob";
    const B_END: &str = "mgtoa";
    const B_MAC: &str = "02:6d:67:00:00:02";
    const HOP: &str = "169.254.236.2";

    fn join(a: &Node, b: &Node) -> Self {
        let (na, nb) = (a.netns().to_string(), b.netns().to_string());
        cmd::run("ip", &["-n", &na, "link", "add", Self::A_END, "address", "02:6d:67:00:00:01", "type", "veth", "peer", "name", Self::B_END, "address", Self::B_MAC, "netns", &nb]).unwrap();
        let link = Self { netns: na.clone() };
        cmd::run("ip", &["-n", &na, "link", "set", Self::A_END, "up"]).unwrap();
        cmd::run("ip", &["-n", &nb, "link", "set", Self::B_END, "up"]).unwrap();
        cmd::run("ip", &["-n", &na, "neigh", "replace", Self::HOP, "lladdr", Self::B_MAC, "dev", Self::A_END, "nud", "permanent"]).unwrap();
        let dst = format!("{}/32", b.pod(0).ip);
        cmd::run("ip", &["-n", &na, "route", "add", &dst, "via", Self::HOP, "dev", Self::A_END, "onlink"]).unwrap();
        link
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = cmd::run("ip", &["-n", &self.netns, "link", "del", Self::A_END]);
    }
}

fn bin() -> PathBuf {
    tracer().bin
}

/// `tracer merge INPUTS -o OUT`: (success, stdout, stderr).
fn merge(inputs: &[&Path], out: &Path) -> (bool, String, String) {
    let mut c = Command::new(bin());
    c.arg("merge").args(inputs).arg("-o").arg(out);
    let o = cmd::output(&mut c, None, TIMEOUT).unwrap();
    (o.status.success(), o.stdout, o.stderr)
}

/// A capture of one node: its name, its namespace's drops, a bundle in `dir/NAME`.
fn capture(node: &Node, name: &str, dir: &TempDir, path: bool) -> RunningCapture {
    let mut c = tracer().capture().arg("--node-name").arg(name).arg("--netns").arg(node.netns()).arg("--bundle").arg(dir.join(name));
    if path {
        c = c.arg("--path").arg("--all");
    }
    c.expression(format!("udp port {PORT}")).start().unwrap()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn is_flow(f: &Value, src: &str, dst: &str) -> bool {
    f["proto"] == "udp" && f["src"] == src && f["dst"] == dst && f["sport"] == SPORT && f["dport"] == PORT
}

/// Each input recorded its node: summary, every JSON line, the pcapng's section header, MANIFEST.
fn assert_recorded(done: &Finished, bundle: &Path, name: &str) {
    assert_eq!(done.summary().unwrap()["node"], name);
    assert!(!done.events.is_empty() && done.events.iter().all(|e| e["node"] == name), "every JSON line names {name}");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(bundle.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["node"], name);
    // The section header's shb_hardware (capinfos prints it as "Capture hardware"; the guests
    // of vm-test have no capinfos, so it is read here).
    let r = pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(done.pcap().unwrap()).unwrap()).unwrap();
    let shb = format!("{:?}", r.section().options);
    assert!(shb.contains(&format!("Hardware(\"node {name}\")")), "the pcapng's section header names {name}: {shb}");
}

#[test]
fn two_nodes_one_story() {
    let node_a = node();
    let mut node_b = node();
    let _link = Link::join(&node_a, &node_b);
    let (a0, b0) = (node_a.pod(0).clone(), node_b.pod(0).clone());
    let rule = node_b.iptables("filter", "FORWARD", &["-d", &format!("{}/32", b0.ip), "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]).unwrap();
    let dir = TempDir::new("merge-in").unwrap();
    let cap_a = capture(&node_a, "node-a", &dir, true);
    let cap_b = capture(&node_b, "node-b", &dir, false);
    // A connected socket: the kernel numbers its datagrams (IPv4 id), so each is one packet on
    // both nodes.
    let s = a0.udp_socket(SPORT).unwrap();
    s.connect(b0.addr(PORT)).unwrap();
    for _ in 0..TO_B {
        s.send(b"cross-node").unwrap();
    }
    // Node A's own drops: its blackhole route for the node range eats what goes to an unused IP.
    assert_eq!(a0.send_udp(BLACKHOLE_SPORT, SocketAddrV4::new(node_a.unused_ip(), PORT), ON_A, b"nowhere").unwrap(), ON_A);
    integration_tests::wait::until("the DROP rule's counter", TIMEOUT, Duration::from_millis(20), || Ok((node_b.iptables_packets(&rule)? >= TO_B as u64).then_some(()))).unwrap();
    let done_b = cap_b.stop_after(TO_B as u64).unwrap().ok().unwrap();
    let done_a = cap_a.stop_after(ON_A as u64).unwrap().ok().unwrap();
    assert_eq!(done_b.drops().unwrap(), TO_B as u64, "node B counts its drops exactly");
    assert_eq!(done_a.drops().unwrap(), ON_A as u64, "node A counts its own drops only (--netns)");
    let (bundle_a, bundle_b) = (dir.join("node-a"), dir.join("node-b"));
    assert_recorded(&done_a, &bundle_a, "node-a");
    assert_recorded(&done_b, &bundle_b, "node-b");

    let out = TempDir::new("merge-out").unwrap();
    let merged = out.join("merged");
    // One archive, one directory: both forms read.
    let (ok, stdout, stderr) = merge(&[&dir.join("node-a.tar.zst"), &bundle_b], &merged);
    assert!(ok, "{stderr}");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(merged.join("summary.json")).unwrap()).unwrap();
    let (sa, sb) = (done_a.summary().unwrap(), done_b.summary().unwrap());
    for k in ["drops", "events", "lost_events", "seen_drops", "rate_limited", "probe_misses"] {
        let sum = sa[k].as_u64().unwrap() + sb[k].as_u64().unwrap();
        assert_eq!(s["total"][k].as_u64(), Some(sum), "total {k} is the sum of the inputs'");
        assert_eq!(s[k].as_u64(), Some(sum), "top-level {k}");
    }
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for (row, (name, done)) in nodes.iter().zip([("node-a", &done_a), ("node-b", &done_b)]) {
        assert_eq!(row["node"], name);
        assert_eq!(row["node_from"], "recorded");
        assert_eq!(row["drops"], done.summary().unwrap()["drops"]);
    }
    // The cross-node flow: followed leaving pod a0 on node A, dropped by the rule on node B.
    let flows = s["cross_node_flows"].as_array().unwrap();
    let (src, dst) = (a0.ip.to_string(), b0.ip.to_string());
    assert_eq!(flows.len(), 1, "only the a0 → b0 flow crosses nodes: {flows:#?}");
    let f = &flows[0];
    assert!(is_flow(f, &src, &dst), "{f:#}");
    assert_eq!(f["seen"][0]["node"], "node-a");
    assert_eq!(f["seen"][0]["packets"], TO_B, "{f:#}");
    assert_eq!(f["dropped"][0]["node"], "node-b");
    assert_eq!(f["dropped"][0]["drops"], TO_B);
    assert_eq!(f["dropped"][0]["reasons"][0], "NETFILTER_DROP");
    assert!(f["dropped"][0]["rules"][0].as_str().unwrap().contains(&rule.comment), "{f:#}");
    let flow_text = format!("udp {src}:{SPORT} > {dst}:{PORT}");
    assert!(stdout.contains(&flow_text) && stdout.contains("node-a") && stdout.contains("total"), "{stdout}");
    // The clock offset: one host, one clock; what remains is the transit (and the two
    // processes' wall-clock samples), on all TO_B packets matched by their bytes.
    let est = s["clock_offsets"]["estimates"].as_array().unwrap();
    assert_eq!(est.len(), 1, "{:#}", s["clock_offsets"]);
    let e = &est[0];
    assert_eq!((e["node"].as_str(), e["relative_to"].as_str()), (Some("node-b"), Some("node-a")));
    assert_eq!(e["matches"], TO_B, "{e:#}");
    assert_eq!(e["matched_by"], "packet bytes");
    assert_eq!(e["bound"], "upper bound");
    let off = e["offset_ns"].as_i64().unwrap();
    assert!((-1_000_000..1_000_000_000).contains(&off), "offset {off} ns between two captures of one clock");
    assert!(stdout.contains("node-b vs node-a") && stdout.contains(&format!("from {TO_B} packets")), "{stdout}");

    // tshark reads the merged pcapng: every packet of both, interfaces named node/ifname.
    let pa = pcap::tshark_fields(done_a.pcap().unwrap(), &["frame.number"]).unwrap().len();
    let pb = pcap::tshark_fields(done_b.pcap().unwrap(), &["frame.number"]).unwrap().len();
    let rows = pcap::tshark_fields(&merged.join("drops.pcapng"), &["frame.interface_name", "frame.comment", "frame.time_epoch"]).unwrap();
    assert_eq!(rows.len(), pa + pb, "every packet of both inputs");
    assert_eq!(pa, TO_B + ON_A, "node A's pcapng: every followed packet once (--all)");
    let ifaces: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(ifaces.iter().all(|i| i.starts_with("node-a/") || i.starts_with("node-b/")), "{ifaces:?}");
    // Node A's packets as first seen on a0's veth; node B's drops on their way in from node A.
    assert!(ifaces.contains(format!("node-a/{}", a0.lxc).as_str()) || ifaces.contains(format!("node-a/{}", a0.eth).as_str()), "{ifaces:?}");
    assert!(ifaces.contains(format!("node-b/{}", Link::B_END).as_str()), "{ifaces:?}");
    assert!(rows.iter().all(|r| !r[1].is_empty()), "every packet keeps its comment");
    let times: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by time");

    // JSON Lines: every record of both, each with its node, in time order.
    let lines = jsonl(&merged.join("drops.jsonl"));
    assert_eq!(lines.len(), done_a.events.len() + done_b.events.len());
    assert!(lines.iter().all(|l| l["node"] == "node-a" || l["node"] == "node-b"));
    assert_eq!(lines.iter().filter(|l| l["type"] == "drop" && l["node"] == "node-b").count(), TO_B);
    let t: Vec<&str> = lines.iter().filter_map(|l| l["time"].as_str()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "time order");
}

/// The other two input forms: a `tracer watch` dump (SIGUSR1) of one node and a plain capture
/// directory (`--json`/`--summary`/`--pcap` under their default names) of another.
#[test]
fn watch_dump_and_capture_directory() {
    const PORT_W: u16 = 47_311;
    let (node_w, node_c) = (node(), node());
    let (pw, pc) = (node_w.pod(0).clone(), node_c.pod(0).clone());
    let w = Watch::new(&bin()).arg("--node-name").arg("node-w").arg("--after").arg("1s").arg(format!("udp and dst port {PORT_W} and host {}", pw.ip)).start().unwrap();
    // Nothing listens on the port: NO_SOCKET in the pod.
    assert_eq!(node_w.send_udp(47_312, pw.addr(PORT_W), 5, b"w").unwrap(), 5);
    w.until("5 drops recorded", TIMEOUT, |m| m.sum("tracer_recorder_records", &[]) >= 5).unwrap();
    w.signal(libc::SIGUSR1);
    w.until("the SIGUSR1 dump", TIMEOUT, |m| m.sum("tracer_dumps_total", &[("trigger", "signal")]) >= 1).unwrap();
    let dumps = w.dump_files().unwrap();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let dump = unpack(&dumps[0]).unwrap();
    assert_eq!(dump.manifest["node"], "node-w");
    assert!(dump.events.iter().all(|e| e["node"] == "node-w"), "a dump's records name the node too");

    let run = tracer().capture().arg("--node-name").arg("node-c").expression(format!("udp and dst port {PORT_W} and host {}", pc.ip)).start().unwrap();
    assert_eq!(node_c.send_udp(47_313, pc.addr(PORT_W), 3, b"c").unwrap(), 3);
    let done = run.stop_after(3).unwrap().ok().unwrap();

    let out = TempDir::new("merge-out").unwrap();
    let merged = out.join("merged");
    let (ok, stdout, stderr) = merge(&[&dumps[0], done.dir.path()], &merged);
    let (status, werr) = w.stop().unwrap();
    assert!(status.success(), "{werr}");
    assert!(ok, "{stderr}");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(merged.join("summary.json")).unwrap()).unwrap();
    let dump_drops = dump.manifest["dump"]["drops"].as_u64().unwrap();
    assert!(dump_drops >= 5, "the dump's window holds the 5 drops: {}", dump.manifest["dump"]);
    assert_eq!(s["nodes"][0]["node"], "node-w");
    assert_eq!(s["nodes"][0]["drops"], dump_drops);
    assert_eq!(s["nodes"][1]["node"], "node-c");
    assert_eq!(s["nodes"][1]["drops"], 3);
    assert_eq!(s["total"]["drops"], dump_drops + 3);
    assert_eq!(s["cross_node_flows"].as_array().map(Vec::len), Some(0), "no flow crosses these nodes");
    assert_eq!(s["clock_offsets"]["not_estimated"], serde_json::json!(["node-w", "node-c"]));
    assert!(stdout.contains("node-w: not estimated"), "{stdout}");
    let lines = jsonl(&merged.join("drops.jsonl"));
    assert_eq!(lines.len(), dump.events.len() + done.events.len());
    assert_eq!(lines.iter().filter(|l| l["node"] == "node-w").count(), dump.events.len());
    assert_eq!(lines.iter().filter(|l| l["node"] == "node-c").count(), done.events.len());
    let rows = pcap::tshark_fields(&merged.join("drops.pcapng"), &["frame.interface_name"]).unwrap();
    assert_eq!(rows.iter().filter(|r| r[0] == format!("node-c/{}", pc.eth)).count(), 3, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r[0].starts_with("node-w/")).count(), dump.events.len(), "{rows:?}");
}

/// A broken archive, a bundle of an unknown version, two inputs of one node, a non-empty output
/// directory: each one line, exit non-zero, nothing written.
#[test]
fn bad_inputs_are_one_line_and_write_nothing() {
    let node = node();
    let dir = TempDir::new("merge-bad").unwrap();
    let done = capture(&node, "lonely", &dir, false).stop().unwrap().ok().unwrap();
    drop(done);
    let bundle = dir.join("lonely");
    let archive = dir.join("lonely.tar.zst");
    let out = TempDir::new("merge-out").unwrap();
    let merged = out.join("merged");
    let one_line = |inputs: &[&Path], target: &Path, needle: &str| {
        let (ok, stdout, stderr) = merge(inputs, target);
        assert!(!ok, "must fail: {stdout}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].starts_with("tracer: error: ") && lines[0].contains(needle), "{needle:?} in {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    };
    // Sanity: the inputs themselves merge.
    let (ok, _, stderr) = merge(&[&archive], &merged);
    assert!(ok, "{stderr}");
    std::fs::remove_dir_all(&merged).unwrap();

    let cut = dir.join("cut.tar.zst");
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    one_line(&[&bundle, &cut], &merged, "damaged");
    assert!(out.entries().unwrap().is_empty(), "nothing written: {:?}", out.entries());

    let manifest = bundle.join("MANIFEST.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: Value = serde_json::from_str(&text).unwrap();
    m["bundle_version"] = Value::from(99);
    std::fs::write(&manifest, m.to_string()).unwrap();
    one_line(&[&bundle], &merged, "bundle version 99");
    assert!(out.entries().unwrap().is_empty(), "nothing written: {:?}", out.entries());
    std::fs::write(&manifest, text).unwrap();

    one_line(&[&bundle, &archive], &merged, "--node-name");
    assert!(out.entries().unwrap().is_empty(), "nothing written: {:?}", out.entries());

    std::fs::create_dir(&merged).unwrap();
    std::fs::write(merged.join("keep"), b"x").unwrap();
    one_line(&[&archive], &merged, "not empty");
    assert_eq!(std::fs::read_dir(&merged).unwrap().count(), 1, "the directory is left as it was");
}
