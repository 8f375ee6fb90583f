//! Hand-made Ethernet frames sent from a pod's `eth0` through a packet socket: IPv6 datagrams
//! with extension headers a socket would not add on its own (a hop-by-hop header, fragments
//! cut where the test wants).
use std::net::Ipv6Addr;

use anyhow::{Result, bail};

use crate::{netns, node::Pod};

const ETH_P_IPV6: u16 = 0x86dd;
const HOP_BY_HOP: u8 = 0;
const FRAGMENT: u8 = 44;
const UDP: u8 = 17;

/// A UDP datagram between two IPv6 addresses, before it is framed.
#[derive(Debug, Clone)]
pub struct Udp6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

impl Udp6 {
    /// The UDP header and payload, with the checksum over the IPv6 pseudo-header.
    #[must_use]
    pub fn segment(&self) -> Vec<u8> {
        let len = u16::try_from(8 + self.payload.len()).expect("a small datagram");
        let mut seg = Vec::with_capacity(usize::from(len));
        seg.extend_from_slice(&self.sport.to_be_bytes());
        seg.extend_from_slice(&self.dport.to_be_bytes());
        seg.extend_from_slice(&len.to_be_bytes());
        seg.extend_from_slice(&[0, 0]);
        seg.extend_from_slice(&self.payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, UDP]);
        pseudo.extend_from_slice(&seg);
        let sum = match checksum(&pseudo) {
            0 => 0xffff,
            c => c,
        };
        seg[6..8].copy_from_slice(&sum.to_be_bytes());
        seg
    }

    /// The datagram behind a hop-by-hop header holding one `PadN` option (8 bytes).
    #[must_use]
    pub fn with_hop_by_hop(&self) -> Vec<u8> {
        let mut body = vec![UDP, 0, 1, 4, 0, 0, 0, 0];
        body.extend_from_slice(&self.segment());
        ipv6(self.src, self.dst, HOP_BY_HOP, &body)
    }

    /// The datagram cut in two fragments (IPv6 fragment headers, identification `id`): the
    /// first carries the UDP header and the first `first` bytes after it (`8 + first` must be
    /// a multiple of 8), the second the rest.
    #[must_use]
    pub fn fragments(&self, id: u32, first: usize) -> [Vec<u8>; 2] {
        assert_eq!((8 + first) % 8, 0, "fragment offsets count 8-byte units");
        let seg = self.segment();
        let (head, tail) = seg.split_at(8 + first);
        let frag = |offset: usize, more: bool, data: &[u8]| {
            let field = u16::try_from(offset).expect("a small offset") | u16::from(more);
            let mut body = vec![UDP, 0];
            body.extend_from_slice(&field.to_be_bytes());
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(data);
            ipv6(self.src, self.dst, FRAGMENT, &body)
        };
        [frag(0, true, head), frag(head.len(), false, tail)]
    }
}

/// An IPv6 header (hop limit 64) before `body`, whose first header is `next`.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(body.len()).expect("a small packet").to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(body);
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

impl Pod {
    /// Sends each IPv6 packet in an Ethernet frame out of the pod's `eth0` to the node (its
    /// lxc's MAC), through a packet socket. Returns how many the kernel accepted.
    pub fn send_ipv6_packets(&self, packets: &[Vec<u8>]) -> Result<usize> {
        let mut header = Vec::with_capacity(14);
        header.extend_from_slice(&self.lxc_mac);
        header.extend_from_slice(&self.eth_mac);
        header.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        let ifindex = i32::try_from(self.eth_ifindex)?;
        netns::run(&self.netns, || {
            // SAFETY: plain socket(2); the fd is closed below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if fd < 0 {
                bail!("packet socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: sockaddr_ll is plain data; zeroes are valid.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
            to.sll_protocol = ETH_P_IPV6.to_be();
            to.sll_ifindex = ifindex;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&self.lxc_mac);
            let mut sent = 0;
            for p in packets {
                let frame = [header.as_slice(), p].concat();
                // SAFETY: a valid fd, buffer and address of the sizes given.
                let n = unsafe { libc::sendto(fd, frame.as_ptr().cast(), frame.len(), 0, (&raw const to).cast(), libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or(20)) };
                if n == isize::try_from(frame.len()).unwrap_or(-1) {
                    sent += 1;
                }
            }
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
            Ok(sent)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_verifies() {
        let d = Udp6 { src: "fd00::a".parse().unwrap(), dst: "fd00::b".parse().unwrap(), sport: 1, dport: 2, payload: b"abc".to_vec() };
        let seg = d.segment();
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&d.src.octets());
        pseudo.extend_from_slice(&d.dst.octets());
        pseudo.extend_from_slice(&u32::try_from(seg.len()).unwrap().to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, UDP]);
        pseudo.extend_from_slice(&seg);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn fragments_carry_offsets_and_the_more_flag() {
        let d = Udp6 { src: "fd00::a".parse().unwrap(), dst: "fd00::b".parse().unwrap(), sport: 1, dport: 2, payload: vec![7; 40] };
        let [a, b] = d.fragments(9, 16);
        assert_eq!((a[6], b[6]), (FRAGMENT, FRAGMENT));
        assert_eq!((u16::from_be_bytes([a[42], a[43]]), u16::from_be_bytes([b[42], b[43]])), (1, 24));
        assert_eq!((a.len() - 48, b.len() - 48), (24, 24));
    }
}
