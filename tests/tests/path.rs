//! `--path` (issue 5) on real traffic: a forwarded pod-to-pod packet's hooks in order across
//! both namespaces, a packet followed from where the node's NAT makes it match or from the
//! device a device filter names, a TCP connection without payload read back from the `--all` pcapng, and a
//! drop in the middle of a path. Needs root; the back end that ran is asserted against what the
//! kernel accepts.
use std::time::Duration;

use integration_tests::{
    Attach, Direction, Feature, Finished, Node, RunningCapture, TcFixture, TcFixtureOptions, Tracer, netns, pcap, unchecked, wait,
};
use serde_json::Value;

/// Bound on waiting for deliveries: only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_mins(1);

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Stops once the tracer has counted `drops` and read every drop it counted. The hops of a
/// packet the test saw delivered (or dropped) are in the ring by then, and the tracer reads
/// the ring to its end after detaching.
fn stop(run: RunningCapture, drops: u64) -> Finished {
    run.stop_after(drops).unwrap().ok().unwrap()
}

fn packets(done: &Finished) -> Vec<&Value> {
    done.events.iter().filter(|e| e["type"] == "packet").collect()
}

fn hooks(p: &Value) -> Vec<(String, String, u64)> {
    p["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["hook"].as_str().unwrap().to_string(), h["ifname"].as_str().unwrap().to_string(), h["netns"].as_u64().unwrap()))
        .collect()
}

/// Index of the first hop satisfying `f`, panicking with the whole path otherwise.
fn find(path: &[(String, String, u64)], what: &str, f: impl Fn(&(String, String, u64)) -> bool) -> usize {
    path.iter().position(f).unwrap_or_else(|| panic!("no {what} in {path:#?}"))
}

/// The function back end `auto` must pick on this kernel, from what `tracer doctor` probes
/// (it loads and attaches a program of each type): fentry, else kprobe, else tracepoints only.
fn expected_backend() -> &'static str {
    let bin = std::env::var("TRACER_BIN").unwrap_or_else(|_| "target/release/tracer".into());
    let out = std::process::Command::new(bin).args(["doctor", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let yes = |hook: &str| report["kernel"]["hooks"].as_array().unwrap().iter().any(|h| h["hook"] == hook && h["support"] == "yes");
    if yes("fentry") {
        "fentry"
    } else if yes("kprobe") {
        "kprobe"
    } else {
        "tracepoint"
    }
}

/// `--backend kprobe` where the kernel has kprobes (the 6.1 and 6.12 guests; `auto` prefers
/// fentry there, so only this test runs the kprobe programs): the summary names it and the
/// forwarding function is a hop between the two lxcs.
#[test]
fn kprobe_backend_when_asked() {
    if !integration_tests::require(Feature::Kprobe) {
        return;
    }
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let listener = b.listen_udp(33201).unwrap();
    let run = tracer().capture().arg("--path").arg("--backend").arg("kprobe").expression(format!("udp port 33201 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(33202, b.addr(33201), 1, b"kprobe").unwrap(), 1);
    listener.wait_for(1, TIMEOUT).unwrap();
    let done = stop(run, 0);
    let s = done.summary().unwrap();
    assert_eq!(s["path"]["backend"], "kprobe", "{}", s["path"]);
    assert!(s["path"]["functions"].as_u64().unwrap() > 0, "{}", s["path"]);
    let ps = packets(&done);
    assert_eq!(ps.len(), 1, "{:#?}", done.events);
    let path = hooks(ps[0]);
    let node_ns = node.netns_inode().unwrap();
    let in_lxc = find(&path, "receive on a's lxc", |h| h.0 == "netif_receive_skb" && h.1 == a.lxc && h.2 == node_ns);
    let f = find(&path, "ip_forward", |h| h.0 == "ip_forward" && h.2 == node_ns);
    let out_lxc = find(&path, "send on b's lxc", |h| h.0 == "net_dev_start_xmit" && h.1 == b.lxc && h.2 == node_ns);
    assert!(in_lxc < f && f < out_lxc, "ip_forward between the lxcs: {path:#?}");
}

fn fixture_bin() -> std::path::PathBuf {
    integration_tests::fixture_bin(env!("CARGO_BIN_EXE_tc-fixture"))
}

/// Cilium's programs on the pods' lxc hooks the packet crosses (`cil_from_container` on a's
/// ingress, denying nothing; `cil_to_container` on b's egress), tcx where the kernel has it:
/// tc hops are reported where programs run (a hook without one gets no observer).
fn cilium_programs(node: &Node, a: &integration_tests::Pod, b: &integration_tests::Pod) -> (TcFixture, TcFixture) {
    let attach = Attach::tcx_or_cls_bpf();
    let mut from = TcFixtureOptions::from_container(Some(node.netns_path()), &a.lxc, attach, &[]);
    from.bin = Some(fixture_bin());
    let mut to = from.clone();
    to.iface.clone_from(&b.lxc);
    to.direction = Direction::Egress;
    to.programs = vec!["cil_to_container".into()];
    (TcFixture::start(&from).unwrap(), TcFixture::start(&to).unwrap())
}

#[test]
#[expect(clippy::many_single_char_names, reason = "pods a and b, packet p, hop h: the names the assertions read with")]
fn forwarded_pod_to_pod_packet_hook_by_hook() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    // A FORWARD rule that accepts: the forward hook then has a table (and an observer).
    node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "33001", "-j", "ACCEPT"]).unwrap();
    let programs = cilium_programs(&node, &a, &b);
    let listener = b.listen_udp(33001).unwrap();
    let run = tracer().capture().arg("--path").expression(format!("udp port 33001 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(33100, b.addr(33001), 1, b"hello path").unwrap(), 1);
    listener.wait_for(1, TIMEOUT).unwrap();
    let done = stop(run, 0);
    programs.0.stop().unwrap();
    programs.1.stop().unwrap();
    let node_ns = node.netns_inode().unwrap();
    let (a_ns, b_ns) = (a.netns_inode().unwrap(), b.netns_inode().unwrap());
    let ps = packets(&done);
    assert_eq!(ps.len(), 1, "one packet, one story: {:#?}", done.events);
    let p = ps[0];
    let path = hooks(p);
    // "Delivered" is known from sock:sk_data_ready; without it the path still ends in pod b.
    if Feature::SkDataReady.probe().is_ok() {
        assert_eq!(p["fate"], format!("delivered to socket (netns {b_ns})"), "{p}");
    } else {
        assert_eq!(path.last().map(|h| h.2), Some(b_ns), "the path ends in pod b: {p}");
        unchecked("fate \"delivered to socket\"", Feature::SkDataReady);
    }
    assert_eq!(p["proto"], "udp");
    assert_eq!(p["payload_len"], 10);
    // Leaves pod a, enters the node on a's lxc, is forwarded, leaves on b's lxc, enters pod b.
    let out_a = find(&path, "send from pod a", |h| h.0 == "net_dev_start_xmit" && h.1 == "eth0" && h.2 == a_ns);
    let in_lxc = find(&path, "receive on a's lxc", |h| h.0 == "netif_receive_skb" && h.1 == a.lxc && h.2 == node_ns);
    // The netfilter hop comes from BPF netfilter observers; without them the function back
    // ends still show ip_forward (checked below).
    let fwd = if Feature::NetfilterLink.probe().is_ok() {
        Some(find(&path, "the forward hook", |h| h.0.starts_with("netfilter ip forward") && h.2 == node_ns))
    } else {
        unchecked("the netfilter forward hop", Feature::NetfilterLink);
        None
    };
    let out_lxc = find(&path, "send on b's lxc", |h| h.0 == "net_dev_start_xmit" && h.1 == b.lxc && h.2 == node_ns);
    let in_b = find(&path, "receive in pod b", |h| h.0 == "netif_receive_skb" && h.1 == "eth0" && h.2 == b_ns);
    assert!(out_a < in_lxc && in_lxc < out_lxc && out_lxc < in_b, "order: {path:#?}");
    if let Some(fwd) = fwd {
        assert!(in_lxc < fwd && fwd < out_lxc, "order: {path:#?}");
    }
    // The tc observers around the programs (before and after each).
    let tc_in = find(&path, "tc ingress on a's lxc", |h| h.0 == "tc ingress" && h.1 == a.lxc);
    let tc_out = find(&path, "tc egress on b's lxc", |h| h.0 == "tc egress" && h.1 == b.lxc);
    assert!(in_lxc < tc_in && tc_in < out_lxc && tc_out <= out_lxc + 1, "tc order: {path:#?}");
    if let Some(fwd) = fwd {
        assert!(tc_in < fwd && fwd < tc_out, "tc order: {path:#?}");
    }
    // No other hook has programs, so none has tc hops.
    assert!(path.iter().all(|h| !h.0.starts_with("tc ") || h.1 == a.lxc || h.1 == b.lxc), "tc hops only where programs run: {path:#?}");
    // Offsets grow hop by hop.
    let t: Vec<u64> = p["path"].as_array().unwrap().iter().map(|h| h["t_ns"].as_u64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]) && t[0] == 0, "{t:?}");
    // Every hop was also a "path" event with the same packet id.
    let id = p["packet_id"].as_u64().unwrap();
    let hop_events = done.events.iter().filter(|e| e["type"] == "path" && e["packet_id"] == id).count();
    assert_eq!(hop_events, path.len());
    let s = done.summary().unwrap();
    let backend = expected_backend();
    assert_eq!(s["path"]["backend"], backend, "the back end auto picks here: {}", s["path"]);
    if backend != "tracepoint" {
        // Function hops add the depth: the forwarding function between the two lxcs.
        let f = find(&path, "ip_forward", |h| h.0 == "ip_forward" && h.2 == node_ns);
        assert!(in_lxc < f && f < out_lxc, "ip_forward between the lxcs: {path:#?}");
        assert!(s["path"]["functions"].as_u64().unwrap() > 0);
    }
    assert_eq!(s["path"]["packets"], 1);
    assert_eq!(s["path"]["lost_events"], 0);
    // Only the bytes are filtered: a veth peer's receive takes its driver hook's verdict,
    // unless an XDP program (which would run in between) is attached somewhere.
    assert_eq!(s["path"]["receive_reuse"], !xdp_on_machine(), "{}", s["path"]);
    assert_eq!(s["drops"], 0);
    eprintln!("path: {p}");
}

/// A packet the node rewrites (DNAT to another port) is followed from the first hook where it
/// matches, b's lxc, and on into pod b; where its bytes did not match yet (pod a's eth0, a's
/// lxc, whose receive takes the verdict of pod a's send) it has no hops.
#[test]
fn rewritten_packet_is_followed_from_where_it_first_matches() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let to = format!("{}:33021", b.ip);
    node.iptables("nat", "PREROUTING", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "33020", "-j", "DNAT", "--to-destination", &to]).unwrap();
    let listener = b.listen_udp(33021).unwrap();
    let run = tracer().capture().arg("--path").expression(format!("udp dst port 33021 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(33120, b.addr(33020), 1, b"rewritten").unwrap(), 1);
    listener.wait_for(1, TIMEOUT).unwrap();
    let done = stop(run, 0);
    let (node_ns, a_ns, b_ns) = (node.netns_inode().unwrap(), a.netns_inode().unwrap(), b.netns_inode().unwrap());
    let ps = packets(&done);
    assert_eq!(ps.len(), 1, "one packet, one story: {:#?}", done.events);
    let path = hooks(ps[0]);
    let first = &path[0];
    assert_eq!((first.0.as_str(), first.1.as_str(), first.2), ("net_dev_start_xmit", b.lxc.as_str(), node_ns), "{path:#?}");
    find(&path, "receive in pod b", |h| h.0 == "netif_receive_skb" && h.1 == "eth0" && h.2 == b_ns);
    assert!(path.iter().all(|h| h.2 != a_ns && h.1 != a.lxc), "no hop before the rewrite: {path:#?}");
    assert_eq!(ps[0]["dport"], 33021, "{}", ps[0]);
}

/// With a device filter (`--iface`) the path starts where the device first matches, a's lxc,
/// whose receive applies the filters itself (a veth's verdict is not its peer's), and the
/// summary says no receive took its driver hook's verdict.
#[test]
fn device_filter_starts_the_path_on_the_matching_device() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let listener = b.listen_udp(33031).unwrap();
    let run = tracer().capture().arg("--path").arg("--iface").arg("lxc*").expression(format!("udp port 33031 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(33131, b.addr(33031), 1, b"by device").unwrap(), 1);
    listener.wait_for(1, TIMEOUT).unwrap();
    let done = stop(run, 0);
    let ps = packets(&done);
    assert_eq!(ps.len(), 1, "one packet, one story: {:#?}", done.events);
    let path = hooks(ps[0]);
    assert_eq!((path[0].0.as_str(), path[0].1.as_str()), ("netif_receive_skb", a.lxc.as_str()), "{path:#?}");
    assert_eq!(done.summary().unwrap()["path"]["receive_reuse"], false);
}

/// Whether an interface of the machine's namespaces (the host's and the named ones) runs an
/// XDP program, as `ip -o link` prints it (`xdp`, `xdpgeneric`, …, before the qdisc).
fn xdp_on_machine() -> bool {
    let named = std::fs::read_dir("/var/run/netns").into_iter().flatten().flatten().map(|e| vec!["-n".to_string(), e.file_name().to_string_lossy().into_owned()]);
    std::iter::once(Vec::new()).chain(named).any(|ns| {
        let out = std::process::Command::new("ip").args(&ns).args(["-o", "link", "show"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| ["xdp", "xdpgeneric", "xdpdrv", "xdpoffload", "xdpmulti"].contains(&w))
    })
}

#[test]
fn tcp_connection_without_payload_in_the_all_pcapng() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let listener = b.listen_tcp(33011).unwrap();
    let noise = || netns::tcp_noise(&[&a.netns, &b.netns]).unwrap();
    let noise_before = noise();
    let run = tracer().capture().arg("--path").arg("--all").expression(format!("tcp port 33011 and host {}", b.ip)).start().unwrap();
    // Connect, send nothing, close; the listener closes its side too.
    a.send_tcp(b.addr(33011), &[], TIMEOUT).unwrap();
    wait::until("the connection", TIMEOUT, Duration::from_millis(10), || Ok((listener.connections() == 1).then_some(()))).unwrap();
    let done = stop(run, 0);
    let ps = packets(&done);
    let flags: Vec<&str> = ps.iter().map(|p| p["tcp_flags"].as_str().unwrap()).collect();
    for want in ["S", "S.", "F."] {
        assert!(flags.contains(&want), "{want} in {flags:?}");
    }
    assert!(flags.iter().filter(|f| **f == ".").count() >= 1, "a bare ACK in {flags:?}");
    assert!(ps.iter().all(|p| p["payload_len"] == 0), "no payload anywhere: {ps:#?}");
    // On a slow machine (an emulated guest) a side may retransmit a segment the other already
    // has (the copy, a reply to it, a reset are dropped), process ACKs out of order (PAWS) or
    // get an ACK after it closed (reset): real drops, allowed only on this connection and as
    // far as the kernels' counters say (`netns::tcp_noise`).
    let n = noise().since(noise_before);
    let drops: Vec<&Value> = done.events.iter().filter(|e| e["type"] == "drop").collect();
    assert!(drops.iter().all(|e| e["proto"] == "tcp" && (e["sport"] == 33011 || e["dport"] == 33011)), "no drops but on the connection: {drops:?}");
    assert_eq!(done.drops().unwrap(), drops.len() as u64);
    let paws_drops = drops.iter().filter(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("TCP_RFC7323_PAWS"))).count() as u64;
    assert!(paws_drops <= n.paws, "{paws_drops} PAWS drops but the kernels rejected {}: {drops:?}", n.paws);
    assert!(drops.len() as u64 - paws_drops <= n.explains(), "{} drops but {} retransmitted segments and {} resets: {drops:?}", drops.len(), n.retrans, n.resets);
    // The pcapng holds each packet once, with its path in the comment.
    let file = pcap::read(done.pcap().unwrap()).unwrap();
    assert_eq!(file.packets.len(), ps.len(), "one pcapng packet per followed packet");
    for (pkt, p) in file.packets.iter().zip(&ps) {
        let c = pkt.comments.join(" ");
        assert!(c.starts_with(&format!("packet {} path: ", p["packet_id"])), "{c}");
        assert!(c.contains("; fate: "), "{c}");
    }
    let shown = pcap::tshark_fields(done.pcap().unwrap(), &["tcp.flags.str", "tcp.len"]).unwrap();
    assert_eq!(shown.len(), ps.len(), "tshark reads them all: {shown:?}");
    assert!(shown.iter().all(|f| f[1] == "0"), "tcp.len 0 everywhere: {shown:?}");
    let syn = shown.iter().filter(|f| f[0].contains('S') && !f[0].contains('A')).count();
    assert!(syn >= 1 && syn as u64 <= 1 + n.retrans, "one SYN (plus retransmissions: {}): {shown:?}", n.retrans);
}

#[test]
fn path_ends_at_a_drop_mid_way() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", "33021", "-j", "DROP"]).unwrap();
    let run = tracer().capture().arg("--path").expression(format!("udp port 33021 and host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(33120, b.addr(33021), 2, b"dies midway").unwrap(), 2);
    let done = stop(run, 2);
    let node_ns = node.netns_inode().unwrap();
    assert_eq!(done.drops().unwrap(), 2);
    let ps = packets(&done);
    assert_eq!(ps.len(), 2);
    // The forward hop and the rule's verdict come from BPF netfilter observers.
    let observers = Feature::NetfilterLink.probe().is_ok();
    if !observers {
        unchecked("the netfilter forward hop ending the path, and the drop's netfilter verdict", Feature::NetfilterLink);
    }
    for p in ps {
        let fate = p["fate"].as_str().unwrap();
        assert!(fate.starts_with("dropped: NETFILTER_DROP at "), "{fate}");
        let path = hooks(p);
        let last = path.last().unwrap();
        if observers {
            assert!(last.0.starts_with("netfilter ip forward") && last.2 == node_ns, "path ends at the forward hook: {path:#?}");
        } else {
            assert_eq!(last.2, node_ns, "path ends in the node namespace: {path:#?}");
        }
        assert!(!path.iter().any(|h| h.1 == b.lxc), "never reached b's lxc: {path:#?}");
        // The drop event names the same packet.
        let id = &p["packet_id"];
        assert!(done.events.iter().any(|e| e["type"] == "drop"
            && &e["packet_id"] == id
            && e["reason"] == "NETFILTER_DROP"
            && (!observers || e["netfilter"]["verdict"] == "DROP")));
    }
}
