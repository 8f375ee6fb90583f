//! The kernel's expression filter where the bytes it reads sit at offsets known only per
//! packet: a UDP port behind IPv4 options, which libpcap reads at `4 × IHL` (an indirect load).
//! The compiled expression reads packets in place where the kernel allows it (an untyped
//! view), else from a copy: either way exactly the packets the expression names are counted.
//! Needs root.
use std::{net::SocketAddrV4, time::Duration};

use integration_tests::{
    Finished, Node, Pod, Tracer,
    expect::{Expect, check},
    netns, pcap, wait,
};

const TIMEOUT: Duration = Duration::from_mins(1);

/// Eight bytes of IPv4 options (seven no-ops and an end of list): IHL 7, a 28-byte header.
const OPTIONS: [u8; 8] = [1, 1, 1, 1, 1, 1, 1, 0];

/// Sends `count` datagrams from `pod` with `OPTIONS` in their IPv4 header.
fn send_with_options(pod: &Pod, sport: u16, to: SocketAddrV4, count: usize) -> usize {
    netns::run(&pod.netns, || {
        let s = std::net::UdpSocket::bind((pod.ip, sport))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        // SAFETY: a valid socket and an option buffer of the length given.
        let r = unsafe { libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_OPTIONS, OPTIONS.as_ptr().cast(), libc::socklen_t::try_from(OPTIONS.len())?) };
        anyhow::ensure!(r == 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
        Ok((0..count).filter(|_| s.send_to(b"behind options", to).is_ok()).count())
    })
    .unwrap()
}

#[test]
fn udp_port_behind_ipv4_options_is_matched_exactly() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let (sport, dport, other, named, others) = (33001, 33002, 33003, 14usize, 9usize);
    // Every datagram from a to b dies in FORWARD; the expression names one port of two.
    let rule = node.iptables("filter", "FORWARD", &["-s", &a.ip.to_string(), "-d", &b.ip.to_string(), "-p", "udp", "-j", "DROP"]).unwrap();
    let run = Tracer::from_env().unwrap().capture().expression(format!("host {} and udp dst port {dport}", b.ip)).start().unwrap();
    assert_eq!(send_with_options(&a, sport, b.addr(other), others), others);
    assert_eq!(send_with_options(&a, sport, b.addr(dport), named), named);
    wait::until("the rule's counter", TIMEOUT, Duration::from_millis(10), || {
        let counted = node.iptables_packets(&rule)?;
        Ok((counted >= (named + others) as u64).then_some(counted))
    })
    .unwrap();
    let done: Finished = run.stop_after(named as u64).unwrap().ok().unwrap();
    assert_eq!(node.iptables_packets(&rule).unwrap(), (named + others) as u64, "the kernel dropped both ports' datagrams");
    assert_eq!(done.summary().unwrap()["filter"], "ebpf", "the expression ran compiled");
    // Exactly the named port's drops: a port read at the 20-byte header's offset would be an
    // option's bytes, and nothing would match.
    check(&done, named as u64, &Expect::udp_forward_drop(&a, &b, node.netns_inode().unwrap(), sport, dport));
    let rows = pcap::tshark_fields(done.pcap().unwrap(), &["ip.hdr_len", "udp.dstport"]).unwrap();
    assert_eq!(rows.len(), named);
    assert!(rows.iter().all(|r| r == &["28".to_string(), dport.to_string()]), "every packet has options and the named port: {rows:?}");
}
