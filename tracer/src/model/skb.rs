//! Skb facts of a drop (issue 16): how the packet was addressed (`skb->pkt_type`), its GSO
//! size and segments, the MTU it met — for the MTU/PMTU and "not for this host" drops.
use serde::Serialize;
use tracer_common::{PacketEvent, skb_facts};

/// `skb->pkt_type` by name: the kernel's `PACKET_*` values (UAPI `linux/if_packet.h`).
#[must_use]
pub fn pkt_type_name(v: u8) -> Option<&'static str> {
    let names: [(libc::c_uchar, &str); 8] = [
        (libc::PACKET_HOST, "HOST"),
        (libc::PACKET_BROADCAST, "BROADCAST"),
        (libc::PACKET_MULTICAST, "MULTICAST"),
        (libc::PACKET_OTHERHOST, "OTHERHOST"),
        (libc::PACKET_OUTGOING, "OUTGOING"),
        (libc::PACKET_LOOPBACK, "LOOPBACK"),
        (libc::PACKET_USER, "USER"),
        (libc::PACKET_KERNEL, "KERNEL"),
    ];
    names.iter().find(|(n, _)| *n == v).map(|(_, s)| *s)
}

/// A GSO packet's segment size and count (the kernel's `skb_shared_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gso {
    pub size: u16,
    pub segs: u16,
}

/// The MTU a drop met and whose it is: `"route"` (the device the packet was routed to) or
/// `"device"` (its own, before any routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtu {
    pub mtu: u32,
    pub from: &'static str,
}

/// What a drop event's header says: (`pkt_type`, MTU, `gso`), each None when not read (`gso`
/// also when the packet is not GSO).
#[must_use]
pub fn facts(h: &PacketEvent) -> (Option<&'static str>, Option<Mtu>, Option<Gso>) {
    let has = |f: u8| h.skb_facts & f != 0;
    let pkt_type = if has(skb_facts::PKT_TYPE) { pkt_type_name(h.pkt_type) } else { None };
    let mtu = has(skb_facts::MTU).then_some(Mtu { mtu: h.mtu, from: if has(skb_facts::MTU_OF_ROUTE) { "route" } else { "device" } });
    let gso = (has(skb_facts::GSO) && h.gso_size != 0).then_some(Gso { size: h.gso_size, segs: h.gso_segs });
    (pkt_type, mtu, gso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_uapi_values() {
        assert_eq!((pkt_type_name(0), pkt_type_name(3), pkt_type_name(4)), (Some("HOST"), Some("OTHERHOST"), Some("OUTGOING")));
        assert_eq!(pkt_type_name(8), None);
    }

    #[test]
    fn only_what_was_read() {
        // SAFETY: PacketEvent is plain old data; all zeroes is a valid value.
        let mut h: PacketEvent = unsafe { std::mem::zeroed() };
        (h.mtu, h.gso_size, h.gso_segs, h.pkt_type) = (1280, 1448, 3, 2);
        assert_eq!(facts(&h), (None, None, None));
        h.skb_facts = skb_facts::MTU | skb_facts::GSO | skb_facts::PKT_TYPE;
        assert_eq!(facts(&h), (Some("MULTICAST"), Some(Mtu { mtu: 1280, from: "device" }), Some(Gso { size: 1448, segs: 3 })));
        h.skb_facts |= skb_facts::MTU_OF_ROUTE;
        assert_eq!(facts(&h).1, Some(Mtu { mtu: 1280, from: "route" }));
        h.gso_size = 0;
        assert_eq!(facts(&h).2, None, "not GSO");
    }
}
