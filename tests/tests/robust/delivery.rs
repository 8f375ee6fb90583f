//! The round of traffic the observer-only test sends without and with the tracer.

use std::time::Duration;

use integration_tests::{ConnectResults, IptRule, Node, TcFixture, wait};

use crate::TIMEOUT;

pub const P_OK: u16 = 33001;
pub const P_UDP_DROP: u16 = 33002;
pub const P_TCP: u16 = 33003;
pub const P_TCP_DROP: u16 = 33004;

/// What the receivers and the kernel's own counters say about one round of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub udp_delivered: u64,
    pub udp_to_denied_pod: u64,
    pub tcp_connections: u64,
    pub tcp_bytes: u64,
    pub tcp_blocked: ConnectResults,
    pub tc_shot: u64,
    pub udp_rule_packets: u64,
    pub tcp_rule_packets: u64,
}

/// A → B: 200 UDP datagrams delivered, 50 dropped by an iptables rule, 10 TCP connections with
/// 10 kB each, 3 connection attempts dropped by an iptables rule; A → C: 40 datagrams shot by
/// the tc program on A's lxc.
pub fn traffic(node: &Node, fixture: &mut TcFixture, rules: (&IptRule, &IptRule)) -> Delivery {
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
    // Everything sent has arrived or been dropped by its rule or program (the comparison
    // between the rounds then covers all of it; a round that loses packets times out here).
    at_b.wait_for(200, TIMEOUT).unwrap();
    wait::until("the tc program's shot counter and the rule counters", TIMEOUT, Duration::from_millis(10), || {
        let done = fixture.stats()?.from_shot >= shot + 40 && node.iptables_packets(rules.0)? >= r_udp + 50 && node.iptables_packets(rules.1)? >= r_tcp + 3;
        Ok(done.then_some(()))
    })
    .unwrap();
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
