//! Skb facts per drop (issue 16, part 4): the MTU a packet met and its length (a
//! packet-too-big drop when forwarding, IPv4 and IPv6), a GSO packet's segment size and count
//! (a TCP burst shot by a tc program on the sender's lxc), and `pkt_type`. The JSON's `mtu`,
//! `gso` and `pkt_type`, and the pcapng comment. Needs root; every test name starts with
//! `skb_facts_` (`cargo xtask vm-test --test skb_facts_`).
use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use integration_tests::{Attach, Finished, Node, NodeOptions, Pod, TcFixture, TcFixtureOptions, Tracer, function, netns, pcap, wait};
use serde_json::Value;

/// Bound on waiting for the kernel's own counters: only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_mins(1);
/// The MTU of the destination pod's lxc in the packet-too-big tests.
const SMALL_MTU: u32 = 1280;

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn node(pods: usize) -> Node {
    Node::with_options(NodeOptions { prefix: "sf".into(), range: [10, 246], pods, ipv6: true }).unwrap()
}

/// The pcapng comments of a capture, one string per packet.
fn comments(done: &Finished) -> Vec<String> {
    pcap::read(done.pcap().unwrap()).unwrap().packets.iter().map(|p| p.comments.join(" ")).collect()
}

/// One datagram of 1,400 bytes from pod 0 to pod 1, whose lxc has a 1,280-byte MTU: the node
/// cannot forward it (IPv4 with DF, as Linux sends UDP; IPv6 routers never fragment). One
/// datagram only: the "too big" answer teaches pod 0 the path MTU, and it fragments after.
fn too_big(v6: bool, port: u16) {
    let node = node(2);
    let (a, b) = (node.pod(0), node.pod(1));
    node.exec("ip", &["link", "set", "dev", &b.lxc, "mtu", &SMALL_MTU.to_string()]).unwrap();
    let (dst, to): (String, SocketAddr) = if v6 { (b.ip6.unwrap().to_string(), b.addr6(port).into()) } else { (b.ip.to_string(), b.addr(port).into()) };
    let run = tracer().capture().expression(format!("udp and dst port {port} and dst host {dst}")).start().unwrap();
    let sent = match to {
        SocketAddr::V6(to) => a.send_udp6(port + 100, to, 1, &[0x5a; 1400]).unwrap(),
        SocketAddr::V4(to) => a.send_udp(port + 100, to, 1, &[0x5a; 1400]).unwrap(),
    };
    assert_eq!(sent, 1);
    let done = run.stop_after(1).unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), 1, "stderr:\n{}", done.stderr);
    let e = &done.events[0];
    let forward = if v6 { "ip6_forward" } else { "ip_forward" };
    assert_eq!(function(e["location"].as_str().unwrap()), forward, "{e}");
    // IPv4 drops it as received (on a's lxc); ip6_forward first points the skb at the
    // output device (b's lxc), which its "too big" answer is sent from.
    assert_eq!(e["ifname"], if v6 { b.lxc.as_str() } else { a.lxc.as_str() }, "{e}");
    assert_eq!(e["reason"], "PKT_TOO_BIG", "{e}");
    // The MTU is the routed-to device's (b's lxc), not the receiving one's (1500).
    assert_eq!((e["mtu"].as_u64(), e["mtu_from"].as_str()), (Some(u64::from(SMALL_MTU)), Some("route")), "{e}");
    let ip_len = e["len"].as_u64().unwrap() - 14;
    assert!(ip_len > u64::from(SMALL_MTU), "{ip_len} bytes of IP over an MTU of {SMALL_MTU}: {e}");
    assert_eq!(e["pkt_type"], "HOST", "{e}");
    assert!(e.get("gso").is_none(), "a lone datagram is not GSO: {e}");
    let c = &comments(&done)[0];
    assert!(c.contains(&format!(" pkt_type=HOST mtu={SMALL_MTU}")), "{c}");
    eprintln!("too big ({}): {e}", if v6 { "IPv6" } else { "IPv4" });
}

#[test]
fn skb_facts_too_big_ipv4_shows_the_route_mtu() {
    too_big(false, 35001);
}

#[test]
fn skb_facts_too_big_ipv6_shows_the_route_mtu() {
    too_big(true, 35011);
}

/// An open connection from `a` to `b`'s listener on `port`.
fn connect(a: &Pod, b: &Pod, port: u16) -> TcpStream {
    netns::run(&a.netns, || Ok(TcpStream::connect_timeout(&b.addr(port).into(), TIMEOUT)?)).unwrap()
}

/// Closes with a reset (`SO_LINGER` 0): the peer's reader ends at once.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd as _;
    let off = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a `linger` value of the size given.
    let r = unsafe { libc::setsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&raw const off).cast(), libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(8)) };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
}

/// A burst on an open TCP connection, shot by `cil_from_container` on the sender's lxc once
/// the policy denies the peer: the sender's TCP hands the veth one large segment (TSO), so
/// the first drop is a GSO packet of several segments, longer than the MTU. The burst (8 KiB)
/// fits the initial congestion window and the smallest default send buffer (16 KiB): the
/// write returns though nothing is acknowledged. On the way out the socket is reset, after
/// the program is gone, so the listener is not left waiting for retransmissions.
#[test]
fn skb_facts_gso_packet_shot_by_tc() {
    let node = node(2);
    let (a, b) = (node.pod(0), node.pod(1));
    let port = 35021;
    let listener = b.listen_tcp(port).unwrap();
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &a.lxc, Attach::tcx_or_cls_bpf(), &[]);
    opts.bin = Some(integration_tests::fixture_bin(env!("CARGO_BIN_EXE_tc-fixture")));
    let mut fixture = TcFixture::start(&opts).unwrap();
    let mut stream = connect(a, b, port);
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    wait::until("the connection accepted", TIMEOUT, Duration::from_millis(10), || Ok((listener.connections() >= 1).then_some(()))).unwrap();
    let run = tracer().capture().expression(format!("tcp and dst port {port} and dst host {}", b.ip)).start().unwrap();
    fixture.deny(b.ip).unwrap();
    stream.write_all(&[0x47; 8 * 1024]).unwrap();
    wait::until("the program's shot counter", TIMEOUT, Duration::from_millis(10), || Ok((fixture.stats()?.from_shot >= 1).then_some(()))).unwrap();
    let done = run.stop_after(1).unwrap().ok().unwrap();
    fixture.stop().unwrap();
    reset(stream);
    let first: &Value = done.events.iter().find(|e| e["reason"] == "TC_INGRESS").unwrap_or_else(|| panic!("no tc drop: {:#?}", done.events));
    let (size, segs) = (first["gso"]["size"].as_u64().unwrap_or(0), first["gso"]["segs"].as_u64().unwrap_or(0));
    let mtu = first["mtu"].as_u64().unwrap();
    assert_eq!(first["mtu_from"], "device", "tc ingress runs before routing: {first}");
    // The MSS over a 1500-byte MTU (timestamps on: 1448), and more than one of them.
    assert!((1000..=1460).contains(&size) && segs >= 2, "a GSO packet: {first}");
    assert!(first["len"].as_u64().unwrap() > mtu, "longer than the MTU {mtu}: {first}");
    assert_eq!(first["pkt_type"], "HOST", "{first}");
    let c = comments(&done).into_iter().find(|c| c.contains("reason=TC_INGRESS")).unwrap();
    assert!(c.contains(&format!(" gso={size}x{segs}")), "{c}");
    drop(listener);
    eprintln!("GSO: {first}");
}
