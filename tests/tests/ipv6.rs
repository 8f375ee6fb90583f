//! IPv6 twins of the planted-fault tests (issue 16), on a dual-stack node (prefix `v6`,
//! 10.245.0.0/16 and `fd00:a:f5::/48`): netfilter drops named to the rule (ip6tables with the
//! `nf_tables` and legacy back ends, an nft `inet` table, a pod's own INPUT), `NO_SOCKET` for
//! TCP and UDP, the blackhole route, a tc program's drop with the pods named from their IPv6
//! addresses in the CNI cache and `--pod` selecting by them, `--path` across the node,
//! neighbour discovery through the observers, and extension headers (hop-by-hop, fragments)
//! in the record and in the filter. Needs root. Each test names the layer it proves; every
//! name starts with `ipv6_` (`cargo xtask vm-test --test ipv6_` runs them in the guests).
use std::{
    net::{Ipv6Addr, SocketAddrV6},
    time::Duration,
};

use integration_tests::{Attach, Feature, Finished, Node, NodeOptions, RunningCapture, TcFixture, TcFixtureOptions, Tracer, cmd, expect::{Expect, check}, frames::Udp6, function, netns, require, unchecked, wait};
use serde_json::Value;

/// Bound on waiting for the kernel's own counters: only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_mins(1);

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn node(pods: usize) -> Node {
    Node::with_options(NodeOptions { prefix: "v6".into(), range: [10, 245], pods, ipv6: true }).unwrap()
}

fn ip6(p: &integration_tests::Pod) -> Ipv6Addr {
    p.ip6.unwrap()
}

/// Stops the capture once it has counted `n` drops and read everything it counted.
fn stop(run: RunningCapture, n: u64) -> Finished {
    run.stop_after(n).unwrap().ok().unwrap()
}

/// Layer: netfilter attribution for IPv6 in FORWARD, behind a conntrack guard that only the
/// drop's own state rules out: ip6tables (`nf_tables` back end), ip6tables-legacy, an nft `inet`
/// table. With observers (≥ 6.4) the rule is `exact`; without them the counters of the window
/// name it.
fn forward_drop(backend: &str, port: u16) {
    let mut node = node(2);
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let (dst, p) = (ip6(&b).to_string(), port.to_string());
    let guard = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"];
    let drop = ["-d", &dst, "-p", "udp", "--dport", &p, "-m", "comment", "--comment", "v6-drop", "-j", "DROP"];
    let (family, table, chain) = match backend {
        "iptables-nft" | "iptables-legacy" => {
            let tool = if backend == "iptables-nft" { "ip6tables" } else { "ip6tables-legacy" };
            for r in [&guard[..], &drop[..]] {
                node.exec(tool, &[&["-w", "-A", "FORWARD"], r].concat()).unwrap();
            }
            ("ip6", "filter", "FORWARD")
        }
        _ => {
            let body = format!("chain f {{ type filter hook forward priority 0; policy accept;\n ct state established,related accept\n ip6 daddr {dst} udp dport {port} drop\n }}");
            node.nft_table("inet", "v6fw", &body).unwrap();
            ("inet", "v6fw", "f")
        }
    };
    let n = 6;
    let run = tracer().capture().expression(format!("udp and dst port {port} and src host {}", ip6(&a))).start().unwrap();
    assert_eq!(a.send_udp6(port + 100, b.addr6(port), n, b"dropped in FORWARD").unwrap(), n);
    let done = stop(run, n as u64);
    check(&done, n as u64, &Expect {
        reason: "NETFILTER_DROP",
        functions: &["nft_do_chain", "ip6t_do_table", "nf_hook_slow"],
        ifname: &a.lxc,
        ifindex: a.lxc_ifindex,
        netns: node.netns_inode().unwrap(),
        proto: "udp",
        src: ip6(&a).into(),
        dst: ip6(&b).into(),
        sport: Some(port + 100),
        dport: port,
    });
    let rule = match backend {
        "iptables-nft" | "iptables-legacy" => {
            let save = if backend == "iptables-nft" { "ip6tables-save" } else { "ip6tables-legacy-save" };
            let out = cmd::run_in(node.netns(), save, &[] as &[&str]).unwrap();
            out.lines().find(|l| l.starts_with("-A FORWARD") && l.contains("v6-drop")).unwrap().to_string()
        }
        _ => node.exec("nft", &["-a", "list", "chain", family, table, chain]).unwrap().lines().map(str::trim).find(|l| l.contains(&format!("dport {port} drop"))).unwrap().to_string(),
    };
    let observers = Feature::NetfilterLink.probe().is_ok();
    for e in &done.events {
        let nf = &e["netfilter"];
        assert_eq!((nf["family"].as_str(), nf["table"].as_str(), nf["chain"].as_str(), nf["rule"].as_str()), (Some(family), Some(table), Some(chain), Some(rule.as_str())), "{nf}\nstderr:\n{}", done.stderr);
        assert_eq!(nf["verdict"], "DROP");
        assert_eq!(nf["attribution"], if observers { "exact" } else { "window" }, "{nf}");
        if observers {
            assert_eq!(nf["hook"], "forward", "{nf}");
        }
        assert_eq!(e["ct"]["state"], "NEW", "the guard rule saw a new flow: {e}");
    }
    if !observers {
        unchecked("exact attribution of IPv6 rules", Feature::NetfilterLink);
    }
    eprintln!("{backend} IPv6 FORWARD drop: {}", done.events[0]);
}

#[test]
fn ipv6_forward_drop_named_iptables_nft() {
    forward_drop("iptables-nft", 34001);
}

#[test]
fn ipv6_forward_drop_named_iptables_legacy() {
    forward_drop("iptables-legacy", 34011);
}

#[test]
fn ipv6_forward_drop_named_nft_inet() {
    // Native nft rules are named per packet by their observer only (BPF netfilter links).
    if !require(Feature::NetfilterLink) {
        return;
    }
    forward_drop("nftables", 34021);
}

/// Layer: netfilter attribution in a pod's own namespace (ip6tables INPUT there).
#[test]
fn ipv6_input_drop_inside_a_pod() {
    let node = node(2);
    let (a, b) = (node.pod(0), node.pod(1));
    let port = 34031;
    cmd::run_in(&b.netns, "ip6tables", &["-w", "-A", "INPUT", "-p", "udp", "--dport", &port.to_string(), "-m", "comment", "--comment", "pod6-input", "-j", "DROP"]).unwrap();
    let run = tracer().capture().expression(format!("udp port {port} and host {}", ip6(b))).start().unwrap();
    assert_eq!(a.send_udp6(port + 100, b.addr6(port), 5, b"input").unwrap(), 5);
    let done = stop(run, 5);
    check(&done, 5, &Expect {
        reason: "NETFILTER_DROP",
        functions: &["nft_do_chain", "ip6t_do_table", "nf_hook_slow"],
        ifname: "eth0",
        ifindex: b.eth_ifindex,
        netns: b.netns_inode().unwrap(),
        proto: "udp",
        src: ip6(a).into(),
        dst: ip6(b).into(),
        sport: Some(port + 100),
        dport: port,
    });
    let line = cmd::run_in(&b.netns, "ip6tables-save", &[] as &[&str]).unwrap().lines().find(|l| l.contains("pod6-input")).unwrap().to_string();
    for e in &done.events {
        let nf = &e["netfilter"];
        assert_eq!((nf["family"].as_str(), nf["chain"].as_str(), nf["rule"].as_str()), (Some("ip6"), Some("INPUT"), Some(line.as_str())), "{nf}");
        let how = nf["attribution"].as_str().unwrap();
        if Feature::NetfilterLink.probe().is_ok() {
            assert_eq!((how, nf["hook"].as_str()), ("exact", Some("input")), "{nf}");
        } else {
            assert_eq!(how, "window", "{nf}");
        }
    }
}

/// Layer: drop reasons of the IPv6 transport (`tcp_v6_rcv`): a SYN to a closed port.
#[test]
fn ipv6_closed_tcp_port_is_no_socket() {
    let node = node(2);
    let (a, b) = (node.pod(0), node.pod(1));
    let (port, n) = (34041, 4usize);
    let rsts = netns::snmp(&b.netns, "Tcp", "OutRsts").unwrap();
    let run = tracer().capture().expression(format!("host {} and tcp port {port}", ip6(b))).start().unwrap();
    let r = a.tcp_connect(b.addr6(port), n, Duration::from_secs(30)).unwrap();
    let done = stop(run, n as u64);
    assert_eq!((r.refused, r.connected), (n as u64, 0), "every attempt refused");
    assert_eq!(netns::snmp(&b.netns, "Tcp", "OutRsts").unwrap() - rsts, n as u64, "one RST per SYN");
    check(&done, n as u64, &Expect {
        reason: "NO_SOCKET",
        functions: &["tcp_v6_rcv"],
        ifname: "eth0",
        ifindex: b.eth_ifindex,
        netns: b.netns_inode().unwrap(),
        proto: "tcp",
        src: ip6(a).into(),
        dst: ip6(b).into(),
        sport: None,
        dport: port,
    });
    assert!(done.events.iter().all(|e| e["tcp_flags"] == "S"), "only SYNs");
}

/// Layer: drop reasons of the IPv6 transport (`__udp6_lib_rcv`), against `Udp6NoPorts`.
#[test]
fn ipv6_udp_without_listener_is_no_socket() {
    let node = node(2);
    let (a, b) = (node.pod(0), node.pod(1));
    let (port, n) = (34051, 9usize);
    let before = netns::snmp6(&b.netns, "Udp6NoPorts").unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {port}", ip6(b))).start().unwrap();
    assert_eq!(a.send_udp6(port + 100, b.addr6(port), n, b"nobody listens").unwrap(), n);
    wait::until("Udp6NoPorts", TIMEOUT, Duration::from_millis(10), || Ok((netns::snmp6(&b.netns, "Udp6NoPorts")? - before >= n as u64).then_some(()))).unwrap();
    let done = stop(run, n as u64);
    assert_eq!(netns::snmp6(&b.netns, "Udp6NoPorts").unwrap() - before, n as u64);
    check(&done, n as u64, &Expect {
        reason: "NO_SOCKET",
        functions: &["__udp6_lib_rcv"],
        ifname: "eth0",
        ifindex: b.eth_ifindex,
        netns: b.netns_inode().unwrap(),
        proto: "udp",
        src: ip6(a).into(),
        dst: ip6(b).into(),
        sport: Some(port + 100),
        dport: port,
    });
}

/// Kernel functions where a forwarded IPv6 packet to a blackhole route is freed.
const BLACKHOLE6: &[&str] = &["ip6_pkt_discard", "ip6_pkt_drop", "dst_discard", "dst_discard_out", "ip6_forward", "ip6_route_input"];

/// Layer: routing drops for IPv6 (the node's `blackhole fd00:a:f5::/48`).
#[test]
fn ipv6_blackhole_route_drops() {
    let node = node(1);
    let a = node.pod(0);
    let (dst, port, n) = (node.unused_ip6(), 34061, 7usize);
    let run = tracer().capture().expression(format!("host {dst} and udp port {port}")).start().unwrap();
    assert_eq!(a.send_udp6(port + 100, SocketAddrV6::new(dst, port, 0, 0), n, b"into the blackhole").unwrap(), n);
    let done = stop(run, n as u64);
    // The reason is the kernel's own at that place (as for IPv4's ip_error); what is stable
    // is the place, the device, the flow and the count.
    let reason = done.events.first().map(|e| e["reason"].as_str().unwrap().to_string()).unwrap_or_default();
    assert!(!reason.is_empty() && reason.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'), "reason {reason:?}");
    check(&done, n as u64, &Expect {
        reason: &reason,
        functions: BLACKHOLE6,
        ifname: &a.lxc,
        ifindex: a.lxc_ifindex,
        netns: node.netns_inode().unwrap(),
        proto: "udp",
        src: ip6(a).into(),
        dst: dst.into(),
        sport: Some(port + 100),
        dport: port,
    });
    eprintln!("IPv6 blackhole: {}", done.events[0]);
}

/// Layers: tc attribution and pods for IPv6. `cil_from_container` on pod 0's lxc shoots what
/// goes to pods 1 and 2 (by IPv6 address); the pods are named from the IPv6 addresses of the
/// CNI cache, and `--pod web-1` keeps exactly the drops to pod 1: on pod 0's lxc, in the node's
/// namespace, only the address says whose they are.
#[test]
fn ipv6_tc_drop_names_pods_and_pod_filter_selects_them() {
    let node = node(3);
    let (client, b, c) = (node.pod(0), node.pod(1), node.pod(2));
    let cache = integration_tests::cni::cni_cache(&node, true).unwrap();
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &client.lxc, Attach::tcx_or_cls_bpf(), &[]);
    opts.deny = vec![ip6(b).into(), ip6(c).into()];
    opts.bin = Some(integration_tests::fixture_bin(env!("CARGO_BIN_EXE_tc-fixture")));
    let mut fixture = TcFixture::start(&opts).unwrap();
    let port = 34071;
    let run = tracer().capture().arg("--cni-cache-dir").arg(cache.path()).arg("--pod").arg("default/web-1").expression(format!("udp port {port}")).start().unwrap();
    let (n, m) = (8usize, 5usize);
    assert_eq!(client.send_udp6(port + 100, b.addr6(port), n, b"denied").unwrap(), n);
    assert_eq!(client.send_udp6(port + 101, c.addr6(port), m, b"denied, other pod").unwrap(), m);
    wait::until("the program's shot counter", TIMEOUT, Duration::from_millis(10), || Ok((fixture.stats()?.from_shot >= (n + m) as u64).then_some(()))).unwrap();
    let done = stop(run, n as u64);
    assert_eq!(fixture.stats().unwrap().from_shot, (n + m) as u64);
    fixture.stop().unwrap();
    check(&done, n as u64, &Expect {
        reason: "TC_INGRESS",
        functions: &["__netif_receive_skb_core"],
        ifname: &client.lxc,
        ifindex: client.lxc_ifindex,
        netns: node.netns_inode().unwrap(),
        proto: "udp",
        src: ip6(client).into(),
        dst: ip6(b).into(),
        sport: Some(port + 100),
        dport: port,
    });
    for e in &done.events {
        assert_eq!((e["src_pod"].as_str(), e["dst_pod"].as_str(), e["pod_iface"].as_str()), (Some("default/web-0"), Some("default/web-1"), Some("default/web-0")), "{e}");
        assert_eq!((e["tc"]["prog"].as_str(), e["tc"]["verdict"].as_str()), (Some("cil_from_container"), Some("SHOT")), "{e}");
    }
}

/// Layer: `--path` for IPv6, a forwarded pod-to-pod datagram hop by hop.
#[test]
#[expect(clippy::many_single_char_names, reason = "pods a and b, packet p, hop h: the names the assertions read with")]
fn ipv6_forwarded_packet_hop_by_hop() {
    let mut node = node(2);
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let port = 34081;
    // A FORWARD rule that accepts: the forward hook has a table (and an observer).
    node.ip6tables("filter", "FORWARD", &["-d", &ip6(&b).to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "ACCEPT"]).unwrap();
    let listener = b.listen_udp6(port).unwrap();
    let run = tracer().capture().arg("--path").expression(format!("udp port {port} and host {}", ip6(&b))).start().unwrap();
    assert_eq!(a.send_udp6(port + 100, b.addr6(port), 1, b"hello v6 path").unwrap(), 1);
    listener.wait_for(1, TIMEOUT).unwrap();
    let done = stop(run, 0);
    let (node_ns, a_ns, b_ns) = (node.netns_inode().unwrap(), a.netns_inode().unwrap(), b.netns_inode().unwrap());
    let ps: Vec<&Value> = done.events.iter().filter(|e| e["type"] == "packet").collect();
    assert_eq!(ps.len(), 1, "one packet, one story: {:#?}", done.events);
    let p = ps[0];
    assert_eq!((p["proto"].as_str(), p["src"].as_str(), p["dst"].as_str()), (Some("udp"), Some(ip6(&a).to_string().as_str()), Some(ip6(&b).to_string().as_str())), "{p}");
    let path: Vec<(String, String, u64)> =
        p["path"].as_array().unwrap().iter().map(|h| (h["hook"].as_str().unwrap().to_string(), h["ifname"].as_str().unwrap().to_string(), h["netns"].as_u64().unwrap())).collect();
    let find = |what: &str, f: &dyn Fn(&(String, String, u64)) -> bool| path.iter().position(f).unwrap_or_else(|| panic!("no {what} in {path:#?}"));
    let out_a = find("send from pod a", &|h| h.0 == "net_dev_start_xmit" && h.1 == "eth0" && h.2 == a_ns);
    let in_lxc = find("receive on a's lxc", &|h| h.0 == "netif_receive_skb" && h.1 == a.lxc && h.2 == node_ns);
    let out_lxc = find("send on b's lxc", &|h| h.0 == "net_dev_start_xmit" && h.1 == b.lxc && h.2 == node_ns);
    let in_b = find("receive in pod b", &|h| h.0 == "netif_receive_skb" && h.1 == "eth0" && h.2 == b_ns);
    assert!(out_a < in_lxc && in_lxc < out_lxc && out_lxc < in_b, "order: {path:#?}");
    if Feature::NetfilterLink.probe().is_ok() {
        let fwd = find("the ip6 forward hook", &|h| h.0.starts_with("netfilter ip6 forward") && h.2 == node_ns);
        assert!(in_lxc < fwd && fwd < out_lxc, "order: {path:#?}");
    } else {
        unchecked("the netfilter ip6 forward hop", Feature::NetfilterLink);
    }
    if Feature::SkDataReady.probe().is_ok() {
        assert_eq!(p["fate"], format!("delivered to socket (netns {b_ns})"), "{p}");
    }
    let s = done.summary().unwrap();
    if s["path"]["backend"] != "tracepoint" {
        let f = find("ip6_forward", &|h| h.0 == "ip6_forward" && h.2 == node_ns);
        assert!(in_lxc < f && f < out_lxc, "ip6_forward between the lxcs: {path:#?}");
    }
    assert_eq!((s["drops"].as_u64(), s["path"]["lost_events"].as_u64()), (Some(0), Some(0)));
}

/// Layer: the observers are observers. With netfilter observers on every IPv6 hook of the node
/// (ip6tables INPUT, FORWARD and OUTPUT chains) and `--path`, pod 0 resolves its gateway with
/// neighbour discovery (its static entry removed: a solicitation to the node, proxy NDP's
/// advertisement back) and every datagram reaches pod 1; no `ICMPv6` packet is dropped.
#[test]
fn ipv6_neighbour_discovery_unaffected_by_the_observers() {
    let mut node = node(2);
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let port = 34091;
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        node.ip6tables("filter", chain, &["-p", "udp", "--dport", "9", "-j", "DROP"]).unwrap();
    }
    let gw6 = node.gateway6().unwrap().to_string();
    let listener = b.listen_udp6(port).unwrap();
    let run = tracer().capture().arg("--path").expression(format!("icmp6 or (udp port {port})")).start().unwrap();
    cmd::run("ip", &["-n", &a.netns, "-6", "neigh", "del", &gw6, "dev", "eth0"]).unwrap();
    let n = 20;
    assert_eq!(a.send_udp6(port + 100, b.addr6(port), n, b"after a solicitation").unwrap(), n);
    listener.wait_for(n as u64, TIMEOUT).unwrap();
    let neigh = cmd::run("ip", &["-n", &a.netns, "-6", "neigh", "show", &gw6, "dev", "eth0"]).unwrap();
    let lxc_mac = a.lxc_mac.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
    assert!(neigh.contains(&lxc_mac) && !neigh.contains("FAILED") && !neigh.contains("PERMANENT"), "resolved by discovery: {neigh:?}");
    let done = stop(run, 0);
    // Linux 6.1 frees each neighbour discovery message it has processed with kfree_skb
    // (icmpv6_rcv, NOT_SPECIFIED): drops as the kernel reports them, though nothing was lost.
    // Anything else dropped is a failure.
    let processed_nd = |e: &&Value| {
        e["reason"] == "NOT_SPECIFIED" && function(e["location"].as_str().unwrap_or_default()) == "icmpv6_rcv" && matches!(e["icmp_type"].as_u64(), Some(135 | 136))
    };
    let drops: Vec<&Value> = done.events.iter().filter(|e| e["type"] == "drop").collect();
    assert_eq!(done.drops().unwrap(), drops.len() as u64, "stderr:\n{}", done.stderr);
    let lost: Vec<&&Value> = drops.iter().filter(|e| !processed_nd(e)).collect();
    assert!(lost.is_empty(), "nothing dropped; stderr:\n{}\n{lost:#?}", done.stderr);
    // The solicitation's own story: it reached the node on pod 0's lxc.
    let icmp: Vec<&Value> = done.events.iter().filter(|e| e["type"] == "packet" && e["proto"] == "icmpv6").collect();
    assert!(
        icmp.iter().any(|p| p["path"].as_array().unwrap().iter().any(|h| h["hook"] == "netif_receive_skb" && h["ifname"] == a.lxc.as_str())),
        "a neighbour solicitation received on {}: {icmp:#?}",
        a.lxc
    );
    assert_eq!(listener.stop().unwrap(), n as u64);
}

/// Layers: the record's and the filter's parsing of IPv6 extension headers. Hand-made frames
/// from pod 0 to the blackhole: a datagram behind a hop-by-hop header, and a datagram in two
/// fragments. The record walks the extension headers to the UDP header (the second fragment
/// has none: no ports); the filter is libpcap's: `udp` takes a fragment header before UDP
/// but not a hop-by-hop header, so that capture keeps the two fragments only.
#[test]
fn ipv6_extension_headers_in_the_record_and_the_filter() {
    let node = node(1);
    let a = node.pod(0);
    let dst = node.unused_ip6();
    let (sport, dport) = (34101, 34102);
    let d = Udp6 { src: ip6(a), dst, sport, dport, payload: vec![0x6b; 40] };
    let [f1, f2] = d.fragments(0x0716, 16);
    let packets = [d.with_hop_by_hop(), f1, f2];
    let capture = |expr: String, n: u64| {
        let run = tracer().capture().expression(expr).start().unwrap();
        assert_eq!(a.send_ipv6_packets(&packets).unwrap(), packets.len());
        let done = stop(run, n);
        assert_eq!(done.drops().unwrap(), n, "stderr:\n{}", done.stderr);
        done
    };
    let all = capture(format!("ip6 and dst host {dst}"), 3);
    let ports: Vec<(Option<&str>, Option<u64>, Option<u64>)> = all.events.iter().map(|e| (e["proto"].as_str(), e["sport"].as_u64(), e["dport"].as_u64())).collect();
    let (s, p) = (Some(u64::from(sport)), Some(u64::from(dport)));
    assert_eq!(ports, vec![(Some("udp"), s, p), (Some("udp"), s, p), (Some("udp"), None, None)], "hop-by-hop, first and second fragment: {:#?}", all.events);
    assert!(all.events.iter().all(|e| e["src"] == ip6(a).to_string().as_str() && e["dst"] == dst.to_string().as_str()));
    let udp = capture(format!("udp and dst host {dst}"), 2);
    let lens: Vec<u64> = udp.events.iter().map(|e| e["len"].as_u64().unwrap()).collect();
    assert_eq!(lens, vec![14 + 48 + 24, 14 + 48 + 24], "the two fragments, not the hop-by-hop datagram: {:#?}", udp.events);
    eprintln!("IPv6 extension headers: {}", all.events[0]);
}
