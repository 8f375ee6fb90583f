//! What the packet bytes say: addresses, protocol, ports, flags (etherparse), as the JSON
//! contract names them.
use std::net::IpAddr;

use etherparse::{IpNumber, Ipv6ExtensionSlice, LaxNetSlice, LaxSlicedPacket, TcpSlice, TransportSlice, UdpSlice};
use serde::Serialize;
use tracer_common::linktype;

/// IP protocol: a name for the common ones, else the number (the JSON contract).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Proto {
    Name(&'static str),
    Number(u8),
}

impl Proto {
    pub fn from_ip_number(n: u8) -> Self {
        match n {
            1 => Self::Name("icmp"),
            6 => Self::Name("tcp"),
            17 => Self::Name("udp"),
            58 => Self::Name("icmpv6"),
            n => Self::Number(n),
        }
    }

    /// The IP protocol number (0 for a name no packet carries).
    pub fn number(&self) -> u8 {
        match self {
            Self::Name("icmp") => 1,
            Self::Name("tcp") => 6,
            Self::Name("udp") => 17,
            Self::Name("icmpv6") => 58,
            Self::Name(_) => 0,
            Self::Number(n) => *n,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// What the packet bytes say.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Headers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// TCP flags as tcpdump prints them (`S`, `S.`, `F.`, `R`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Bytes of transport payload in the packet (from IP lengths, not the capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<usize>,
    /// Set for non-IP packets (e.g. "arp").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<String>,
}

impl Headers {
    /// tcpdump-like: `udp 10.0.0.1.5353 > 10.0.0.2.53`, `tcp … [S.]`, or the `EtherType`.
    pub fn summary(&self) -> String {
        let ep = |a: Option<IpAddr>, p: Option<u16>| match (a, p) {
            (Some(a), Some(p)) => format!("{a}.{p}"),
            (Some(a), None) => a.to_string(),
            _ => "?".into(),
        };
        let what = match (&self.proto, &self.ethertype) {
            (Some(p), _) => format!("{p} {} > {}", ep(self.src, self.sport), ep(self.dst, self.dport)),
            (None, Some(t)) => t.clone(),
            _ => "?".into(),
        };
        let flags = self.tcp_flags.as_deref().map(|f| format!(" [{f}]")).unwrap_or_default();
        format!("{what}{flags}")
    }
}

pub fn parse_headers(lt: u8, data: &[u8]) -> Headers {
    let parsed = if lt == linktype::ETHERNET {
        LaxSlicedPacket::from_ethernet(data).ok()
    } else {
        LaxSlicedPacket::from_ip(data).ok()
    };
    let mut h = Headers::default();
    let Some(p) = parsed else { return h };
    match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let hdr = ip.header();
            h.src = Some(IpAddr::V4(hdr.source_addr()));
            h.dst = Some(IpAddr::V4(hdr.destination_addr()));
            h.proto = Some(Proto::from_ip_number(ip.payload().ip_number.0));
            // Total length minus headers: what the sender put on the wire, even if truncated here.
            let total = usize::from(hdr.total_len());
            h.payload_len = Some(total.saturating_sub(usize::from(hdr.ihl()) * 4));
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let hdr = ip.header();
            h.src = Some(IpAddr::V6(hdr.source_addr()));
            h.dst = Some(IpAddr::V6(hdr.destination_addr()));
            h.proto = Some(Proto::from_ip_number(ip.payload().ip_number.0));
            // The extension headers are not the upper layer's payload.
            h.payload_len = Some(usize::from(hdr.payload_length()).saturating_sub(ip.extensions().slice().len()));
        }
        Some(LaxNetSlice::Arp(_)) => h.ethertype = Some("arp".into()),
        None => {
            if let Some(etherparse::LinkSlice::Ethernet2(e)) = &p.link {
                h.ethertype = Some(format!("{:#06x}", e.ether_type().0));
            }
        }
    }
    match p.transport.clone().or_else(|| first_fragment(&p)) {
        Some(TransportSlice::Tcp(t)) => {
            h.sport = Some(t.source_port());
            h.dport = Some(t.destination_port());
            h.tcp_flags = Some(tcp_flags(&t));
            h.payload_len = h.payload_len.map(|l| l.saturating_sub(t.header_len()));
        }
        Some(TransportSlice::Udp(u)) => {
            h.sport = Some(u.source_port());
            h.dport = Some(u.destination_port());
            // The datagram's own length: a first fragment's header speaks for all of it.
            h.payload_len = Some(usize::from(u.length()).saturating_sub(8));
        }
        Some(TransportSlice::Icmpv4(i)) => {
            h.icmp_type = Some(i.type_u8());
            h.icmp_code = Some(i.code_u8());
        }
        Some(TransportSlice::Icmpv6(i)) => {
            h.icmp_type = Some(i.type_u8());
            h.icmp_code = Some(i.code_u8());
        }
        _ => h.payload_len = None,
    }
    h
}

/// The transport header of a first fragment (offset 0, more to come), which etherparse leaves
/// unparsed: its ports are read as tcpdump reads them. Later fragments carry no header.
fn first_fragment<'a>(p: &LaxSlicedPacket<'a>) -> Option<TransportSlice<'a>> {
    let (first, payload) = match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => (ip.header().fragments_offset().value() == 0, ip.payload()),
        Some(LaxNetSlice::Ipv6(ip)) => {
            let offset0 = ip.extensions().clone().into_iter().all(|x| !matches!(x, Ipv6ExtensionSlice::Fragment(f) if f.fragment_offset().value() != 0));
            (offset0, ip.payload())
        }
        _ => return None,
    };
    if !first || !payload.fragmented {
        return None;
    }
    match payload.ip_number {
        IpNumber::UDP => UdpSlice::from_slice_lax(payload.payload).ok().map(TransportSlice::Udp),
        IpNumber::TCP => TcpSlice::from_slice(payload.payload).ok().map(TransportSlice::Tcp),
        _ => None,
    }
}

fn tcp_flags(t: &etherparse::TcpSlice<'_>) -> String {
    let mut s = String::new();
    for (on, c) in [(t.syn(), 'S'), (t.fin(), 'F'), (t.rst(), 'R'), (t.psh(), 'P'), (t.urg(), 'U'), (t.ece(), 'E'), (t.cwr(), 'W')] {
        if on {
            s.push(c);
        }
    }
    if t.ack() {
        s.push('.');
    }
    if s.is_empty() { "none".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_packet() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 9999);
        let mut v = Vec::new();
        b.write(&mut v, b"hello").unwrap();
        v
    }

    #[test]
    fn parses_udp_over_ethernet() {
        let h = parse_headers(linktype::ETHERNET, &udp_packet());
        assert_eq!(h.proto, Some(Proto::Name("udp")));
        assert_eq!(h.src, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(h.dport, Some(9999));
        assert_eq!(h.payload_len, Some(5));
    }

    #[test]
    fn parses_raw_ip_and_truncation() {
        let p = udp_packet();
        let h = parse_headers(linktype::RAW_IP, &p[14..40]);
        assert_eq!(h.dst, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(h.sport, None);
        assert_eq!(h.proto, Some(Proto::Name("udp")));
    }

    /// IPv6 (raw IP) from `fd00::a` to `fd00::b` whose first header is `next`, then `body`.
    fn ipv6(next: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"fd00::a".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::b".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(body);
        p
    }

    /// UDP 1234 → 9999 with 40 payload bytes (checksum left 0: nothing here checks it).
    fn udp40() -> Vec<u8> {
        let mut u = vec![0x04, 0xd2, 0x27, 0x0f, 0, 48, 0, 0];
        u.extend_from_slice(&[7; 40]);
        u
    }

    #[test]
    fn walks_a_hop_by_hop_header_to_udp() {
        let mut body = vec![17, 0, 1, 4, 0, 0, 0, 0];
        body.extend_from_slice(&udp40());
        let h = parse_headers(linktype::RAW_IP, &ipv6(0, &body));
        assert_eq!((h.proto, h.sport, h.dport, h.payload_len), (Some(Proto::Name("udp")), Some(1234), Some(9999), Some(40)));
    }

    #[test]
    fn first_fragment_has_ports_later_ones_none() {
        let udp = udp40();
        let frag = |offset: u16, more: bool, data: &[u8]| {
            let mut b = vec![17, 0];
            b.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
            b.extend_from_slice(&[0, 0, 7, 16]);
            b.extend_from_slice(data);
            ipv6(44, &b)
        };
        let first = parse_headers(linktype::RAW_IP, &frag(0, true, &udp[..24]));
        assert_eq!((first.proto, first.sport, first.dport, first.payload_len), (Some(Proto::Name("udp")), Some(1234), Some(9999), Some(40)));
        let second = parse_headers(linktype::RAW_IP, &frag(24, false, &udp[24..]));
        assert_eq!((second.proto, second.sport, second.dport, second.payload_len), (Some(Proto::Name("udp")), None, None, None));
        // IPv4: the same for a first fragment (MF set, offset 0).
        let mut v4 = udp_packet()[14..].to_vec();
        v4[6] = 0x20;
        let h = parse_headers(linktype::RAW_IP, &v4);
        assert_eq!((h.sport, h.dport), (Some(1234), Some(9999)));
    }

    #[test]
    fn proto_serializes_as_contract() {
        assert_eq!(serde_json::to_string(&Proto::from_ip_number(6)).unwrap(), "\"tcp\"");
        assert_eq!(serde_json::to_string(&Proto::from_ip_number(132)).unwrap(), "132");
    }
}
