//! What rule evaluation needs to know about a packet (a dropped one, or a synthetic flow the
//! doctor walks through FORWARD), and the address/port ranges rules compare it with.
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketInfo {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// Input/output interface at the hook, when known.
    pub in_iface: Option<String>,
    pub out_iface: Option<String>,
    /// The flow's conntrack state, when known (a capture reads it from the dropped skb).
    pub ct_state: Option<CtState>,
    /// `skb->mark`, and the conntrack entry's mark and zone, when known.
    pub mark: Option<u32>,
    pub ct_mark: Option<u32>,
    pub ct_zone: Option<u16>,
}

impl PacketInfo {
    /// The packet as rules of a table that sets marks or conntrack may have seen it: what the
    /// drop showed is what the last such rule left, not what rules before it saw.
    #[must_use]
    pub fn without_kernel_facts(&self) -> Self {
        Self { ct_state: None, mark: None, ct_mark: None, ct_zone: None, ..self.clone() }
    }
}

/// Conntrack states as `-m conntrack --ctstate` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

impl CtState {
    /// From the name a drop's `ct.state` carries.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::New, Self::Established, Self::Related, Self::Invalid, Self::Untracked].into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Established => "ESTABLISHED",
            Self::Related => "RELATED",
            Self::Invalid => "INVALID",
            Self::Untracked => "UNTRACKED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                // A dotted netmask (iptables prints /32 style, but accept 255.255.0.0).
                _ => mask_len(l.parse().ok()?)?,
            },
        };
        Some(Self { addr, len })
    }

    /// A comma-separated list (`-s 10.0.0.0/8,192.168.1.1`); None if any part is unreadable.
    pub fn parse_list(s: &str) -> Option<Vec<Self>> {
        s.split(',').map(|part| Self::parse(part.trim())).collect()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len)) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn mask_len(m: IpAddr) -> Option<u8> {
    let bits = match m {
        IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
        IpAddr::V6(v) => u128::from(v),
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(if m.is_ipv4() { ones.min(32) } else { ones }).unwrap_or(0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// `80`, `8000:8080` (iptables) or `8000-8080` (nft).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let Some((a, b)) = s.split_once([':', '-']) else {
            let p = s.parse().ok()?;
            return Some(Self { lo: p, hi: p });
        };
        let lo = if a.is_empty() { 0 } else { a.parse().ok()? };
        let hi = if b.is_empty() { u16::MAX } else { b.parse().ok()? };
        Some(Self { lo, hi })
    }

    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

/// A protocol as iptables and nft name it (`tcp`, `ipv6-icmp`, `17`); `all` is 0.
pub fn proto_number(p: &str) -> Option<u8> {
    match p.to_ascii_lowercase().as_str() {
        "all" | "0" => Some(0),
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "ipv6-icmp" | "icmpv6" => Some(58),
        "sctp" => Some(132),
        "gre" => Some(47),
        "esp" => Some(50),
        "ah" => Some(51),
        n => n.parse().ok(),
    }
}

/// `0x200/0xf00`, `0x1`, `512` (iptables `--mark`): (value, mask); no mask is all ones.
pub fn parse_mark(s: &str) -> Option<(u32, u32)> {
    let num = |t: &str| match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    };
    match s.split_once('/') {
        Some((v, m)) => Some((num(v)?, num(m)?)),
        None => Some((num(s)?, u32::MAX)),
    }
}

/// iptables interface names: a trailing `+` matches any suffix.
pub fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/255.255.0.0").unwrap().len, 16);
        assert_eq!(Cidr::parse("fd00::/8").unwrap().len, 8);
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn ports_and_ifaces() {
        assert!(PortRange::parse("8000:8080").unwrap().contains(8001));
        assert!(PortRange::parse("53").unwrap().contains(53));
        assert!(iface_matches("lxc+", "lxc12ab"));
        assert!(!iface_matches("lxc", "lxc12ab"));
    }

    /// Whether `addr` is in a `-s`/`-d` value; None when the value cannot be read.
    fn addr_matches(value: &str, addr: IpAddr) -> Option<bool> {
        Cidr::parse_list(value).map(|nets| nets.iter().any(|n| n.contains(addr)))
    }

    #[test]
    fn interface_and_address_matching() {
        assert!(iface_matches("lxc+", "lxc12ab"));
        assert!(!iface_matches("lxc+", "eth0"));
        assert!(iface_matches("eth0", "eth0"));
        assert!(iface_matches("+", "anything"));
        let a: IpAddr = "10.220.1.5".parse().unwrap();
        assert_eq!(addr_matches("10.220.0.0/16", a), Some(true));
        assert_eq!(addr_matches("10.0.0.0/255.0.0.0", a), Some(true));
        assert_eq!(addr_matches("192.168.0.0/16,10.220.1.5/32", a), Some(true));
        assert_eq!(addr_matches("192.168.0.0/16", a), Some(false));
        assert_eq!(addr_matches("0.0.0.0/0", a), Some(true));
        assert_eq!(addr_matches("fd00::/8", a), Some(false));
        assert_eq!(addr_matches("nonsense", a), None);
        assert_eq!(addr_matches("10.0.0.0/99", a), None);
    }
}
