//! Clock offsets between nodes, from packets seen on two of them: a packet followed as it left
//! a pod on node X (`--path`) and dropped on node Y gives `t_Y − t_X = offset + transit`, with
//! transit ≥ 0. The smallest such delta bounds Y's offset from above; packets the other way
//! bound it from below, and with both the midpoint is the estimate (as NTP does). Only packets
//! seen exactly once on each side are used: a key seen more often cannot be paired safely.
use std::collections::{BTreeMap, HashMap};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use serde::Serialize;

/// What identifies one packet on both nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Addresses, protocol, ports, IPv4 id, TCP sequence number: from the packets' bytes.
    Bytes { src: Vec<u8>, dst: Vec<u8>, proto: u8, sport: u16, dport: u16, ip_id: u16, seq: u32 },
    /// The 5-tuple of the JSON records (only usable when that flow had one packet each side).
    Flow(super::flows::FiveTuple),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Followed as it left (first seen) on this node.
    Left,
    Dropped,
}

#[derive(Debug, Clone)]
pub struct Sighting {
    pub node: usize,
    pub key: Key,
    pub t_ns: i128,
    pub seen: Seen,
}

/// The key of a captured packet (`ethernet` true when the bytes start at the MAC header).
pub fn packet_key(ethernet: bool, data: &[u8]) -> Option<Key> {
    let p = if ethernet { LaxSlicedPacket::from_ethernet(data).ok()? } else { LaxSlicedPacket::from_ip(data).ok()? };
    let (src, dst, proto, ip_id) = match p.net.as_ref()? {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            (h.source().to_vec(), h.destination().to_vec(), ip.payload().ip_number.0, h.identification())
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            (h.source().to_vec(), h.destination().to_vec(), ip.payload().ip_number.0, 0)
        }
        LaxNetSlice::Arp(_) => return None,
    };
    let (sport, dport, seq) = match p.transport.as_ref() {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port(), t.sequence_number()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port(), 0),
        _ => (0, 0, 0),
    };
    // An IPv4 id of 0 (DF datagrams of unconnected sockets) without a TCP sequence makes every
    // packet of a flow look the same: such keys repeat, and repeated keys are never paired.
    Some(Key::Bytes { src, dst, proto, sport, dport, ip_id, seq })
}

/// One pair of nodes' estimate: `b`'s clock minus `a`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offset {
    pub node: String,
    pub relative_to: String,
    pub offset_ns: i128,
    /// `upper bound` (packets from `relative_to` to `node` only: includes their transit),
    /// `lower bound` (the other way only), `midpoint` (both ways).
    pub bound: &'static str,
    /// Packets it rests on.
    pub matches: usize,
    /// How they were matched: `packet bytes` (IPv4 id / TCP sequence) or `5-tuple`.
    pub matched_by: &'static str,
}

/// The minimum delta and number of pairs, per ordered pair of nodes (left on .0, dropped on .1).
fn deltas(sightings: &[Sighting]) -> BTreeMap<(usize, usize), (i128, usize)> {
    let mut by_key: HashMap<&Key, (Vec<&Sighting>, Vec<&Sighting>)> = HashMap::new();
    for s in sightings {
        let e = by_key.entry(&s.key).or_default();
        if s.seen == Seen::Left { e.0.push(s) } else { e.1.push(s) }
    }
    let mut out: BTreeMap<(usize, usize), (i128, usize)> = BTreeMap::new();
    for (left, dropped) in by_key.values() {
        let ([l], [d]) = (left.as_slice(), dropped.as_slice()) else { continue };
        if l.node == d.node {
            continue;
        }
        let delta = d.t_ns - l.t_ns;
        let e = out.entry((l.node, d.node)).or_insert((delta, 0));
        e.0 = e.0.min(delta);
        e.1 += 1;
    }
    out
}

/// Estimates for every pair of nodes with matched packets, from `sightings`.
pub fn estimate(names: &[String], sightings: &[Sighting], matched_by: &'static str) -> Vec<Offset> {
    let mins = deltas(sightings);
    let mut out = Vec::new();
    for a in 0..names.len() {
        for b in a + 1..names.len() {
            let (offset_ns, bound, matches) = match (mins.get(&(a, b)), mins.get(&(b, a))) {
                (Some(&(fwd, fwd_n)), Some(&(rev, rev_n))) => ((fwd - rev) / 2, "midpoint", fwd_n + rev_n),
                (Some(&(fwd, fwd_n)), None) => (fwd, "upper bound", fwd_n),
                (None, Some(&(rev, rev_n))) => (-rev, "lower bound", rev_n),
                (None, None) => continue,
            };
            out.push(Offset { node: names[b].clone(), relative_to: names[a].clone(), offset_ns, bound, matches, matched_by });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(node: usize, id: u16, t_ns: i128, seen: Seen) -> Sighting {
        Sighting { node, key: Key::Bytes { src: vec![10, 0, 0, 1], dst: vec![10, 0, 0, 2], proto: 17, sport: 1, dport: 2, ip_id: id, seq: 0 }, t_ns, seen }
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn one_way_gives_an_upper_bound_from_the_smallest_delta() {
        // b runs 5 ms ahead; transits 20 µs, 90 µs, 40 µs.
        let ahead = 5_000_000;
        let v = vec![
            s(0, 1, 1_000, Seen::Left),
            s(1, 1, 1_000 + ahead + 20_000, Seen::Dropped),
            s(0, 2, 2_000, Seen::Left),
            s(1, 2, 2_000 + ahead + 90_000, Seen::Dropped),
            s(0, 3, 3_000, Seen::Left),
            s(1, 3, 3_000 + ahead + 40_000, Seen::Dropped),
        ];
        let got = estimate(&names(), &v, "packet bytes");
        assert_eq!(got, vec![Offset { node: "b".into(), relative_to: "a".into(), offset_ns: ahead + 20_000, bound: "upper bound", matches: 3, matched_by: "packet bytes" }]);
    }

    #[test]
    fn both_ways_give_the_midpoint() {
        // c is 1 ms behind a; 30 µs transit each way.
        let v = vec![s(0, 7, 10_000_000, Seen::Left), s(2, 7, 10_000_000 - 1_000_000 + 30_000, Seen::Dropped), s(2, 8, 20_000_000, Seen::Left), s(0, 8, 20_000_000 + 1_000_000 + 30_000, Seen::Dropped)];
        let got = estimate(&names(), &v, "packet bytes");
        assert_eq!(got, vec![Offset { node: "c".into(), relative_to: "a".into(), offset_ns: -1_000_000, bound: "midpoint", matches: 2, matched_by: "packet bytes" }]);
    }

    #[test]
    fn ambiguous_and_same_node_packets_are_not_used() {
        // id 1 left twice on a: cannot be paired; id 2 left and dropped on a itself.
        let v = vec![s(0, 1, 0, Seen::Left), s(0, 1, 5, Seen::Left), s(1, 1, 100, Seen::Dropped), s(0, 2, 0, Seen::Left), s(0, 2, 50, Seen::Dropped)];
        assert!(estimate(&names(), &v, "packet bytes").is_empty());
    }

    #[test]
    fn packet_keys_from_bytes() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1234, 53).write(&mut v, b"q").unwrap();
        assert!(packet_key(true, &v).is_some());
        assert_eq!(packet_key(true, &v[..20]), None, "no IP header, no key");
        v[14 + 4] = 0x12;
        v[14 + 5] = 0x34;
        let Some(Key::Bytes { ip_id, sport, dport, proto, .. }) = packet_key(true, &v) else { panic!("no key") };
        assert_eq!((ip_id, sport, dport, proto), (0x1234, 1234, 53, 17));
        assert_eq!(packet_key(false, &v[14..]), packet_key(true, &v));
    }
}
