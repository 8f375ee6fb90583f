//! Planted faults on a netns node, each with the real drop it causes, checked against the real
//! `tracer` binary (`TRACER_BIN` or `target/release/tracer`): reason, location, interface,
//! namespace, 5-tuple, and exact counts against what was sent and what the kernel counted.
//! Needs root. Every expression names this test's own addresses and ports, so drops elsewhere
//! on the machine never change a count.
use std::time::Duration;

use integration_tests::{Attach, Feature, Finished, Node, TcFixture, TcFixtureOptions, Tracer, expect::{Expect, check}, netns, pcap, require, wait};

/// Bound on waiting for the kernel's own counters: only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_mins(1);

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn fixture_bin() -> std::path::PathBuf {
    integration_tests::fixture_bin(env!("CARGO_BIN_EXE_tc-fixture"))
}

/// Stops the capture once it has counted `n` drops and read everything it counted.
fn stop(run: integration_tests::RunningCapture, n: u64) -> Finished {
    run.stop_after(n).unwrap().ok().unwrap()
}

#[test]
fn iptables_drop_in_forward_is_netfilter_drop() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let (sport, dport, n) = (31001, 31002, 20);
    let rule = node
        .iptables("filter", "FORWARD", &["-s", &a.ip.to_string(), "-d", &b.ip.to_string(), "-p", "udp", "--dport", &dport.to_string(), "-j", "DROP"])
        .unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {dport}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(sport, b.addr(dport), n, b"dropped in FORWARD").unwrap(), n);
    let counted = wait::until("the rule's counter", TIMEOUT, Duration::from_millis(10), || {
        let c = node.iptables_packets(&rule)?;
        Ok((c >= n as u64).then_some(c))
    })
    .unwrap();
    let done = stop(run, n as u64);
    assert_eq!(counted, n as u64, "iptables counted what was sent");
    assert_eq!(node.iptables_packets(&rule).unwrap(), n as u64);
    check(&done, n as u64, &Expect::udp_forward_drop(&a, &b, node.netns_inode().unwrap(), sport, dport));
    eprintln!("FORWARD DROP: {}", done.events[0]);
}

#[test]
fn closed_tcp_port_is_no_socket_at_tcp_v4_rcv() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (dport, n) = (31102, 7usize);
    let rsts_before = netns::snmp(&b.netns, "Tcp", "OutRsts").unwrap();
    let run = tracer().capture().expression(format!("host {} and tcp port {dport}", b.ip)).start().unwrap();
    let r = a.tcp_connect(b.addr(dport), n, Duration::from_secs(30)).unwrap();
    let n = n as u64;
    let done = stop(run, n);
    assert_eq!((r.refused, r.connected, r.timed_out, r.other), (n, 0, 0, 0), "every attempt refused by a RST");
    assert_eq!(netns::snmp(&b.netns, "Tcp", "OutRsts").unwrap() - rsts_before, n, "one RST per SYN");
    check(&done, n, &Expect {
        reason: "NO_SOCKET",
        functions: &["tcp_v4_rcv"],
        ifname: "eth0",
        ifindex: b.eth_ifindex,
        netns: b.netns_inode().unwrap(),
        proto: "tcp",
        src: a.ip.into(),
        dst: b.ip.into(),
        sport: None,
        dport,
    });
    // Only the SYNs die (the RSTs reach the client); each from its own source port.
    assert!(done.events.iter().all(|e| e["tcp_flags"] == "S"), "only SYNs");
    assert_eq!(done.summary().unwrap()["by_flow"].as_array().unwrap().len() as u64, n);
    eprintln!("closed TCP port: {}", done.events[0]);
}

#[test]
fn udp_without_listener_is_no_socket_at_udp4_lib_rcv() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (sport, dport, n) = (31201, 31202, 25usize);
    let noports_before = netns::snmp(&b.netns, "Udp", "NoPorts").unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {dport}", b.ip)).start().unwrap();
    a.send_udp(sport, b.addr(dport), n, b"nobody listens").unwrap();
    wait::until("Udp NoPorts", TIMEOUT, Duration::from_millis(10), || {
        Ok((netns::snmp(&b.netns, "Udp", "NoPorts")? - noports_before >= n as u64).then_some(()))
    })
    .unwrap();
    let done = stop(run, n as u64);
    assert_eq!(netns::snmp(&b.netns, "Udp", "NoPorts").unwrap() - noports_before, n as u64);
    check(&done, n as u64, &Expect {
        reason: "NO_SOCKET",
        functions: &["__udp4_lib_rcv"],
        ifname: "eth0",
        ifindex: b.eth_ifindex,
        netns: b.netns_inode().unwrap(),
        proto: "udp",
        src: a.ip.into(),
        dst: b.ip.into(),
        sport: Some(sport),
        dport,
    });
    eprintln!("UDP no listener: {}", done.events[0]);
}

/// A socket nobody reads: once its receive buffer is full, every datagram is dropped; the
/// tracer's count must equal the kernel's `Udp RcvbufErrors`, and queued + dropped = sent.
#[test]
fn full_receive_buffer_is_socket_rcvbuff() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (sport, dport, n) = (32201, 32202, 1000usize);
    let sock = b.udp_socket(dport).unwrap();
    let before = netns::snmp(&b.netns, "Udp", "RcvbufErrors").unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {dport}", b.ip)).start().unwrap();
    a.send_udp(sport, b.addr(dport), n, &[1u8; 512]).unwrap();
    // Every datagram ends queued or dropped: read the queue until both add up to what was sent
    // (datagrams still on their way then find room, which keeps the sum exact).
    sock.set_nonblocking(true).unwrap();
    let mut queued = 0u64;
    let mut buf = [0u8; 1024];
    let overflows = wait::until("queued + RcvbufErrors to reach what was sent", TIMEOUT, Duration::from_millis(10), || {
        while sock.recv(&mut buf).is_ok() {
            queued += 1;
        }
        let overflows = netns::snmp(&b.netns, "Udp", "RcvbufErrors")? - before;
        Ok((queued + overflows >= n as u64).then_some(overflows))
    })
    .unwrap();
    let done = stop(run, overflows);
    assert_eq!(netns::snmp(&b.netns, "Udp", "RcvbufErrors").unwrap() - before, overflows, "no drop after the sum was reached");
    assert!(overflows > 0, "the buffer overflowed");
    assert_eq!(queued + overflows, n as u64, "queued + dropped = sent");
    check(&done, overflows, &Expect {
        reason: "SOCKET_RCVBUFF",
        functions: &["udp_queue_rcv_one_skb", "__udp_queue_rcv_skb", "udp_queue_rcv_skb"],
        ifname: "eth0",
        ifindex: b.eth_ifindex,
        netns: b.netns_inode().unwrap(),
        proto: "udp",
        src: a.ip.into(),
        dst: b.ip.into(),
        sport: Some(sport),
        dport,
    });
    eprintln!("full receive buffer ({overflows} of {n}): {}", done.events[0]);
}

/// `cil_from_container` on pod a's lxc ingress shoots packets to b (`POLICY_DENY`) and lets the
/// ones to c through.
fn tc_shot_on_lxc_ingress(attach: Attach, base_port: u16) {
    if attach == Attach::Tcx && !require(Feature::Tcx) {
        return;
    }
    let node = Node::new(3).unwrap();
    let (client, denied, allowed) = (node.pod(0), node.pod(1), node.pod(2));
    let (sport, dport, n, m) = (base_port, base_port + 1, 30usize, 12usize);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, attach, &[denied.ip]);
    opts.bin = Some(fixture_bin());
    let mut fixture = TcFixture::start(&opts).unwrap();
    assert_eq!(fixture.programs()[0].name, "cil_from_container");
    let listener = allowed.listen_udp(dport).unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {dport}", denied.ip)).start().unwrap();
    client.send_udp(sport, denied.addr(dport), n, b"denied by policy").unwrap();
    client.send_udp(sport, allowed.addr(dport), m, b"allowed").unwrap();
    listener.wait_for(m as u64, TIMEOUT).unwrap();
    wait::until("the program's shot counter", TIMEOUT, Duration::from_millis(10), || {
        let s = fixture.stats()?;
        Ok((s.from_shot >= n as u64).then_some(()))
    })
    .unwrap();
    let done = stop(run, n as u64);
    let stats = fixture.stats().unwrap();
    assert_eq!(stats.from_shot, n as u64, "the program shot what was sent to the denied pod");
    assert_eq!(stats.from_passed, m as u64, "and passed the rest (static neighbours: no ARP)");
    assert_eq!(listener.stop().unwrap(), m as u64, "the allowed pod got everything");
    fixture.stop().unwrap();
    check(&done, n as u64, &Expect {
        reason: "TC_INGRESS",
        // tc ingress (tcx and cls_bpf alike) is inlined into the receive path: the kernel
        // reports __netif_receive_skb_core (6.18: its .constprop.0 clone).
        functions: &["__netif_receive_skb_core"],
        ifname: &client.lxc,
        ifindex: client.lxc_ifindex,
        netns: node.netns_inode().unwrap(),
        proto: "udp",
        src: client.ip.into(),
        dst: denied.ip.into(),
        sport: Some(sport),
        dport,
    });
    eprintln!("tc {attach:?} shot: {}", done.events[0]);
}

#[test]
fn tc_shot_on_lxc_ingress_tcx_is_tc_ingress() {
    tc_shot_on_lxc_ingress(Attach::Tcx, 31301);
}

#[test]
fn tc_shot_on_lxc_ingress_cls_bpf_is_tc_ingress() {
    tc_shot_on_lxc_ingress(Attach::ClsBpf, 31311);
}

/// The same program on the destination pod's lxc egress (towards the pod): `TC_EGRESS`.
fn tc_shot_on_lxc_egress(attach: Attach, base_port: u16) {
    if attach == Attach::Tcx && !require(Feature::Tcx) {
        return;
    }
    let node = Node::new(2).unwrap();
    let (client, server) = (node.pod(0), node.pod(1));
    let (sport, dport, n) = (base_port, base_port + 1, 11usize);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &server.lxc, attach, &[server.ip]);
    opts.bin = Some(fixture_bin());
    opts.direction = integration_tests::Direction::Egress;
    let mut fixture = TcFixture::start(&opts).unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {dport}", server.ip)).start().unwrap();
    client.send_udp(sport, server.addr(dport), n, b"shot on the way out").unwrap();
    wait::until("the program's shot counter", TIMEOUT, Duration::from_millis(10), || Ok((fixture.stats()?.from_shot >= n as u64).then_some(())))
        .unwrap();
    let done = stop(run, n as u64);
    assert_eq!(fixture.stats().unwrap().from_shot, n as u64);
    fixture.stop().unwrap();
    check(&done, n as u64, &Expect {
        reason: "TC_EGRESS",
        functions: &["__dev_queue_xmit", "sch_handle_egress", "tcx_run"],
        ifname: &server.lxc,
        ifindex: server.lxc_ifindex,
        netns: node.netns_inode().unwrap(),
        proto: "udp",
        src: client.ip.into(),
        dst: server.ip.into(),
        sport: Some(sport),
        dport,
    });
    eprintln!("tc {attach:?} egress shot: {}", done.events[0]);
}

#[test]
fn tc_shot_on_lxc_egress_tcx_is_tc_egress() {
    tc_shot_on_lxc_egress(Attach::Tcx, 31341);
}

#[test]
fn tc_shot_on_lxc_egress_cls_bpf_is_tc_egress() {
    tc_shot_on_lxc_egress(Attach::ClsBpf, 31351);
}

#[test]
fn blackhole_route_drops_at_ip_error() {
    let node = Node::new(1).unwrap();
    let a = node.pod(0);
    let dst = node.unused_ip();
    let (sport, dport, n) = (31401, 31402, 15usize);
    let run = tracer().capture().expression(format!("host {dst} and udp port {dport}")).start().unwrap();
    a.send_udp(sport, std::net::SocketAddrV4::new(dst, dport), n, b"into the blackhole").unwrap();
    let done = stop(run, n as u64);
    // The reason is whatever this kernel says at ip_error (NOT_SPECIFIED on 6.18); what is
    // stable is the place, the device, the flow and the count.
    let reason = done.events.first().map(|e| e["reason"].as_str().unwrap().to_string()).unwrap_or_default();
    assert!(!reason.is_empty() && reason.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'), "reason {reason:?}");
    check(&done, n as u64, &Expect {
        reason: &reason,
        functions: &["ip_error"],
        ifname: &a.lxc,
        ifindex: a.lxc_ifindex,
        netns: node.netns_inode().unwrap(),
        proto: "udp",
        src: a.ip.into(),
        dst: dst.into(),
        sport: Some(sport),
        dport,
    });
    eprintln!("blackhole: {}", done.events[0]);
}

#[test]
fn clean_traffic_reports_no_drops() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (udp_port, tcp_port, n) = (31501, 31502, 200usize);
    let udp = b.listen_udp(udp_port).unwrap();
    let tcp = b.listen_tcp(tcp_port).unwrap();
    let noise = || netns::tcp_noise(&[&a.netns, &b.netns]).unwrap();
    let noise_before = noise();
    let run = tracer().capture().expression(format!("host {} and host {}", a.ip, b.ip)).start().unwrap();
    a.send_udp(udp_port, b.addr(udp_port), n, &[7u8; 512]).unwrap();
    let payload = vec![42u8; 256 * 1024];
    for _ in 0..3 {
        a.send_tcp(b.addr(tcp_port), &payload, TIMEOUT).unwrap();
    }
    udp.wait_for(n as u64, TIMEOUT).unwrap();
    let done = stop(run, 0);
    assert_eq!(udp.stop().unwrap(), n as u64, "every datagram arrived");
    assert_eq!(tcp.stop().unwrap(), (3, 3 * payload.len() as u64), "every connection and byte arrived");
    // On a slow machine (an emulated guest, a loaded host) either side may retransmit a segment
    // the other already has: the copy is dropped (a duplicate; during the close, a segment that
    // meets a TIME_WAIT socket, its reply, a reset), and ACKs processed out of order fail PAWS.
    // Real drops, allowed only on these TCP connections and only as far as the kernels' own
    // counters say: PAWS drops up to PAWS rejections, the others at most three per
    // retransmitted segment and two per reset sent. A run without any must show no drop.
    let n = noise().since(noise_before);
    let tcp_conn = |e: &serde_json::Value| {
        let ends = [e["src"].as_str().unwrap_or_default(), e["dst"].as_str().unwrap_or_default()];
        e["proto"] == "tcp" && ends.contains(&a.ip.to_string().as_str()) && ends.contains(&b.ip.to_string().as_str()) && (e["sport"] == tcp_port || e["dport"] == tcp_port)
    };
    let dups = done.events.iter().filter(|e| tcp_conn(e)).count() as u64;
    assert!(done.events.iter().all(tcp_conn), "no drops but on the TCP connections; events: {:?}", done.events);
    let paws_drops = done.events.iter().filter(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("TCP_RFC7323_PAWS"))).count() as u64;
    assert!(paws_drops <= n.paws, "{paws_drops} PAWS drops but the kernels rejected {}: {:?}", n.paws, done.events);
    assert!(dups - paws_drops <= n.explains(), "{} TCP drops but only {n:?}: {:?}", dups - paws_drops, done.events);
    if dups > 0 {
        let reasons: Vec<&str> = done.events.iter().map(|e| e["reason"].as_str().unwrap_or_default()).collect();
        eprintln!("clean traffic: {dups} TCP drops after {n:?}: {reasons:?}");
    }
    assert_eq!(done.drops().unwrap(), dups, "no drops but on the TCP connections; events: {:?}", done.events);
    let s = done.summary().unwrap();
    assert_eq!(s["lost_events"], 0);
    let by_reason: u64 = s["by_reason"].as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(by_reason, dups, "{}", s["by_reason"]);
    assert_eq!(pcap::read(done.pcap().unwrap()).unwrap().packets.len() as u64, dups);
}

#[test]
fn pcapng_has_one_commented_packet_per_event() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let port = 31601;
    // Three drop points: in the pod (eth0, Ethernet), on the host's receive path (lxc,
    // Ethernet), and on the host's output path before any MAC header exists (raw IP).
    node.iptables("filter", "OUTPUT", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]).unwrap();
    let run = tracer()
        .capture()
        .expression(format!("udp port {port} and (host {} or host {})", b.ip, node.unused_ip()))
        .start()
        .unwrap();
    a.send_udp(port, b.addr(port), 3, b"no listener").unwrap();
    a.send_udp(port, std::net::SocketAddrV4::new(node.unused_ip(), port), 2, b"blackhole").unwrap();
    assert_eq!(node.send_udp(port, b.addr(port), 4, b"host output").unwrap(), 0, "EPERM from the OUTPUT DROP");
    let done = stop(run, 3 + 2 + 4);
    let n = 3 + 2 + 4;
    assert_eq!(done.drops().unwrap(), n);
    assert_eq!(done.events.len() as u64, n);

    let file = pcap::read(done.pcap().unwrap()).unwrap();
    assert_eq!(file.packets.len() as u64, n, "one packet per event");
    let mut seen_links = std::collections::BTreeSet::new();
    for (ev, pkt) in done.events.iter().zip(&file.packets) {
        let iface = file.interface_of(pkt).unwrap();
        let ifname = ev["ifname"].as_str().unwrap();
        let shown = if ifname.is_empty() { "(no device)" } else { ifname };
        assert_eq!(iface.name.as_deref(), Some(shown), "interface block of {ev}");
        let want_link = if ev["link"] == "ethernet" { pcap_file::DataLink::ETHERNET } else { pcap_file::DataLink::RAW };
        assert_eq!(iface.linktype, want_link, "link type of {ev}");
        seen_links.insert(format!("{:?}", iface.linktype));
        assert_eq!(pkt.comments.len(), 1);
        let c = &pkt.comments[0];
        for part in [ev["reason"].as_str().unwrap(), ev["location"].as_str().unwrap(), shown] {
            assert!(c.contains(part), "comment {c:?} lacks {part}");
        }
        assert_eq!(u64::from(pkt.original_len), ev["len"].as_u64().unwrap());
        assert_eq!(pkt.data.len() as u64, ev["caplen"].as_u64().unwrap());
    }
    assert_eq!(seen_links.len(), 2, "both Ethernet and raw IP blocks: {seen_links:?}");
    // One interface block per (namespace, interface, link type): eth0 in b, a's lxc, and the
    // device-less output path.
    assert_eq!(file.interfaces.len(), 3, "{:?}", file.interfaces);

    // What a user sees in tshark.
    let rows = pcap::tshark_fields(done.pcap().unwrap(), &["frame.interface_name", "frame.comment", "ip.src", "ip.dst", "udp.dstport"]).unwrap();
    assert_eq!(rows.len() as u64, n);
    for (ev, row) in done.events.iter().zip(&rows) {
        let ifname = ev["ifname"].as_str().unwrap();
        assert_eq!(row[0], if ifname.is_empty() { "(no device)" } else { ifname }, "{row:?}");
        assert!(row[1].contains(&format!("reason={}", ev["reason"].as_str().unwrap())), "{row:?}");
        assert_eq!(row[2], ev["src"].as_str().unwrap());
        assert_eq!(row[3], ev["dst"].as_str().unwrap());
        assert_eq!(row[4], port.to_string());
    }
    let reasons: std::collections::BTreeMap<String, u64> = done.summary().unwrap()["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap().to_string(), r["count"].as_u64().unwrap()))
        .collect();
    eprintln!("pcapng reasons: {reasons:?}; interfaces: {:?}", file.interfaces);
    assert_eq!(reasons.get("NO_SOCKET"), Some(&3));
    assert_eq!(reasons.get("NETFILTER_DROP"), Some(&4));
}

#[test]
fn netns_filter_keeps_only_that_namespace() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (port, n, m) = (31701, 9usize, 5usize);
    // By name here; the inode form is checked against the events.
    let run = tracer().capture().arg("--netns").arg(node.netns()).expression(format!("udp port {port}")).start().unwrap();
    let noports = netns::snmp(&b.netns, "Udp", "NoPorts").unwrap();
    a.send_udp(port, std::net::SocketAddrV4::new(node.unused_ip(), port), n, b"host side").unwrap();
    a.send_udp(port, b.addr(port), m, b"pod side").unwrap();
    // The left-out drops happened before the stop: a filter letting them through would show.
    wait::until("Udp NoPorts", TIMEOUT, Duration::from_millis(10), || Ok((netns::snmp(&b.netns, "Udp", "NoPorts")? >= noports + m as u64).then_some(()))).unwrap();
    let done = stop(run, n as u64);
    assert_eq!(done.drops().unwrap(), n as u64, "only the node namespace's drops");
    let inode = node.netns_inode().unwrap();
    assert!(done.events.iter().all(|e| e["netns"] == inode && e["ifname"] == a.lxc.as_str()), "{:?}", done.events);

    let run = tracer().capture().arg("--netns").arg(b.netns_inode().unwrap().to_string()).expression(format!("udp port {port}")).start().unwrap();
    // Left out, and sent first: a blackhole drop has no kernel counter to wait for.
    a.send_udp(port, std::net::SocketAddrV4::new(node.unused_ip(), port), n, b"host side").unwrap();
    a.send_udp(port, b.addr(port), m, b"pod side").unwrap();
    let done = stop(run, m as u64);
    assert_eq!(done.drops().unwrap(), m as u64, "only pod b's drops");
    assert!(done.events.iter().all(|e| e["reason"] == "NO_SOCKET" && e["ifname"] == "eth0"));
}

#[test]
fn iface_filter_keeps_only_that_device() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (port, n, m) = (31801, 6usize, 4usize);
    let dst = std::net::SocketAddrV4::new(node.unused_ip(), port);
    let run = tracer().capture().arg("--iface").arg(&a.lxc).expression(format!("udp port {port}")).start().unwrap();
    // Left out, and sent first: a blackhole drop has no kernel counter to wait for.
    b.send_udp(port, dst, m, b"from b").unwrap();
    a.send_udp(port, dst, n, b"from a").unwrap();
    let done = stop(run, n as u64);
    assert_eq!(done.drops().unwrap(), n as u64, "only drops on {}", a.lxc);
    assert!(done.events.iter().all(|e| e["ifname"] == a.lxc.as_str()));

    // A glob: every lxc, but not the pods' eth0.
    let run = tracer().capture().arg("--iface").arg("lxc*").expression(format!("udp port {port}")).start().unwrap();
    a.send_udp(port, dst, n, b"from a").unwrap();
    b.send_udp(port, dst, m, b"from b").unwrap();
    let noports = netns::snmp(&b.netns, "Udp", "NoPorts").unwrap();
    a.send_udp(port, b.addr(port), 3, b"to b's eth0").unwrap();
    wait::until("Udp NoPorts", TIMEOUT, Duration::from_millis(10), || Ok((netns::snmp(&b.netns, "Udp", "NoPorts")? >= noports + 3).then_some(()))).unwrap();
    let done = stop(run, (n + m) as u64);
    assert_eq!(done.drops().unwrap(), (n + m) as u64);
    let ifaces: std::collections::BTreeSet<&str> = done.events.iter().map(|e| e["ifname"].as_str().unwrap()).collect();
    assert_eq!(ifaces, [a.lxc.as_str(), b.lxc.as_str()].into_iter().collect());
}

/// Every datagram to a port without a listener dies somewhere (in the socket lookup, or in a
/// full backlog under a burst): the tracer's total must equal what was sent, and its
/// `NO_SOCKET` count must equal the kernel's own `Udp NoPorts`.
#[test]
fn exact_totals_under_a_burst() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (sport, dport, n) = (31901, 31902, 20_000usize);
    let before = netns::snmp(&b.netns, "Udp", "NoPorts").unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {dport}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(sport, b.addr(dport), n, &[0u8; 64]).unwrap(), n);
    let done = stop(run, n as u64);
    let noports = netns::snmp(&b.netns, "Udp", "NoPorts").unwrap() - before;
    let s = done.summary().unwrap();
    assert_eq!(done.drops().unwrap(), n as u64, "every datagram died once; by_reason {}", s["by_reason"]);
    let by_reason: u64 = s["by_reason"].as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(by_reason, n as u64);
    let no_socket = s["by_reason"].as_array().unwrap().iter().find(|r| r["reason"] == "NO_SOCKET").map_or(0, |r| r["count"].as_u64().unwrap());
    assert_eq!(no_socket, noports, "NO_SOCKET == Udp NoPorts");
    let lost = s["lost_events"].as_u64().unwrap();
    assert_eq!(done.events.len() as u64 + lost, n as u64, "events + lost_events == drops");
    assert_eq!(pcap::read(done.pcap().unwrap()).unwrap().packets.len(), done.events.len());
    eprintln!("burst of {n}: by_reason {}, lost_events {lost}", s["by_reason"]);
}

#[test]
fn rate_limit_keeps_totals_exact() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (sport, dport, n, rate) = (31911, 31912, 5_000usize, 50u64);
    let started = std::time::Instant::now();
    let run = tracer().capture().arg("--max-event-rate").arg(rate.to_string()).expression(format!("host {} and udp port {dport}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(sport, b.addr(dport), n, &[0u8; 64]).unwrap(), n);
    let done = stop(run, n as u64);
    let s = done.summary().unwrap();
    let (events, limited, lost) = (done.events.len() as u64, s["rate_limited"].as_u64().unwrap(), s["lost_events"].as_u64().unwrap());
    assert_eq!(done.drops().unwrap(), n as u64, "totals stay exact");
    assert_eq!(s["by_reason"][0]["count"], n as u64);
    assert_eq!(events + lost, n as u64, "events + lost_events == drops");
    assert_eq!(lost, limited, "every missing event was held back by the rate limit, none lost otherwise");
    // At most a second's budget per CPU plus the refill while running.
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get() as u64);
    let secs = started.elapsed().as_secs() + 1;
    assert!(events >= 1 && events <= cpus * rate * (1 + secs), "{events} events at {rate}/s/CPU");
    assert_eq!(pcap::read(done.pcap().unwrap()).unwrap().packets.len() as u64, events);
}

#[test]
fn duration_ends_the_capture_with_outputs() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (port, n) = (32001, 4usize);
    // Long enough that the drops are counted before it ends, even on a slow machine (waited
    // for below while it runs); the upper bound only catches a run that ignores --duration.
    let run = tracer().capture().arg("--duration").arg("4s").expression(format!("host {} and udp port {port}", b.ip)).start().unwrap();
    a.send_udp(port, b.addr(port), n, b"x").unwrap();
    run.wait_for_drops(n as u64).unwrap();
    let done = run.wait().unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), n as u64);
    let d = done.summary().unwrap()["duration_s"].as_f64().unwrap();
    assert!((3.9..60.0).contains(&d), "duration_s {d}");
}

#[test]
fn sigterm_stops_like_sigint() {
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let (port, n) = (32101, 3usize);
    let run = tracer().capture().expression(format!("host {} and udp port {port}", b.ip)).start().unwrap();
    a.send_udp(port, b.addr(port), n, b"x").unwrap();
    run.wait_for_drops(n as u64).unwrap();
    let done = run.stop_with(libc::SIGTERM).unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), n as u64);
    assert_eq!(done.events.len(), n);
}

/// A run that must fail before doing anything: one line on stderr, non-zero exit, no file.
fn assert_refused(done: &Finished, mentions: &str) {
    assert!(!done.status.success(), "exit status {}", done.status);
    let lines = done.stderr_lines();
    assert_eq!(lines.len(), 1, "exactly one stderr line: {:?}", done.stderr);
    assert!(lines[0].starts_with("tracer: error: "), "{:?}", lines[0]);
    assert!(lines[0].contains(mentions), "{:?} should mention {mentions:?}", lines[0]);
    assert_eq!(done.dir.entries().unwrap(), Vec::<String>::new(), "no output files");
    assert!(done.stdout.is_empty(), "stdout: {:?}", done.stdout);
}

#[test]
fn bad_expression_is_one_line_and_no_files() {
    let done = tracer().capture().expression("udp port nope and").run(TIMEOUT).unwrap();
    assert_refused(&done, "expression");
}

#[test]
fn unknown_interface_is_one_line_and_no_files() {
    let done = tracer().capture().arg("--iface").arg("tbnosuch0").expression("udp").run(TIMEOUT).unwrap();
    assert_refused(&done, "tbnosuch0");
}

#[test]
fn not_root_is_one_line_and_no_files() {
    let done = tracer().capture().as_nobody().expression("udp").run(TIMEOUT).unwrap();
    assert_refused(&done, "root");
}

#[test]
fn unwritable_output_is_one_line_and_no_files() {
    let done = tracer().capture().no_default_outputs().arg("--json").arg("out.jsonl").arg("--pcap").arg("/nonexistent/dir/x.pcapng").expression("udp").run(TIMEOUT).unwrap();
    assert_refused(&done, "/nonexistent/dir/x.pcapng");
}

#[test]
fn unknown_netns_is_one_line_and_no_files() {
    let done = tracer().capture().arg("--netns").arg("tbnosuchns").expression("udp").run(TIMEOUT).unwrap();
    assert_refused(&done, "tbnosuchns");
}
