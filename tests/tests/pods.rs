//! Pod datapath attribution against the real `tracer` binary: the tc/BPF program that shot a
//! packet (`cls_bpf` and tcx, one or two programs on a hook, ingress and egress), pods named from
//! a libcni cache written for the test pods, `--pod` filtering in the kernel, clear errors, and
//! no tc filter of ours left behind (also after SIGKILL). Needs root; nodes use the `pd` prefix
//! and 10.230.0.0/16.
use std::{path::Path, time::Duration};

use integration_tests::{Attach, Direction, Feature, Finished, Node, NodeOptions, Pod, TcFixture, TcFixtureOptions, TempDir, Tracer, function, require, wait};
use serde_json::Value;

/// Bound on waiting for the kernel's own counters: only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_mins(1);

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn node(pods: usize) -> Node {
    Node::with_options(NodeOptions { prefix: "pd".into(), range: [10, 230], pods, ..NodeOptions::default() }).unwrap()
}

fn fixture_bin() -> std::path::PathBuf {
    integration_tests::fixture_bin(env!("CARGO_BIN_EXE_tc-fixture"))
}


/// The Kubernetes name the test gives pod `i`.
fn pod_name(i: usize) -> String {
    format!("default/web-{i}")
}

/// A libcni cache naming the node's pods (see `integration_tests::cni::cni_cache`).
fn cni_cache(node: &Node) -> TempDir {
    cni_cache_with(node, true)
}

fn cni_cache_with(node: &Node, host_side: bool) -> TempDir {
    integration_tests::cni::cni_cache(node, host_side).unwrap()
}

/// `bpftool prog show id N`: the kernel's view of a program (name as bpftool prints it).
fn bpftool_prog(id: u64) -> Value {
    let out = std::process::Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]).output().unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// tc filters of ours on an interface (by name), as `tc filter show` prints them.
fn our_filters(node: &Node, dev: &str) -> Vec<String> {
    let mut v = Vec::new();
    for dir in ["ingress", "egress"] {
        let out = node.exec("tc", &["filter", "show", "dev", dev, dir]).unwrap_or_default();
        v.extend(out.lines().filter(|l| l.contains("tracer_tc")).map(|l| format!("{dir}: {l}")));
    }
    v
}

/// Names of the tcx programs on an interface of the node, both directions (`BPF_PROG_QUERY`;
/// the bpftool here predates tcx).
fn tcx_programs(node: &Node, dev: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    // A kernel without tcx refuses the query (EINVAL) and can hold no tcx program.
    if Feature::Tcx.probe().is_err() {
        return Vec::new();
    }
    let dev = dev.to_string();
    integration_tests::netns::run(node.netns(), move || {
        let mut v = Vec::new();
        for t in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(&dev, t)?;
            v.extend(progs.iter().map(|p| format!("{t:?}: {}", p.name_as_str().unwrap_or("?"))));
        }
        Ok(v)
    })
    .unwrap()
}

/// tcx programs of ours on an interface.
fn our_programs(node: &Node, dev: &str) -> Vec<String> {
    tcx_programs(node, dev).into_iter().filter(|l| l.contains("tracer_tc")).collect()
}

/// Sends `n` datagrams that the fixture on `client`'s lxc shoots, and waits for its counter.
fn shoot(fixture: &mut TcFixture, client: &Pod, to: &Pod, sport: u16, dport: u16, n: usize) {
    assert_eq!(client.send_udp(sport, to.addr(dport), n, b"denied by policy").unwrap(), n);
    wait::until("the program's shot counter", TIMEOUT, Duration::from_millis(10), || Ok((fixture.stats()?.from_shot >= n as u64).then_some(())))
        .unwrap();
}

/// What every tc event must say.
struct Want<'a> {
    reason: &'a str,
    dev: &'a Pod,
    direction: &'a str,
    attach: &'a str,
    prog_id: u32,
    prog_tag: &'a str,
    src: &'a Pod,
    dst: &'a Pod,
}

fn check_tc(done: &Finished, n: u64, w: &Want<'_>) {
    let s = done.summary().unwrap();
    assert_eq!(done.drops().unwrap(), n, "drops; stderr:\n{}", done.stderr);
    assert_eq!(done.events.len() as u64, n);
    let kernel = bpftool_prog(u64::from(w.prog_id));
    assert_eq!(kernel["name"], "cil_from_container", "bpftool's view of the program");
    for e in &done.events {
        assert_eq!(e["reason"], w.reason, "{e}");
        assert_eq!(e["ifname"], w.dev.lxc.as_str());
        let tc = &e["tc"];
        assert_eq!(tc["ifname"], w.dev.lxc.as_str(), "{e}");
        assert_eq!(tc["direction"], w.direction, "{e}");
        assert_eq!(tc["attach"], w.attach, "{e}");
        assert_eq!(tc["prog"], "cil_from_container", "{e}");
        assert_eq!(tc["prog_id"], w.prog_id, "{e}");
        assert_eq!(tc["prog_id"], kernel["id"], "id as bpftool shows it");
        assert_eq!(tc["prog_tag"], w.prog_tag, "{e}");
        assert_eq!(tc["prog_tag"], kernel["tag"], "tag as bpftool shows it");
        assert_eq!(tc["verdict"], "SHOT");
        assert_eq!(tc["attribution"], "observer", "singled out per packet: {e}");
        assert_eq!(e["pod_iface"], pod_name(w.dev.index), "{e}");
        assert_eq!(e["src_pod"], pod_name(w.src.index), "{e}");
        assert_eq!(e["dst_pod"], pod_name(w.dst.index), "{e}");
    }
    let progs = s["by_program"].as_array().unwrap();
    assert_eq!(progs.len(), 1, "{progs:?}");
    assert_eq!(progs[0]["count"], n);
    assert_eq!(progs[0]["prog"], "cil_from_container");
    assert_eq!(progs[0]["pod"], pod_name(w.dev.index));
    let sentence = format!("dropped by BPF program cil_from_container on {} (pod {}), {}", w.dev.lxc, pod_name(w.dev.index), w.direction);
    assert!(done.stderr.contains(&sentence), "end-of-run table names the program and the pod:\n{}", done.stderr);
    let by_pod = s["by_pod"].as_array().unwrap();
    let src = by_pod.iter().find(|p| p["pod"] == pod_name(w.src.index)).expect("source pod in by_pod");
    assert_eq!(src["as_src"], n);
    // The pcapng names the pods and the program; its interface block names the pod.
    let pcap = integration_tests::pcap::read(done.pcap().unwrap()).unwrap();
    assert_eq!(pcap.packets.len() as u64, n);
    for p in &pcap.packets {
        let c = p.comments.join(" ");
        assert!(c.contains(&format!("tc=\"{} {} cil_from_container id {} SHOT\"", w.attach, w.direction, w.prog_id)), "{c}");
        assert!(c.contains(&format!("src_pod={}", pod_name(w.src.index))) && c.contains(&format!("dst_pod={}", pod_name(w.dst.index))), "{c}");
    }
    assert!(
        pcap.interfaces.iter().any(|i| i.name.as_deref() == Some(w.dev.lxc.as_str()) && i.description.as_deref().is_some_and(|d| d.contains(&format!("pod {}", pod_name(w.dev.index))))),
        "interface block names the pod: {:?}",
        pcap.interfaces
    );
}

/// `cil_from_container` on the client pod's lxc ingress shoots packets to `denied`.
fn ingress_drop(attach: Attach, port: u16) {
    if attach == Attach::Tcx && !require(Feature::Tcx) {
        return;
    }
    let node = node(3);
    let (client, denied) = (node.pod(0), node.pod(1));
    let cache = cni_cache(&node);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, attach, &[denied.ip]);
    opts.bin = Some(fixture_bin());
    let mut fixture = TcFixture::start(&opts).unwrap();
    let prog = fixture.programs()[0].clone();
    let run = tracer()
        .capture()
        .arg("--cni-cache-dir")
        .arg(cache.path())
        .expression(format!("host {} and udp port {}", denied.ip, port + 1))
        .start()
        .unwrap();
    shoot(&mut fixture, client, denied, port, port + 1, 25);
    let done = run.stop_after(25).unwrap().ok().unwrap();
    let attach_name = if attach == Attach::Tcx { "tcx" } else { "cls_bpf" };
    let want = Want { reason: "TC_INGRESS", dev: client, direction: "ingress", attach: attach_name, prog_id: prog.id, prog_tag: &prog.tag, src: client, dst: denied };
    check_tc(&done, 25, &want);
    assert!(done.events.iter().all(|e| function(e["location"].as_str().unwrap()).starts_with("__netif_receive_skb_core")));
    assert!(our_filters(&node, &client.lxc).is_empty() && our_programs(&node, &client.lxc).is_empty(), "observers left behind");
    // The run's table, for the record.
    eprintln!("{}", done.stderr);
    eprintln!("{}", serde_json::to_string(&done.events[0]).unwrap());
}

#[test]
fn cls_bpf_drop_names_program_and_pods() {
    ingress_drop(Attach::ClsBpf, 32101);
}

#[test]
fn tcx_drop_names_program_and_pods() {
    ingress_drop(Attach::Tcx, 32111);
}

/// The same program on the server pod's lxc egress: `TC_EGRESS`, egress.
fn egress_drop(attach: Attach, port: u16) {
    if attach == Attach::Tcx && !require(Feature::Tcx) {
        return;
    }
    let node = node(2);
    let (client, server) = (node.pod(0), node.pod(1));
    let cache = cni_cache(&node);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &server.lxc, attach, &[server.ip]);
    opts.bin = Some(fixture_bin());
    opts.direction = Direction::Egress;
    let mut fixture = TcFixture::start(&opts).unwrap();
    let prog = fixture.programs()[0].clone();
    let run = tracer().capture().arg("--cni-cache-dir").arg(cache.path()).expression(format!("host {} and udp port {}", server.ip, port + 1)).start().unwrap();
    shoot(&mut fixture, client, server, port, port + 1, 9);
    let done = run.stop_after(9).unwrap().ok().unwrap();
    let attach_name = if attach == Attach::Tcx { "tcx" } else { "cls_bpf" };
    let want = Want { reason: "TC_EGRESS", dev: server, direction: "egress", attach: attach_name, prog_id: prog.id, prog_tag: &prog.tag, src: client, dst: server };
    check_tc(&done, 9, &want);
}

#[test]
fn cls_bpf_egress_drop_is_tc_egress() {
    egress_drop(Attach::ClsBpf, 32121);
}

#[test]
fn tcx_egress_drop_is_tc_egress() {
    egress_drop(Attach::Tcx, 32131);
}

/// Two programs on one hook, `cil_to_container` (passes) then `cil_from_container` (shoots):
/// the second is named, per packet, not as one of two candidates.
fn second_of_two(attach: Attach, port: u16) {
    if attach == Attach::Tcx && !require(Feature::Tcx) {
        return;
    }
    let node = node(3);
    let (client, denied, allowed) = (node.pod(0), node.pod(1), node.pod(2));
    let cache = cni_cache(&node);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, attach, &[denied.ip]);
    opts.bin = Some(fixture_bin());
    opts.programs = vec!["cil_to_container".into(), "cil_from_container".into()];
    let mut fixture = TcFixture::start(&opts).unwrap();
    let (first, second) = (fixture.programs()[0].clone(), fixture.programs()[1].clone());
    assert_eq!((first.name.as_str(), second.name.as_str()), ("cil_to_container", "cil_from_container"));
    let listener = allowed.listen_udp(port + 1).unwrap();
    let run = tracer().capture().arg("--cni-cache-dir").arg(cache.path()).expression(format!("host {} and udp port {}", denied.ip, port + 1)).start().unwrap();
    if attach == Attach::ClsBpf {
        // While running, our observers sit in the filter lists, named for leftover cleanup.
        let f = our_filters(&node, &client.lxc);
        assert!(f.len() >= 2 && f.iter().all(|l| l.contains("tracer_tc pid=")), "{f:?}");
    } else {
        assert!(our_programs(&node, &client.lxc).len() >= 2, "{:?}", tcx_programs(&node, &client.lxc));
    }
    // Observers never change a verdict: allowed traffic passes both programs and arrives.
    let (n, m) = (15usize, 13usize);
    assert_eq!(client.send_udp(port, allowed.addr(port + 1), m, b"allowed").unwrap(), m);
    listener.wait_for(m as u64, TIMEOUT).unwrap();
    shoot(&mut fixture, client, denied, port, port + 1, n);
    let stats = fixture.stats().unwrap();
    let done = run.stop_after(n as u64).unwrap().ok().unwrap();
    assert_eq!(listener.stop().unwrap(), m as u64, "the allowed pod got everything");
    assert_eq!(stats.to_passed, (n + m) as u64, "the first program saw and passed every packet");
    assert_eq!((stats.from_shot, stats.from_passed), (n as u64, m as u64));
    let attach_name = if attach == Attach::Tcx { "tcx" } else { "cls_bpf" };
    let want = Want { reason: "TC_INGRESS", dev: client, direction: "ingress", attach: attach_name, prog_id: second.id, prog_tag: &second.tag, src: client, dst: denied };
    check_tc(&done, n as u64, &want);
    eprintln!("{}\n{}", done.stderr, serde_json::to_string(&done.events[0]).unwrap());
    if attach == Attach::ClsBpf {
        // cls_bpf: the tc fixture gives the second program the next priority.
        assert!(done.events.iter().all(|e| e["tc"]["prio"] == opts.priority + 1), "{}", done.events[0]);
    }
    assert!(our_filters(&node, &client.lxc).is_empty() && our_programs(&node, &client.lxc).is_empty(), "observers left behind");
    // The fixture's own programs are untouched.
    if attach == Attach::ClsBpf {
        let f = node.exec("tc", &["filter", "show", "dev", &client.lxc, "ingress"]).unwrap();
        assert!(f.contains("cil_to_container") && f.contains("cil_from_container"), "{f}");
    } else {
        // The kernel keeps 15 characters of a program name.
        assert_eq!(tcx_programs(&node, &client.lxc), ["Ingress: cil_to_containe", "Ingress: cil_from_contai"].map(String::from));
    }
}

#[test]
fn cls_bpf_second_of_two_programs_is_named() {
    second_of_two(Attach::ClsBpf, 32141);
}

#[test]
fn tcx_second_of_two_programs_is_named() {
    second_of_two(Attach::Tcx, 32151);
}

/// `--pod` keeps exactly the selected pod's drops: in its namespace, from its address, and
/// none of another pod's.
#[test]
fn pod_filter_excludes_other_pods_exactly() {
    let node = node(3);
    let (a, b, c) = (node.pod(0), node.pod(1), node.pod(2));
    let cache = cni_cache(&node);
    let port = 32201;
    let run = tracer()
        .capture()
        .arg("--cni-cache-dir")
        .arg(cache.path())
        .arg("--pod")
        .arg(pod_name(a.index))
        .expression(format!("udp port {port}"))
        .start()
        .unwrap();
    // No listener anywhere: every datagram is a NO_SOCKET drop in the receiving pod.
    let to_a = c.send_udp(port + 10, a.addr(port), 7, b"to the selected pod").unwrap();
    let from_a = a.send_udp(port + 11, b.addr(port), 5, b"from the selected pod").unwrap();
    let others = c.send_udp(port + 12, b.addr(port), 11, b"between other pods").unwrap();
    let wanted = (to_a + from_a) as u64;
    wait::until("the pods' NoPorts counters", TIMEOUT, Duration::from_millis(10), || {
        let na = integration_tests::netns::snmp(&a.netns, "Udp", "NoPorts")?;
        let nb = integration_tests::netns::snmp(&b.netns, "Udp", "NoPorts")?;
        Ok((na >= to_a as u64 && nb >= (from_a + others) as u64).then_some(()))
    })
    .unwrap();
    let done = run.stop_after(wanted).unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), wanted, "exactly the selected pod's drops; stderr:\n{}", done.stderr);
    assert_eq!(done.events.len() as u64, wanted);
    let a_name = pod_name(a.index);
    for e in &done.events {
        assert_eq!(e["reason"], "NO_SOCKET");
        assert!(e["src_pod"] == a_name.as_str() || e["dst_pod"] == a_name.as_str(), "{e}");
    }
    let in_a = done.events.iter().filter(|e| e["pod_iface"] == a_name.as_str()).count();
    assert_eq!(in_a, to_a, "drops inside the selected pod's namespace");
    assert!(done.events.iter().all(|e| e["src"] != c.ip.to_string() || e["dst"] == a.ip.to_string()));
    let by_pod = done.summary().unwrap()["by_pod"].as_array().unwrap().clone();
    let sel = by_pod.iter().find(|p| p["pod"] == a_name.as_str()).unwrap();
    assert_eq!(sel["count"], wanted);
    assert_eq!((sel["as_dst"].as_u64(), sel["as_src"].as_u64()), (Some(to_a as u64), Some(from_a as u64)));
}

/// A check that the same traffic without `--pod` is seen in full (so the filter, not the
/// traffic, made the difference above).
#[test]
fn without_pod_filter_every_pods_drops_count() {
    let node = node(3);
    let (a, b, c) = (node.pod(0), node.pod(1), node.pod(2));
    let cache = cni_cache(&node);
    let port = 32211;
    let run = tracer().capture().arg("--cni-cache-dir").arg(cache.path()).expression(format!("udp port {port} and net 10.230.0.0/16")).start().unwrap();
    let n = c.send_udp(port + 10, a.addr(port), 7, b"x").unwrap() + a.send_udp(port + 11, b.addr(port), 5, b"x").unwrap() + c.send_udp(port + 12, b.addr(port), 11, b"x").unwrap();
    wait::until("NoPorts", TIMEOUT, Duration::from_millis(10), || {
        let na = integration_tests::netns::snmp(&a.netns, "Udp", "NoPorts")?;
        let nb = integration_tests::netns::snmp(&b.netns, "Udp", "NoPorts")?;
        Ok((na + nb >= n as u64).then_some(()))
    })
    .unwrap();
    let done = run.stop_after(n as u64).unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), n as u64);
    let b_name = pod_name(b.index);
    assert_eq!(done.events.iter().filter(|e| e["pod_iface"] == b_name.as_str()).count(), 16);
}

fn one_line_error(done: &Finished, needles: &[&str]) {
    assert!(!done.status.success(), "must fail; stderr:\n{}", done.stderr);
    let lines = done.stderr_lines();
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} in {:?}", lines[0]);
    }
    assert!(done.events.is_empty() && done.summary.is_none() && done.pcap.is_none(), "no file written");
    assert!(done.dir.entries().unwrap().is_empty(), "no file written: {:?}", done.dir.entries());
}

#[test]
fn unknown_pod_is_a_clear_error_with_close_matches() {
    let node = node(2);
    let cache = cni_cache(&node);
    let done = tracer().capture().arg("--cni-cache-dir").arg(cache.path()).arg("--pod").arg("default/web-9").arg("--duration").arg("5s").run(TIMEOUT).unwrap();
    one_line_error(&done, &["unknown pod default/web-9", "did you mean", "default/web-0", "default/web-1"]);
    let done = tracer().capture().arg("--cni-cache-dir").arg(cache.path()).arg("--pod").arg("web-0").arg("--duration").arg("5s").run(TIMEOUT).unwrap();
    one_line_error(&done, &["NAMESPACE/NAME"]);
}

#[test]
fn missing_cni_cache_is_a_clear_error() {
    let dir = TempDir::new("pd-nocache").unwrap();
    let missing = dir.join("no-such-dir");
    let done = tracer().capture().arg("--cni-cache-dir").arg(&missing).arg("--duration").arg("5s").run(TIMEOUT).unwrap();
    one_line_error(&done, &["CNI cache directory", "does not exist", "--cni-cache-dir"]);
    let done = tracer().capture().arg("--cni-cache-dir").arg(&missing).arg("--pod").arg("default/web-0").arg("--duration").arg("5s").run(TIMEOUT).unwrap();
    one_line_error(&done, &["does not exist"]);
}

/// `cls_bpf` observers are filters that would outlive a killed tracer: the next run removes
/// them (by name, since their owner is dead), and leaves nothing itself.
#[test]
fn cls_bpf_leftovers_of_a_killed_run_are_cleaned() {
    let node = node(2);
    let (client, denied) = (node.pod(0), node.pod(1));
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, Attach::ClsBpf, &[denied.ip]);
    opts.bin = Some(fixture_bin());
    let fixture = TcFixture::start(&opts).unwrap();
    let qdiscs_before = node.exec("tc", &["qdisc", "show", "dev", &client.lxc]).unwrap();
    let run = tracer().capture().expression(format!("host {}", denied.ip)).start().unwrap();
    let pid = run.pid().unwrap();
    assert!(!our_filters(&node, &client.lxc).is_empty(), "observers attached while running");
    let killed = run.stop_with(libc::SIGKILL).unwrap();
    assert!(!killed.status.success());
    let left = our_filters(&node, &client.lxc);
    assert!(!left.is_empty() && left.iter().all(|l| l.contains(&format!("pid={pid}"))), "SIGKILL leaves our filters: {left:?}");
    // The next run cleans them at start, then removes its own on exit.
    let next = tracer().capture().expression(format!("host {}", denied.ip)).arg("--duration").arg("1s").run(integration_tests::tracer::READY_TIMEOUT).unwrap().ok().unwrap();
    assert!(next.stderr.contains("removed") && next.stderr.contains("left by a killed earlier run"), "{}", next.stderr);
    assert!(our_filters(&node, &client.lxc).is_empty(), "{:?}", our_filters(&node, &client.lxc));
    assert!(our_programs(&node, &client.lxc).is_empty());
    assert_eq!(node.exec("tc", &["qdisc", "show", "dev", &client.lxc]).unwrap(), qdiscs_before, "qdiscs unchanged");
    fixture.stop().unwrap();
}

/// A run that ends normally (SIGINT, SIGTERM, --duration) leaves no filter, link or qdisc.
#[test]
fn observers_leave_nothing_behind() {
    // One hook of each kind (cls_bpf and tcx) is the point here.
    if !require(Feature::Tcx) {
        return;
    }
    let node = node(2);
    let (client, denied) = (node.pod(0), node.pod(1));
    let mut cls = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, Attach::ClsBpf, &[denied.ip]);
    cls.bin = Some(fixture_bin());
    let _cls = TcFixture::start(&cls).unwrap();
    let mut tcx = TcFixtureOptions::from_container(Some(node.netns_path()), &denied.lxc, Attach::Tcx, &[]);
    tcx.bin = Some(fixture_bin());
    tcx.direction = Direction::Egress;
    let _tcx = TcFixture::start(&tcx).unwrap();
    let state = |dev: &str| (node.exec("tc", &["qdisc", "show", "dev", dev]).unwrap(), node.exec("tc", &["filter", "show", "dev", dev, "ingress"]).unwrap(), tcx_programs(&node, dev));
    let before = (state(&client.lxc), state(&denied.lxc));
    for sig in [Some(libc::SIGINT), Some(libc::SIGTERM), None] {
        let cap = tracer().capture().expression(format!("host {}", denied.ip));
        let done = match sig {
            Some(s) => {
                let run = cap.start().unwrap();
                assert!(!our_filters(&node, &client.lxc).is_empty() && !our_programs(&node, &denied.lxc).is_empty(), "observers attached");
                run.stop_with(s).unwrap()
            }
            None => cap.arg("--duration").arg("1s").run(integration_tests::tracer::READY_TIMEOUT).unwrap(),
        };
        assert!(done.status.success(), "{}", done.stderr);
        assert_eq!((state(&client.lxc), state(&denied.lxc)), before, "after {sig:?}");
    }
}

#[test]
fn cache_files_are_libcni_format() {
    // The test's own writer must produce what libcni reads: kind, containerId, ifName,
    // networkName, cniArgs pairs, result with interfaces and ips.
    let node = node(1);
    let cache = cni_cache(&node);
    let files: Vec<_> = std::fs::read_dir(cache.join("results")).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().to_string_lossy().into_owned();
    assert!(name.starts_with("cilium-") && name.ends_with("-eth0"), "{name}");
    let v: Value = serde_json::from_slice(&std::fs::read(files[0].path()).unwrap()).unwrap();
    assert_eq!(v["kind"], "cniCacheV1");
    assert!(Path::new(v["netns"].as_str().unwrap()).exists());
}

/// Without observers (`--no-tc`) a drop still names its program when it is alone on its hook,
/// and says it cannot tell when two are: the per-packet result above is the observers' doing.
#[test]
fn without_observers_only_a_lone_program_is_named() {
    let node = node(3);
    let (lone, denied, pair) = (node.pod(0), node.pod(1), node.pod(2));
    let cache = cni_cache(&node);
    let mut one = TcFixtureOptions::from_container(Some(node.netns_path()), &lone.lxc, Attach::ClsBpf, &[denied.ip]);
    one.bin = Some(fixture_bin());
    let mut one = TcFixture::start(&one).unwrap();
    let mut two = TcFixtureOptions::from_container(Some(node.netns_path()), &pair.lxc, Attach::tcx_or_cls_bpf(), &[denied.ip]);
    two.bin = Some(fixture_bin());
    two.programs = vec!["cil_to_container".into(), "cil_from_container".into()];
    let mut two = TcFixture::start(&two).unwrap();
    let port = 32301;
    let run = tracer().capture().arg("--no-tc").arg("--cni-cache-dir").arg(cache.path()).expression(format!("host {} and udp port {}", denied.ip, port + 1)).start().unwrap();
    assert!(our_filters(&node, &lone.lxc).is_empty() && our_programs(&node, &pair.lxc).is_empty(), "--no-tc places nothing");
    shoot(&mut one, lone, denied, port, port + 1, 4);
    shoot(&mut two, pair, denied, port, port + 1, 6);
    let done = run.stop_after(10).unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), 10);
    let lone_id = one.programs()[0].id;
    for e in &done.events {
        let tc = &e["tc"];
        if e["ifname"] == lone.lxc.as_str() {
            assert_eq!((tc["prog"].as_str(), tc["prog_id"].as_u64(), tc["attribution"].as_str()), (Some("cil_from_container"), Some(u64::from(lone_id)), Some("only_program")), "{e}");
        } else {
            assert_eq!(e["ifname"], pair.lxc.as_str());
            assert!(tc["prog"].is_null(), "{e}");
            assert_eq!(tc["attribution"], "ambiguous");
            let c = tc["candidates"].to_string();
            assert!(c.contains("cil_to_container") && c.contains("cil_from_container"), "{c}");
        }
    }
}

/// The program is reloaded during the capture (the fixture restarts: new program id; with
/// `cls_bpf` its clsact qdisc, and our observers in it, go away and come back): drops after the
/// reload name the new program, never the old one.
fn reloaded_during_capture(attach: Attach, port: u16) {
    if attach == Attach::Tcx && !require(Feature::Tcx) {
        return;
    }
    let node = node(2);
    let (client, denied) = (node.pod(0), node.pod(1));
    let cache = cni_cache(&node);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, attach, &[denied.ip]);
    opts.bin = Some(fixture_bin());
    let mut first = TcFixture::start(&opts).unwrap();
    let old = first.programs()[0].clone();
    let run = tracer().capture().arg("--cni-cache-dir").arg(cache.path()).expression(format!("host {} and udp port {}", denied.ip, port + 1)).start().unwrap();
    shoot(&mut first, client, denied, port, port + 1, 5);
    // Attributed while the first program is still loaded.
    run.wait_for_drops(5).unwrap();
    first.stop().unwrap();
    // The tracer trusts "this program is still loaded" for 100 ms (wall clock, whatever the
    // machine's speed); a reload is rarer than that.
    std::thread::sleep(Duration::from_millis(300));
    let mut second = TcFixture::start(&opts).unwrap();
    let new = second.programs()[0].clone();
    assert_ne!(old.id, new.id);
    shoot(&mut second, client, denied, port, port + 1, 7);
    let done = run.stop_after(12).unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), 12, "{}", done.stderr);
    let ids: Vec<u64> = done.events.iter().map(|e| e["tc"]["prog_id"].as_u64().unwrap_or(0)).collect();
    assert_eq!(ids, [vec![u64::from(old.id); 5], vec![u64::from(new.id); 7]].concat(), "{:?}", done.events.last());
    assert!(done.events[..5].iter().all(|e| e["tc"]["attribution"] == "observer"));
    // After the reload the observers no longer frame the program: named as the hook's program.
    assert!(done.events[5..].iter().all(|e| e["tc"]["attribution"] == "only_program" && e["tc"]["prog"] == "cil_from_container"), "{}", done.events[5]);
    assert!(our_filters(&node, &client.lxc).is_empty() && our_programs(&node, &client.lxc).is_empty());
}

#[test]
fn cls_bpf_program_reloaded_during_capture() {
    reloaded_during_capture(Attach::ClsBpf, 32401);
}

#[test]
fn tcx_program_reloaded_during_capture() {
    reloaded_during_capture(Attach::Tcx, 32411);
}

/// The host-side veth is found as the peer of the pod's interface when the CNI result does
/// not list it: drops on it still name the pod, and `--pod` still selects them.
#[test]
fn lxc_found_as_veth_peer_without_host_side_entry() {
    let node = node(2);
    let (client, denied) = (node.pod(0), node.pod(1));
    let cache = cni_cache_with(&node, false);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, Attach::tcx_or_cls_bpf(), &[denied.ip]);
    opts.bin = Some(fixture_bin());
    let mut fixture = TcFixture::start(&opts).unwrap();
    let port = 32501;
    // Select the client pod by name, and drop only by its lxc: the expression names no IP of
    // it, so the kernel must have the lxc (from the veth peer) or its netns/IP in the pod maps.
    let run = tracer()
        .capture()
        .arg("--cni-cache-dir")
        .arg(cache.path())
        .arg("--pod")
        .arg(pod_name(client.index))
        .expression(format!("udp port {}", port + 1))
        .start()
        .unwrap();
    shoot(&mut fixture, client, denied, port, port + 1, 6);
    let done = run.stop_after(6).unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), 6, "{}", done.stderr);
    for e in &done.events {
        assert_eq!(e["ifname"], client.lxc.as_str());
        assert_eq!(e["pod_iface"], pod_name(client.index), "{e}");
    }
    let iface = &done.summary().unwrap()["by_iface"][0];
    assert_eq!((iface["ifname"].as_str(), iface["pod"].as_str()), (Some(client.lxc.as_str()), Some(pod_name(client.index).as_str())));
}
