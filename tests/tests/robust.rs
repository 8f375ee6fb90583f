//! Trustworthy on a production node (issue 6), against the real binary and kernel:
//! - the tracer only observes: the same traffic gives the same deliveries, rulesets and tc state
//!   with and without it (every feature on), and its programs that return a verdict can only
//!   return "continue";
//! - no debris after SIGINT, SIGTERM, `--duration`, SIGKILL (the next run removes the `cls_bpf`
//!   filters a kill leaves) and a panic; outputs readable on each of those exits;
//! - a full disk stops one output with one clear line, the others complete, `lost_events` exact;
//! - a 1,000,000-packet drop flood: bounded memory, exact totals;
//! - bad input: one clear line, non-zero exit, no file.
//!
//! Needs root; nodes use the `rb` prefix and 10.240.0.0/16. These tests count BPF objects by
//! name: they assume no other tracer runs at the same time (objects held by a live process are
//! not counted as debris, so a concurrent run is tolerated unless it is killed).
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use integration_tests::{Attach, ConnectResults, Direction, Feature, IptRule, Node, NodeOptions, Pod, TcFixture, TcFixtureOptions, TempDir, Tracer, cmd, netns, unchecked, wait};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);
/// After the kernel's own counter shows the last packet, the drop event follows in the same softirq.
const SETTLE: Duration = Duration::from_millis(200);

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn node(pods: usize) -> Node {
    Node::with_options(NodeOptions { prefix: "rb".into(), range: [10, 240], pods }).unwrap()
}

fn fixture(node: &Node, pod: &Pod, attach: Attach, direction: Direction, programs: &[&str], deny: &[std::net::Ipv4Addr]) -> TcFixture {
    let mut o = TcFixtureOptions::from_container(Some(node.netns_path()), &pod.lxc, attach, deny);
    o.bin = Some(env!("CARGO_BIN_EXE_tc-fixture").into());
    o.direction = direction;
    o.programs = programs.iter().map(ToString::to_string).collect();
    TcFixture::start(&o).unwrap()
}

fn pod_name(i: usize) -> String {
    format!("default/rb-{i}")
}

/// A libcni cache (`DIR/results/…`) naming the node's pods, as containerd writes it.
fn cni_cache(node: &Node) -> TempDir {
    let dir = TempDir::new("rb-cni").unwrap();
    let results = dir.join("results");
    std::fs::create_dir(&results).unwrap();
    for p in node.pods() {
        let cid = format!("{:064x}", 0x2b00_u64 + p.index as u64);
        let sandbox = p.netns_path().display().to_string();
        let entry = json!({
            "kind": "cniCacheV1", "containerId": cid, "ifName": "eth0", "networkName": "cilium", "netns": sandbox,
            "cniArgs": [["K8S_POD_NAMESPACE", "default"], ["K8S_POD_NAME", format!("rb-{}", p.index)]],
            "result": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": p.lxc}, {"name": p.eth, "sandbox": sandbox}],
                "ips": [{"address": format!("{}/32", p.ip), "interface": 1}],
            },
        });
        std::fs::write(results.join(format!("cilium-{cid}-eth0")), serde_json::to_vec(&entry).unwrap()).unwrap();
    }
    dir
}

// ---------------------------------------------------------------------------------------------
// Kernel state: rulesets, tc, BPF objects, mounts.

/// `iptables-save` and `nft -s list ruleset` (stateless: no counter values) of the node and its
/// pods, without comments and chain counters.
fn rulesets(node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let spaces: Vec<String> = std::iter::once(node.netns().to_string()).chain(node.pods().iter().map(|p| p.netns.clone())).collect();
    for ns in spaces {
        let save = cmd::run_in(&ns, "iptables-save", &[] as &[&str]).unwrap();
        let save: Vec<String> = save
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| if l.starts_with(':') { l.split(" [").next().unwrap_or(l).to_string() } else { l.to_string() })
            .collect();
        out.insert(format!("{ns} iptables-save"), save.join("\n"));
        out.insert(format!("{ns} nft"), cmd::run_in(&ns, "nft", &["-s", "list", "ruleset"]).unwrap());
    }
    out
}

/// Interfaces of a namespace (names without `@peer`).
fn links(ns: &str) -> Vec<String> {
    cmd::run("ip", &["-n", ns, "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// qdiscs, filters (both directions) and tcx programs of every interface of the node and its
/// pods.
fn tc_state(node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let spaces: Vec<String> = std::iter::once(node.netns().to_string()).chain(node.pods().iter().map(|p| p.netns.clone())).collect();
    for ns in spaces {
        for dev in links(&ns) {
            let tc = |args: &[&str]| {
                let mut full = vec!["-n", ns.as_str()];
                full.extend_from_slice(args);
                cmd::output(Command::new("tc").args(&full), None, cmd::TIMEOUT).map(|o| o.stdout).unwrap_or_default()
            };
            out.insert(format!("{ns} {dev} qdisc"), tc(&["qdisc", "show", "dev", &dev]));
            for dir in ["ingress", "egress"] {
                out.insert(format!("{ns} {dev} filter {dir}"), tc(&["filter", "show", "dev", &dev, dir]));
            }
            out.insert(format!("{ns} {dev} tcx"), tcx_programs(&ns, &dev).join("\n"));
        }
    }
    out
}

/// tcx programs on an interface, both directions (`BPF_PROG_QUERY`; the bpftool here predates tcx).
fn tcx_programs(ns: &str, dev: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let dev = dev.to_string();
    netns::run(ns, move || {
        let mut v = Vec::new();
        for t in [TcAttachType::Ingress, TcAttachType::Egress] {
            if let Ok((_, progs)) = SchedClassifier::query_tcx(&dev, t) {
                v.extend(progs.iter().map(|p| format!("{t:?}: {} id {}", p.name_as_str().unwrap_or("?"), p.id())));
            }
        }
        Ok(v)
    })
    .unwrap()
}

/// The tc state without our observers: filter lines of other programs, tcx programs not ours.
fn without_ours(state: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    state
        .iter()
        .map(|(k, v)| {
            let kept: Vec<&str> = if k.contains(" filter ") {
                v.lines().filter(|l| l.contains("handle") && !l.contains("tracer_tc")).collect()
            } else {
                v.lines().filter(|l| !l.contains("tracer_tc")).collect()
            };
            (k.clone(), kept.join("\n"))
        })
        .collect()
}

fn ours_in(state: &BTreeMap<String, String>) -> usize {
    state.values().flat_map(|v| v.lines()).filter(|l| l.contains("tracer_tc")).count()
}

/// A BPF object the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Obj {
    kind: &'static str,
    id: u64,
    name: String,
}

/// Names of the maps tracer-ebpf declares (`#[map(name = "…")]`), read from its sources at
/// build time (tests/build.rs) so a new map is covered without editing a list here.
fn our_map_names() -> BTreeSet<String> {
    let all: &[&str] = include!(concat!(env!("OUT_DIR"), "/our_maps.rs"));
    let names: BTreeSet<String> = all.iter().map(ToString::to_string).collect();
    assert!(names.contains("EVENTS") && names.contains("TC_RING") && names.len() >= 10, "{names:?}");
    names
}

/// Program names of ours: tc observers and the netfilter observer (`tracer_`), the drop probe
/// (`kfree_skb_`), the path probes (`path_`).
fn is_our_prog(name: &str) -> bool {
    ["tracer_", "kfree_skb_", "path_"].iter().any(|p| name.starts_with(p))
}

fn bpftool(what: &str) -> Vec<Value> {
    let out = Command::new("bpftool").args(["-j", what, "show"]).output().unwrap();
    assert!(out.status.success(), "bpftool {what}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Our BPF objects, found by name; `seen` remembers our programs (and the maps they use, such as
/// aya's `.rodata`) so their links and unnamed maps are recognised later.
#[derive(Default)]
struct Seen {
    progs: BTreeSet<u64>,
    maps: BTreeSet<u64>,
}

fn our_objects(seen: &mut Seen) -> BTreeSet<Obj> {
    let map_names = our_map_names();
    let mut out = BTreeSet::new();
    for p in bpftool("prog") {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        if is_our_prog(&name) {
            let id = p["id"].as_u64().unwrap_or(0);
            seen.progs.insert(id);
            seen.maps.extend(p["map_ids"].as_array().into_iter().flatten().filter_map(Value::as_u64));
            out.insert(Obj { kind: "prog", id, name });
        }
    }
    for m in bpftool("map") {
        let (id, name) = (m["id"].as_u64().unwrap_or(0), m["name"].as_str().unwrap_or_default().to_string());
        if map_names.contains(&name) || seen.maps.contains(&id) {
            out.insert(Obj { kind: "map", id, name });
        }
    }
    for l in bpftool("link") {
        if l["prog_id"].as_u64().is_some_and(|p| seen.progs.contains(&p)) {
            out.insert(Obj { kind: "link", id: l["id"].as_u64().unwrap_or(0), name: format!("type {} prog {}", l["type"], l["prog_id"]) });
        }
    }
    out
}

/// (kind, id) of every BPF object a live process holds an fd of (`/proc/*/fdinfo`), with the maps
/// of those programs.
fn held_by_processes() -> BTreeSet<(&'static str, u64)> {
    let mut held = BTreeSet::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else { continue };
        for fd in fds.flatten() {
            let Ok(text) = std::fs::read_to_string(fd.path()) else { continue };
            for (key, kind) in [("prog_id:", "prog"), ("map_id:", "map"), ("link_id:", "link")] {
                if let Some(v) = text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok()) {
                    held.insert((kind, v));
                }
            }
        }
    }
    for p in bpftool("prog") {
        if held.contains(&("prog", p["id"].as_u64().unwrap_or(0))) {
            for m in p["map_ids"].as_array().into_iter().flatten().filter_map(Value::as_u64) {
                held.insert(("map", m));
            }
        }
    }
    held
}

/// Our objects that are new since `before` and that no live process holds: debris.
fn debris(before: &BTreeSet<Obj>, seen: &mut Seen) -> Vec<Obj> {
    let now = our_objects(seen);
    let held = held_by_processes();
    now.into_iter().filter(|o| !before.contains(o) && !held.contains(&(o.kind, o.id))).collect()
}

/// Waits (bounded: the kernel frees programs of a dead process after an RCU grace period) until
/// `ok` accepts the debris; returns the last debris seen.
fn settle_debris(before: &BTreeSet<Obj>, seen: &mut Seen, ok: impl Fn(&[Obj]) -> bool) -> Vec<Obj> {
    let start = Instant::now();
    loop {
        let d = debris(before, seen);
        if ok(&d) || start.elapsed() > TIMEOUT {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tracefs mounts and bpffs entries with our names: nothing of ours may stay.
fn mounts_and_pins() -> (usize, Vec<String>) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tracefs = mounts.lines().filter(|l| l.contains(" tracefs ") || l.contains("tracer-tracefs")).count();
    let maps = our_map_names();
    let mut pins = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/bpf"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_our_prog(&name) || maps.contains(&name) || name.contains("tracer") {
                pins.push(e.path().display().to_string());
            }
            if depth < 4 && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    (tracefs, pins)
}

/// Entries of the temporary directory the tracer would use (`tracer-*`).
fn tracer_temp_files() -> BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tracer-"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading outputs back, whatever way the run ended.

/// Every line of a JSON Lines file; a last line without its newline (cut by a kill) is allowed
/// and left out, any other bad line fails. Returns (drop events, all records, cut tail).
fn read_jsonl(path: &Path) -> (u64, u64, bool) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut drops = 0;
    let mut records = 0;
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("{} line {} is not JSON ({e}): {}", path.display(), i + 1, String::from_utf8_lossy(line)));
        records += 1;
        drops += u64::from(v["type"] == "drop" || v["kind"] == "drop");
    }
    (drops, records, complete < bytes.len())
}

/// Walks pcapng blocks (type, length, trailing length): every block whole, except possibly a
/// truncated last one. Returns (enhanced packet blocks, drop packets by comment, bytes of whole
/// blocks, cut tail).
fn walk_pcapng(path: &Path) -> (u64, u64, usize, bool) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    assert!(b.len() >= 28 && u32_at(0) == 0x0A0D_0D0A, "{} does not start with a section header block", path.display());
    let (mut off, mut epbs, mut drops) = (0usize, 0u64, 0u64);
    while off + 12 <= b.len() {
        let (kind, len) = (u32_at(off), u32_at(off + 4) as usize);
        assert!(len >= 12 && len % 4 == 0, "bad block length {len} at {off} in {}", path.display());
        if off + len > b.len() {
            break;
        }
        assert_eq!(u32_at(off + len - 4) as usize, len, "trailing length of the block at {off}");
        if kind == 6 {
            epbs += 1;
            // The comment of a drop says "drop reason="; --all's path packets say their fate.
            let block = &b[off..off + len];
            let has = |needle: &[u8]| block.windows(needle.len()).any(|w| w == needle);
            drops += u64::from(has(b"drop reason=") || has(b"fate: dropped"));
        }
        off += len;
    }
    (epbs, drops, off, off < b.len())
}

/// The whole blocks of a pcapng read back by pcap-file and by tshark: both see `packets`.
fn pcapng_readable(path: &Path, whole: usize, packets: u64) {
    // A copy elsewhere: the file's own disk may be full.
    let scratch = TempDir::new("rb-pcap").unwrap();
    let copy = scratch.join("whole.pcapng");
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(&copy, &bytes[..whole]).unwrap();
    let read = integration_tests::pcap::read(&copy).unwrap();
    assert_eq!(read.packets.len() as u64, packets, "pcap-file packets");
    let rows = integration_tests::pcap::tshark_fields(&copy, &["frame.number"]).unwrap();
    assert_eq!(rows.len() as u64, packets, "tshark packets");
}

// ---------------------------------------------------------------------------------------------
// 1. Observer only.

const P_OK: u16 = 33001;
const P_UDP_DROP: u16 = 33002;
const P_TCP: u16 = 33003;
const P_TCP_DROP: u16 = 33004;

/// What the receivers and the kernel's own counters say about one round of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    udp_delivered: u64,
    udp_to_denied_pod: u64,
    tcp_connections: u64,
    tcp_bytes: u64,
    tcp_blocked: ConnectResults,
    tc_shot: u64,
    udp_rule_packets: u64,
    tcp_rule_packets: u64,
}

/// A → B: 200 UDP datagrams delivered, 50 dropped by an iptables rule, 10 TCP connections with
/// 10 kB each, 3 connection attempts dropped by an iptables rule; A → C: 40 datagrams shot by
/// the tc program on A's lxc.
fn traffic(node: &Node, fixture: &mut TcFixture, rules: (&IptRule, &IptRule)) -> Delivery {
    let (a, b, c) = (node.pod(0), node.pod(1), node.pod(2));
    let (r_udp, r_tcp) = (node.iptables_packets(rules.0).unwrap(), node.iptables_packets(rules.1).unwrap());
    let shot = fixture.stats().unwrap().from_shot;
    let at_b = b.listen_udp(P_OK).unwrap();
    let at_c = c.listen_udp(P_OK).unwrap();
    let tcp = b.listen_tcp(P_TCP).unwrap();
    assert_eq!(a.send_udp(P_OK, b.addr(P_OK), 200, b"delivered").unwrap(), 200);
    assert_eq!(a.send_udp(P_OK, b.addr(P_UDP_DROP), 50, b"iptables drops this").unwrap(), 50);
    assert_eq!(a.send_udp(P_OK, c.addr(P_OK), 40, b"tc drops this").unwrap(), 40);
    for i in 0..10u8 {
        a.send_tcp(b.addr(P_TCP), &[i; 10_000], TIMEOUT).unwrap();
    }
    let tcp_blocked = a.tcp_connect(b.addr(P_TCP_DROP), 3, Duration::from_millis(300)).unwrap();
    let _ = at_b.wait_for(200, Duration::from_secs(5));
    let _ = wait::until("the tc program's shot counter", Duration::from_secs(5), Duration::from_millis(10), || Ok((fixture.stats()?.from_shot >= shot + 40).then_some(())));
    std::thread::sleep(SETTLE);
    let (tcp_connections, tcp_bytes) = tcp.stop().unwrap();
    Delivery {
        udp_delivered: at_b.stop().unwrap(),
        udp_to_denied_pod: at_c.stop().unwrap(),
        tcp_connections,
        tcp_bytes,
        tcp_blocked,
        tc_shot: fixture.stats().unwrap().from_shot - shot,
        udp_rule_packets: node.iptables_packets(rules.0).unwrap() - r_udp,
        tcp_rule_packets: node.iptables_packets(rules.1).unwrap() - r_tcp,
    }
}

/// The same traffic without and with the tracer (`--path --all`, netfilter and tc observers, a
/// pod filter): identical deliveries and kernel counters; rulesets identical before, during and
/// after; tc state identical before and after, and during apart from our observers.
#[test]
fn observer_only_same_delivery_rulesets_and_tc_state() {
    let mut node = node(3);
    let (a, b, c) = (node.pod(0).clone(), node.pod(1).clone(), node.pod(2).clone());
    let cache = cni_cache(&node);
    let (ai, bi) = (a.ip.to_string(), b.ip.to_string());
    let udp_rule = node.iptables("filter", "FORWARD", &["-s", &ai, "-d", &bi, "-p", "udp", "--dport", &P_UDP_DROP.to_string(), "-j", "DROP"]).unwrap();
    let tcp_rule = node.iptables("filter", "FORWARD", &["-s", &ai, "-d", &bi, "-p", "tcp", "--dport", &P_TCP_DROP.to_string(), "-j", "DROP"]).unwrap();
    node.nft_table("inet", "rbobserve", "chain rbforward { type filter hook forward priority 10; policy accept; counter; }").unwrap();
    let mut shooter = fixture(&node, &a, Attach::ClsBpf, Direction::Ingress, &["cil_from_container"], &[c.ip]);
    let _passer = fixture(&node, &b, Attach::tcx_or_cls_bpf(), Direction::Egress, &["cil_to_container"], &[]);
    let (rules0, tc0) = (rulesets(&node), tc_state(&node));

    let baseline = traffic(&node, &mut shooter, (&udp_rule, &tcp_rule));
    // The traffic is what was planned (so "equal" below compares something).
    let blocked = ConnectResults { timed_out: 3, ..ConnectResults::default() };
    assert_eq!(
        baseline,
        Delivery { udp_delivered: 200, udp_to_denied_pod: 0, tcp_connections: 10, tcp_bytes: 100_000, tcp_blocked: blocked, tc_shot: 40, udp_rule_packets: 50, tcp_rule_packets: 3 }
    );

    let run = tracer()
        .capture()
        .arg("--path")
        .arg("--all")
        .arg("--cni-cache-dir")
        .arg(cache.path())
        .arg("--pod")
        .arg(pod_name(a.index))
        .expression("net 10.240.0.0/16")
        .start()
        .unwrap();
    let (rules1, tc1) = (rulesets(&node), tc_state(&node));
    assert!(ours_in(&tc1) >= 2, "our observers are attached (cls_bpf on {}, tcx on {}): {tc1:#?}", a.lxc, b.lxc);
    let traced = traffic(&node, &mut shooter, (&udp_rule, &tcp_rule));
    let (rules2, tc2) = (rulesets(&node), tc_state(&node));
    let done = run.stop().unwrap().ok().unwrap();
    let (rules3, tc3) = (rulesets(&node), tc_state(&node));

    assert_eq!(traced, baseline, "delivery and kernel counters with the tracer running");
    assert_eq!(rules1, rules0, "rulesets while the tracer runs");
    assert_eq!(rules2, rules0, "rulesets after traffic, tracer running");
    assert_eq!(rules3, rules0, "rulesets after the tracer");
    assert_eq!(without_ours(&tc1), without_ours(&tc0), "tc state while running, our observers aside");
    assert_eq!(without_ours(&tc2), without_ours(&tc0));
    assert_eq!(tc3, tc0, "tc state after the tracer, byte for byte");
    // And it was observing: every drop of pod A (iptables, tc), followed packets on the path.
    let s = done.summary().unwrap();
    assert_eq!(done.drops().unwrap(), traced.udp_rule_packets + traced.tcp_rule_packets + traced.tc_shot, "{}", done.stderr);
    assert_eq!(s["lost_events"], 0);
    assert!(s["path"]["packets"].as_u64().unwrap_or(0) > 0, "{s}");
    eprintln!("observer-only: {traced:?}; tracer: drops {} path packets {}", s["drops"], s["path"]["packets"]);
}

// ---------------------------------------------------------------------------------------------
// 1b. No program of ours can return a dropping verdict.

/// One eBPF instruction.
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    dst: usize,
    src: usize,
    off: i16,
    imm: i32,
}

fn decode(raw: &[u8]) -> Vec<Insn> {
    raw.chunks_exact(8)
        .map(|c| Insn { code: c[0], dst: usize::from(c[1] & 0xf), src: usize::from(c[1] >> 4), off: i16::from_le_bytes([c[2], c[3]]), imm: i32::from_le_bytes([c[4], c[5], c[6], c[7]]) })
        .collect()
}

/// The target of a jump at `pc` by `off`.
fn jump(pc: usize, off: i64) -> usize {
    usize::try_from(i64::try_from(pc).unwrap() + 1 + off).unwrap()
}

/// Every value r0 may hold at an `exit` of the main program (not of subprograms or callbacks):
/// constant propagation over the control-flow graph from instruction 0. `None` = not a constant
/// (then the verdict is unknown and the audit fails).
fn exit_values(insns: &[Insn]) -> BTreeSet<Option<i32>> {
    type Regs = [Option<i64>; 11];
    let mut state: Vec<Option<Regs>> = vec![None; insns.len() + 1];
    let mut work = vec![(0usize, [None; 11])];
    let mut exits = BTreeSet::new();
    let mut steps = 0;
    while let Some((pc, regs)) = work.pop() {
        steps += 1;
        assert!(steps < 1_000_000, "analysis does not converge");
        let Some(i) = insns.get(pc) else { continue };
        // Join with what was seen here: equal constants stay, others become unknown.
        let merged: Regs = match state[pc] {
            Some(old) => {
                let mut m = old;
                for r in 0..11 {
                    if m[r] != regs[r] {
                        m[r] = None;
                    }
                }
                if m == old {
                    continue;
                }
                m
            }
            None => regs,
        };
        state[pc] = Some(merged);
        let mut r = merged;
        let class = i.code & 7;
        let next = |n: usize, work: &mut Vec<(usize, Regs)>, r: Regs| work.push((n, r));
        match class {
            0 => {
                // ld_imm64 (two slots) or a legacy packet load into r0.
                if i.code == 0x18 {
                    let hi = insns.get(pc + 1).map_or(0, |n| i64::from(n.imm));
                    r[i.dst] = (i.src == 0).then_some((hi << 32) | i64::from(i.imm.cast_unsigned()));
                    next(pc + 2, &mut work, r);
                } else {
                    r[0] = None;
                    next(pc + 1, &mut work, r);
                }
            }
            1 => {
                r[i.dst] = None;
                next(pc + 1, &mut work, r);
            }
            2 | 3 => {
                // Stores; atomics with fetch write a register back.
                if i.code & 0xe0 == 0xc0 {
                    r[i.src] = None;
                    r[0] = None;
                }
                next(pc + 1, &mut work, r);
            }
            4 | 7 => {
                let op = i.code & 0xf0;
                let k = i.code & 0x08 == 0;
                r[i.dst] = if op == 0xb0 {
                    let v = if k { Some(i64::from(i.imm)) } else { r[i.src] };
                    if class == 4 { v.map(|v| v & 0xffff_ffff) } else { v }
                } else {
                    None
                };
                next(pc + 1, &mut work, r);
            }
            _ => {
                let op = i.code & 0xf0;
                match op {
                    0x00 => {
                        let off = if class == 6 { i64::from(i.imm) } else { i64::from(i.off) };
                        next(jump(pc, off), &mut work, r);
                    }
                    0x80 => {
                        for reg in r.iter_mut().take(6) {
                            *reg = None;
                        }
                        next(pc + 1, &mut work, r);
                    }
                    0x90 => {
                        // The kernel reads the verdict as a 32-bit int.
                        exits.insert(r[0].map(|v| i32::from_ne_bytes(v.to_ne_bytes()[..4].try_into().unwrap())));
                    }
                    _ => {
                        next(pc + 1, &mut work, r);
                        next(jump(pc, i64::from(i.off)), &mut work, r);
                    }
                }
            }
        }
    }
    exits
}

/// The program's translated instructions, as the kernel runs them (`bpftool prog dump xlated`).
fn xlated(id: u64, dir: &TempDir) -> Vec<Insn> {
    let f = dir.join(&format!("prog-{id}.bin"));
    cmd::run("bpftool", &["prog", "dump", "xlated", "id", &id.to_string(), "file", &f.display().to_string()]).unwrap();
    decode(&std::fs::read(&f).unwrap())
}

/// Every tc observer of ours can only return `TC_ACT_UNSPEC` (-1, also `TCX_NEXT`: the next
/// program runs as if we were absent) and every netfilter observer only `NF_ACCEPT` (1), on every
/// path through their code as the kernel runs it. The same analysis finds the fixture program's
/// verdict the fixture program computes (`TC_ACT_SHOT` or not), so it would refuse that one. Tracing programs (drop probe, path) return nothing the
/// kernel acts on. The netfilter observer's assembly is also checked path by path in its unit
/// test (tracer/src/probes/netfilter/asm.rs).
#[test]
fn our_verdict_programs_can_only_pass() {
    let mut node = node(3);
    let (a, b, c) = (node.pod(0).clone(), node.pod(1).clone(), node.pod(2).clone());
    node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "33101", "-j", "DROP"]).unwrap();
    let shooter = fixture(&node, &a, Attach::ClsBpf, Direction::Ingress, &["cil_to_container", "cil_from_container"], &[c.ip]);
    let _second = fixture(&node, &b, Attach::tcx_or_cls_bpf(), Direction::Ingress, &["cil_from_container"], &[c.ip]);
    let run = tracer().capture().arg("--path").expression("net 10.240.0.0/16").start().unwrap();
    let dir = TempDir::new("rb-xlated").unwrap();
    let (mut tc, mut nf) = (0, 0);
    for p in bpftool("prog") {
        let (id, name) = (p["id"].as_u64().unwrap(), p["name"].as_str().unwrap_or_default());
        let want = if name.starts_with("tracer_tc_") {
            tc += 1;
            assert_eq!(p["type"], "sched_cls", "{p}");
            -1
        } else if name == "tracer_nf_obs" {
            nf += 1;
            1
        } else {
            continue;
        };
        let exits = exit_values(&xlated(id, &dir));
        assert_eq!(exits, BTreeSet::from([Some(want)]), "program {name} (id {id}) may return {exits:?}");
    }
    assert!(tc >= 2, "tc observers audited: {tc}");
    if Feature::NetfilterLink.probe().is_ok() {
        assert!(nf >= 1, "netfilter observers audited: {nf}");
    } else {
        unchecked("the netfilter observers' verdicts", Feature::NetfilterLink);
    }
    let fixture_prog = shooter.programs().iter().find(|p| p.name == "cil_from_container").unwrap();
    let exits = exit_values(&xlated(u64::from(fixture_prog.id), &dir));
    assert_ne!(exits, BTreeSet::from([Some(-1)]), "the audit refuses a program that can shoot packets");
    drop(run.stop().unwrap().ok().unwrap());
    eprintln!("audited {tc} tc observers (only -1) and {nf} netfilter observers (only 1); cil_from_container may return {exits:?}");
}

// ---------------------------------------------------------------------------------------------
// 2 + 3. Every way a run ends: no debris, readable outputs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Sigint,
    Sigterm,
    Duration,
    Sigkill,
    Panic,
}

/// A capture with every feature on ends by `end`. Afterwards: no BPF program, map or link of
/// ours, no tc filter, tcx link, pinned object, tracefs mount or temporary file (after SIGKILL the
/// `cls_bpf` observers stay until the next run, which removes them); outputs readable, with
/// exactly the drops that were flushed (all of them: traffic ends > 1 s before a kill).
fn ends_cleanly(end: End, port: u16) {
    let mut node = node(3);
    let (a, b, c) = (node.pod(0).clone(), node.pod(1).clone(), node.pod(2).clone());
    let cache = cni_cache(&node);
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]).unwrap();
    let mut shooter = fixture(&node, &a, Attach::ClsBpf, Direction::Ingress, &["cil_from_container"], &[c.ip]);
    let _second = fixture(&node, &b, Attach::tcx_or_cls_bpf(), Direction::Egress, &["cil_to_container"], &[]);
    let mut seen = Seen::default();
    let before = our_objects(&mut seen);
    let tc0 = tc_state(&node);
    let (mounts0, pins0) = mounts_and_pins();
    let temp0 = tracer_temp_files();

    let mut cap = tracer()
        .capture()
        .arg("--path")
        .arg("--all")
        .arg("--cni-cache-dir")
        .arg(cache.path())
        .arg("--pod")
        .arg(pod_name(a.index))
        .expression(format!("udp and net 10.240.0.0/16 and port {port}"));
    if end == End::Duration {
        cap = cap.arg("--duration").arg("4s");
    }
    if end == End::Panic {
        cap = cap.env("TRACER_TEST_PANIC_AFTER_READY", "3000");
    }
    let run = cap.start().unwrap();
    let pid = run.pid().unwrap();
    let during = our_objects(&mut seen);
    assert!(during.iter().filter(|o| o.kind == "prog").count() >= 4 && during.iter().any(|o| o.kind == "link"), "attached: {during:?}");
    assert!(ours_in(&tc_state(&node)) >= 2, "tc observers attached");
    assert_eq!(a.send_udp(port, b.addr(port), 30, b"iptables").unwrap(), 30);
    assert_eq!(a.send_udp(port, c.addr(port), 20, b"tc").unwrap(), 20);
    wait::until("the kernel's counters", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= 30 && shooter.stats()?.from_shot >= 20).then_some(()))).unwrap();
    let wanted = 50;
    if matches!(end, End::Sigkill | End::Panic) {
        // Past the next periodic flush (every second).
        std::thread::sleep(Duration::from_millis(2200));
    } else {
        std::thread::sleep(SETTLE);
    }
    let done = match end {
        End::Sigint => run.stop(),
        End::Sigterm => run.stop_with(libc::SIGTERM),
        End::Sigkill => run.stop_with(libc::SIGKILL),
        End::Duration | End::Panic => run.wait(),
    }
    .unwrap();

    // Exit status and the line it says.
    match end {
        End::Sigint | End::Sigterm | End::Duration => assert!(done.status.success(), "{end:?}: {}", done.stderr),
        End::Sigkill => assert_eq!(done.status.signal(), Some(libc::SIGKILL)),
        End::Panic => {
            assert_eq!(done.status.code(), Some(101), "{}", done.stderr);
            let line = done.stderr_lines().into_iter().find(|l| l.contains("panic")).unwrap_or_default().to_string();
            assert!(line.starts_with("tracer: error: internal error (panic at ") && line.contains("TRACER_TEST_PANIC_AFTER_READY"), "{}", done.stderr);
        }
    }

    // Outputs.
    let json = done.dir.join("drops.jsonl");
    let (drops, records, cut_json) = read_jsonl(&json);
    assert_eq!(drops, wanted, "{end:?}: drop events in the JSON; stderr:\n{}", done.stderr);
    assert!(records > drops, "path records too");
    let (packets, pcap_drops, whole, cut_pcap) = walk_pcapng(&done.dir.join("drops.pcapng"));
    assert_eq!(pcap_drops, wanted, "{end:?}: dropped packets in the pcapng");
    pcapng_readable(&done.dir.join("drops.pcapng"), whole, packets);
    if matches!(end, End::Sigkill | End::Panic) {
        assert!(done.summary.is_none(), "no summary after {end:?}");
        eprintln!("{end:?}: JSON {records} records ({drops} drops, cut tail: {cut_json}), pcapng {packets} packets (cut tail: {cut_pcap})");
    } else {
        assert!(!cut_json && !cut_pcap, "complete files");
        let s = done.summary().unwrap();
        assert_eq!((s["drops"].as_u64(), s["events"].as_u64(), s["lost_events"].as_u64()), (Some(wanted), Some(wanted), Some(0)), "{s}");
    }
    let files = done.dir.entries().unwrap();
    let expected: Vec<&str> = if matches!(end, End::Sigkill | End::Panic) { vec!["drops.jsonl", "drops.pcapng", "ready"] } else { vec!["drops.jsonl", "drops.pcapng", "ready", "summary.json"] };
    assert_eq!(files, expected, "no temporary file beside the outputs");

    // Debris.
    if end == End::Sigkill {
        let left = settle_debris(&before, &mut seen, |d| d.iter().all(|o| (o.kind == "prog" && o.name.starts_with("tracer_tc_")) || o.kind == "map"));
        let tc_left: Vec<String> = tc_state(&node).values().flat_map(|v| v.lines().filter(|l| l.contains("tracer_tc")).map(String::from).collect::<Vec<_>>()).collect();
        assert!(!tc_left.is_empty() && tc_left.iter().all(|l| l.contains(&format!("tracer_tc pid={pid}"))), "SIGKILL leaves our cls_bpf filters, named: {tc_left:?}");
        assert!(left.iter().any(|o| o.name.starts_with("tracer_tc_")) && left.iter().all(|o| o.kind != "link"), "only the filters' programs (and their maps) stay: {left:?}");
        // The next run removes them, then leaves nothing itself.
        let next = tracer().capture().arg("--duration").arg("1s").expression("udp port 9").run(Duration::from_mins(1)).unwrap().ok().unwrap();
        assert!(next.stderr.contains("tc observer filters left by a killed earlier run"), "{}", next.stderr);
    }
    let left = settle_debris(&before, &mut seen, <[Obj]>::is_empty);
    assert!(left.is_empty(), "{end:?} left BPF objects: {left:?}");
    assert_eq!(tc_state(&node), tc0, "{end:?}: tc state as before");
    assert_eq!(mounts_and_pins(), (mounts0, pins0), "{end:?}: no tracefs mount or pinned object left");
    assert_eq!(tracer_temp_files(), temp0, "{end:?}: no temporary file left");
}

#[test]
fn sigint_leaves_nothing_and_complete_outputs() {
    ends_cleanly(End::Sigint, 33201);
}

#[test]
fn sigterm_leaves_nothing_and_complete_outputs() {
    ends_cleanly(End::Sigterm, 33211);
}

#[test]
fn duration_leaves_nothing_and_complete_outputs() {
    ends_cleanly(End::Duration, 33221);
}

#[test]
fn sigkill_leaves_only_named_filters_the_next_run_removes() {
    ends_cleanly(End::Sigkill, 33231);
}

#[test]
fn panic_unwinds_through_cleanup_and_keeps_outputs() {
    ends_cleanly(End::Panic, 33241);
}

// ---------------------------------------------------------------------------------------------
// A tracer process run by hand, for runs with outputs in places of the test's choosing.

struct Spawned {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
    peak_kb: Arc<AtomicU64>,
    stop_poll: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl Spawned {
    /// Starts `tracer capture ARGS…` and waits (bounded) for `ready`; polls its `VmHWM` until it
    /// exits.
    fn start(args: &[&str], ready: &Path) -> Self {
        let mut child = Command::new(&tracer().bin)
            .arg("capture")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        });
        let (peak_kb, stop_poll) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (pk, sp, pid) = (peak_kb.clone(), stop_poll.clone(), child.id());
        let poller = std::thread::spawn(move || {
            // VmHWM only grows: the last value read before the process is gone is its peak.
            while !sp.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { break };
                if let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()) {
                    pk.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut s = Self { child, stderr, peak_kb, stop_poll, poller: Some(poller) };
        let waited = wait::until("the tracer's ready file", Duration::from_mins(1), Duration::from_millis(20), || {
            if ready.exists() {
                return Ok(Some(()));
            }
            match s.child.try_wait()? {
                Some(st) => anyhow::bail!("the tracer exited before it was ready ({st})"),
                None => Ok(None),
            }
        });
        if let Err(e) = waited {
            let (_, err, _) = s.finish(libc::SIGKILL);
            panic!("{e:#}; stderr:\n{err}");
        }
        s
    }

    /// Signals, waits (bounded), returns (status, stderr, peak `VmHWM` in KiB).
    fn finish(&mut self, sig: libc::c_int) -> (ExitStatus, String, u64) {
        // SAFETY: our child, not reaped yet.
        unsafe { libc::kill(libc::pid_t::try_from(self.child.id()).unwrap(), sig) };
        let status = wait::until("the tracer to exit", Duration::from_mins(2), Duration::from_millis(10), || Ok(self.child.try_wait()?)).unwrap_or_else(|e| {
            let _ = self.child.kill();
            panic!("{e:#}");
        });
        self.stop_poll.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new)).join().unwrap_or_default();
        (status, stderr, self.peak_kb.load(Ordering::Relaxed))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stop_poll.store(true, Ordering::Relaxed);
    }
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        cmd::run("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "rbfull", &at.display().to_string()]).unwrap();
        Self(at)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = cmd::run("umount", &[&self.0.display().to_string()]);
    }
}

// ---------------------------------------------------------------------------------------------
// 3b. A full disk.

/// The pcapng on a 64 KiB tmpfs fills up: one clear line, the pcapng keeps its whole blocks and
/// stays readable, the JSON and the summary are complete, `lost_events` is exactly the drops the
/// pcapng misses, and the exit status says an output is incomplete.
#[test]
fn full_disk_stops_one_output_and_counts_exactly() {
    let mut node = node(2);
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let port = 33301;
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]).unwrap();
    let dir = TempDir::new("rb-full").unwrap();
    let small = SmallFs::mount(dir.join("small"), "64k");
    let (pcap, json, summary, ready) = (small.0.join("drops.pcapng"), dir.join("drops.jsonl"), dir.join("summary.json"), dir.join("ready"));
    let expr = format!("udp and dst port {port}");
    let args = ["--quiet", "--pcap", pcap.to_str().unwrap(), "--json", json.to_str().unwrap(), "--summary", summary.to_str().unwrap(), "--ready-file", ready.to_str().unwrap(), &expr];
    let mut t = Spawned::start(&args, &ready);
    let sent = 1500;
    for _ in 0..3 {
        assert_eq!(a.send_udp(port, b.addr(port), sent / 3, b"fills the small disk").unwrap(), sent / 3);
        std::thread::sleep(Duration::from_millis(1200));
    }
    wait::until("the rule's counter", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= sent as u64).then_some(()))).unwrap();
    std::thread::sleep(SETTLE);
    let (status, stderr, _) = t.finish(libc::SIGINT);
    assert_eq!(status.code(), Some(1), "an incomplete output is a failed run: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tracer: error: ")).collect();
    assert_eq!(errors.len(), 2, "the moment it stopped, and the run's end: {stderr}");
    assert!(errors[0].contains(&format!("cannot write {}", pcap.display())) && errors[0].contains("No space left on device") && errors[0].contains("pcapng output stopped"), "{}", errors[0]);
    assert!(errors[1].contains("stopped early") && errors[1].contains("lost_events"), "{}", errors[1]);
    let (drops, _, cut) = read_jsonl(&json);
    assert_eq!((drops, cut), (sent as u64, false), "the JSON is complete");
    let (packets, _, whole, cut) = walk_pcapng(&pcap);
    assert!(!cut && whole as u64 == std::fs::metadata(&pcap).unwrap().len(), "the pcapng was cut back to whole blocks");
    assert!(packets > 0 && packets < sent as u64, "{packets} packets fit");
    pcapng_readable(&pcap, whole, packets);
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["drops"], sent);
    assert_eq!(s["events"], packets, "events in every output = the pcapng's");
    assert_eq!(s["lost_events"], sent as u64 - packets, "exactly the drops the pcapng misses");
    eprintln!("full disk: {sent} drops, JSON {drops}, pcapng {packets} ({whole} bytes), lost_events {}", s["lost_events"]);
    drop(small);
}

// ---------------------------------------------------------------------------------------------
// 4. A drop storm.

/// 1,000,000 datagrams into an iptables DROP rule (bounded by count and by time), with the event
/// rate limit off (`--max-event-rate 0`: every drop is offered to the ring, the hardest case for
/// the ring and the pipeline): the tracer's peak memory stays under 64 MiB, `drops` equals the
/// rule's counter exactly, and `lost_events` is exactly the drops missing from the JSON and the
/// pcapng.
#[test]
fn drop_storm_bounded_memory_exact_totals() {
    let mut node = node(2);
    let (client, server) = (node.pod(0).clone(), node.pod(1).clone());
    let port = 33401;
    let rule = node.iptables("filter", "FORWARD", &["-d", &server.ip.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]).unwrap();
    let dir = TempDir::new("rb-storm").unwrap();
    let (pcap, json, summary, ready) = (dir.join("drops.pcapng"), dir.join("drops.jsonl"), dir.join("summary.json"), dir.join("ready"));
    let expr = format!("udp and dst port {port}");
    let args = ["--quiet", "--max-event-rate", "0", "--snaplen", "96", "--pcap", pcap.to_str().unwrap(), "--json", json.to_str().unwrap(), "--summary", summary.to_str().unwrap(), "--ready-file", ready.to_str().unwrap(), &expr];
    let mut t = Spawned::start(&args, &ready);
    let rule0 = node.iptables_packets(&rule).unwrap();
    // One sender thread in the pod: bounded by count and by time.
    let (target, limit) = (1_000_000u64, Duration::from_mins(2));
    let start = Instant::now();
    let (from, to) = (client.addr(port), server.addr(port));
    let sent = netns::run(&client.netns, move || {
        let s = std::net::UdpSocket::bind(from)?;
        let mut n = 0u64;
        while n < target && start.elapsed() < limit {
            if s.send_to(b"storm", to).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    })
    .unwrap();
    let send_s = start.elapsed().as_secs_f64();
    wait::until("the rule's counter", Duration::from_secs(30), Duration::from_millis(20), || Ok((node.iptables_packets(&rule)? >= rule0 + sent).then_some(()))).unwrap();
    std::thread::sleep(SETTLE);
    let (status, stderr, peak_kb) = t.finish(libc::SIGINT);
    assert!(status.success(), "{stderr}");
    let counted = node.iptables_packets(&rule).unwrap() - rule0;
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let (drops, events, lost) = (s["drops"].as_u64().unwrap(), s["events"].as_u64().unwrap(), s["lost_events"].as_u64().unwrap());
    assert_eq!(s["rate_limited"], 0, "no rate limit in this run");
    let (json_drops, _, cut) = read_jsonl(&json);
    let (packets, _, _, pcut) = walk_pcapng(&pcap);
    eprintln!(
        "storm: sent {sent} in {send_s:.1} s ({:.0}/s), rule counted {counted}, drops {drops}, events {events}, lost_events {lost}, JSON drop lines {json_drops}, pcapng packets {packets}, peak VmHWM {peak_kb} KiB",
        f64::from(u32::try_from(sent).unwrap()) / send_s
    );
    assert!(sent >= target, "the sender reached {sent} of {target} in {limit:?}");
    assert_eq!(counted, sent, "the rule saw every datagram");
    assert_eq!(drops, counted, "drops = the kernel's own count");
    assert!(!cut && !pcut);
    assert_eq!(json_drops, events, "every event counted as written is in the JSON");
    assert_eq!(packets, events, "and in the pcapng");
    assert_eq!(lost, drops - json_drops, "lost_events = drops missing from the outputs, exactly");
    assert!(peak_kb > 0 && peak_kb < 64 * 1024, "peak VmHWM {peak_kb} KiB ≥ 64 MiB");
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input.

/// One refused run: exactly one stderr line `tracer: error: …` naming `needles`, a non-zero
/// exit, nothing on stdout, no file in its directory.
fn refused(what: &str, done: &integration_tests::Finished, needles: &[&str]) {
    assert!(!done.status.success(), "{what}: exit status {}", done.status);
    let lines = done.stderr_lines();
    assert_eq!(lines.len(), 1, "{what}: one stderr line: {:?}", done.stderr);
    assert!(lines[0].starts_with("tracer: error: "), "{what}: {:?}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "{what}: {n:?} in {:?}", lines[0]);
    }
    assert!(done.stdout.is_empty(), "{what}: stdout {:?}", done.stdout);
    assert_eq!(done.dir.entries().unwrap(), Vec::<String>::new(), "{what}: no file");
    eprintln!("{what:<28} exit {:<3} {}", done.status.code().unwrap_or(-1), lines[0]);
}

/// The kernel's BTF with `enum skb_drop_reason` renamed away (its name's bytes changed in the
/// string section), and a tracefs whose `kfree_skb` format is a 5.15 kernel's (no reason field).
fn kernel_without_drop_reasons(dir: &TempDir) -> (PathBuf, PathBuf) {
    let mut btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
    let needle = b"\0skb_drop_reason\0";
    let at = btf.windows(needle.len()).position(|w| w == needle).expect("this kernel's BTF names enum skb_drop_reason");
    btf[at + needle.len() - 2] = b'X';
    let path = dir.join("vmlinux-without-reasons");
    std::fs::write(&path, btf).unwrap();
    let tracefs = dir.join("tracefs");
    let fmt = tracefs.join("events/skb/kfree_skb");
    std::fs::create_dir_all(&fmt).unwrap();
    std::fs::write(
        fmt.join("format"),
        "name: kfree_skb\nID: 1\nformat:\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\nprint fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n",
    )
    .unwrap();
    (path, tracefs)
}

/// Every kind of bad input: one clear line, non-zero exit, no partial file.
#[test]
fn bad_input_table() {
    let node = node(2);
    let cache = cni_cache(&node);
    let aux = TempDir::new("rb-bad").unwrap();
    let (no_reasons_btf, old_tracefs) = kernel_without_drop_reasons(&aux);
    let run = |c: integration_tests::Capture| c.arg("--duration").arg("3s").run(Duration::from_mins(1)).unwrap();
    let t = tracer();
    refused("bad expression", &run(t.capture().expression("udp and and port")), &["bad filter expression"]);
    refused("unknown interface", &run(t.capture().arg("--iface").arg("rbnosuch0").expression("udp")), &["rbnosuch0"]);
    refused("unknown netns", &run(t.capture().arg("--netns").arg("rbnosuchns").expression("udp")), &["rbnosuchns"]);
    refused(
        "unknown pod",
        &run(t.capture().arg("--cni-cache-dir").arg(cache.path()).arg("--pod").arg("default/rb-9").expression("udp")),
        &["unknown pod default/rb-9", "default/rb-0"],
    );
    refused("not root", &run(t.capture().as_nobody().expression("udp")), &["root"]);
    refused("no BTF", &run(t.capture().env("TRACER_TEST_BTF_PATH", aux.join("missing")).expression("udp")), &["no BTF", "CONFIG_DEBUG_INFO_BTF"]);
    refused(
        "no drop reasons",
        &run(t.capture().env("TRACER_TEST_BTF_PATH", &no_reasons_btf).env("TRACER_TEST_TRACEFS", &old_tracefs).expression("udp")),
        &["no reason field", "5.17"],
    );
    refused("unwritable file", &run(t.capture().no_default_outputs().arg("--json").arg("/proc/rb/no/x.jsonl").expression("udp")), &["cannot write /proc/rb/no/x.jsonl"]);
    refused("output is a directory", &run(t.capture().no_default_outputs().arg("--pcap").arg(aux.path()).expression("udp")), &["is a directory"]);
    refused("--all without --path", &run(t.capture().arg("--all").expression("udp")), &["--path", "tracer --help"]);
    refused("--backend without --path", &run(t.capture().arg("--backend").arg("kprobe").expression("udp")), &["--path"]);
    refused("two outputs on stdout", &run(t.capture().no_default_outputs().arg("--json").arg("-").arg("--summary").arg("-").expression("udp")), &["both go to stdout"]);
    refused("pcapng to stdout", &run(t.capture().no_default_outputs().arg("--pcap").arg("-").expression("udp")), &["--pcap -"]);
    refused("snaplen 0", &run(t.capture().arg("--snaplen").arg("0").expression("udp")), &["--snaplen"]);
    refused("bad duration", &t.capture().arg("--duration").arg("soon").expression("udp").run(Duration::from_mins(1)).unwrap(), &["soon"]);
    refused("unknown option", &run(t.capture().arg("--frobnicate").expression("udp")), &["--frobnicate"]);
}

/// No `nft` or `iptables-save` in PATH: the capture still counts every drop, and says once what
/// it could not attribute.
#[test]
fn missing_tools_are_named_and_the_capture_goes_on() {
    let mut node = node(2);
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let port = 33501;
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]).unwrap();
    let empty = TempDir::new("rb-path").unwrap();
    let run = tracer().capture().env("PATH", empty.path()).expression(format!("udp and dst port {port}")).start().unwrap();
    assert_eq!(a.send_udp(port, b.addr(port), 12, b"x").unwrap(), 12);
    wait::until("the rule's counter", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= 12).then_some(()))).unwrap();
    std::thread::sleep(SETTLE);
    let done = run.stop().unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), 12);
    assert_eq!(done.events.len(), 12);
    assert!(done.events.iter().all(|e| e["reason"] == "NETFILTER_DROP"));
    let warn: Vec<&str> = done.stderr_lines().into_iter().filter(|l| l.starts_with("tracer: warning: not found in PATH")).collect();
    assert_eq!(warn.len(), 1, "{}", done.stderr);
    assert!(warn[0].contains("nft") && warn[0].contains("iptables-nft-save") && warn[0].contains("not attributed"), "{}", warn[0]);
    eprintln!("{}", warn[0]);
}

/// `--json -` whose reader went away (EPIPE): that output stops with one line, the pcapng and
/// the summary are complete.
#[test]
fn closed_stdout_stops_json_only() {
    let mut node = node(2);
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let port = 33601;
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]).unwrap();
    let dir = TempDir::new("rb-epipe").unwrap();
    let (pcap, summary, ready) = (dir.join("drops.pcapng"), dir.join("summary.json"), dir.join("ready"));
    let mut child = Command::new(&tracer().bin)
        .args(["capture", "--json", "-", "--pcap", pcap.to_str().unwrap(), "--summary", summary.to_str().unwrap(), "--ready-file", ready.to_str().unwrap()])
        .arg(format!("udp and dst port {port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait::until("ready", Duration::from_mins(1), Duration::from_millis(20), || Ok(ready.exists().then_some(()))).unwrap();
    drop(child.stdout.take());
    assert_eq!(a.send_udp(port, b.addr(port), 40, b"x").unwrap(), 40);
    wait::until("the rule's counter", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= 40).then_some(()))).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: our child.
    unsafe { libc::kill(libc::pid_t::try_from(child.id()).unwrap(), libc::SIGINT) };
    let status = wait::until("exit", Duration::from_secs(30), Duration::from_millis(10), || Ok(child.try_wait()?)).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("tracer: error: cannot write stdout") && l.contains("Broken pipe") && l.contains("JSON output stopped")), "{stderr}");
    let (packets, drops, whole, _) = walk_pcapng(&pcap);
    assert_eq!((packets, drops), (40, 40));
    pcapng_readable(&pcap, whole, 40);
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!((s["drops"].as_u64(), s["events"].as_u64(), s["lost_events"].as_u64()), (Some(40), Some(0), Some(40)), "{s}");
}
