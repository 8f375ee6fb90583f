//! What rule evaluation needs to know about a dropped packet, and the address/port ranges
//! rules compare it with.
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
        let (lo, hi) = match s.split_once([':', '-']) {
            Some((a, b)) => (if a.is_empty() { 0 } else { a.parse().ok()? }, if b.is_empty() { u16::MAX } else { b.parse().ok()? }),
            None => {
                let p = s.parse().ok()?;
                (p, p)
            }
        };
        Some(Self { lo, hi })
    }

    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
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
}
