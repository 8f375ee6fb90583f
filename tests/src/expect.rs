//! What every drop event of one planted fault must say, checked against a finished capture:
//! shared by the suites that plant one fault each (drops, ipv6).
use std::net::IpAddr;

use crate::{Finished, Pod, function, pcap};

/// The expected drop events of one planted fault.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub reason: &'a str,
    /// Accepted functions for the location (the symbol the kernel reports, without
    /// `+0xoff` and clone suffixes such as `.constprop.0`).
    pub functions: &'a [&'a str],
    pub ifname: &'a str,
    pub ifindex: u32,
    pub netns: u64,
    pub proto: &'a str,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// None: any source port (TCP connects pick their own).
    pub sport: Option<u16>,
    pub dport: u16,
}

impl<'a> Expect<'a> {
    /// A UDP datagram from pod `a` to pod `b` dropped by an iptables rule in the node's FORWARD
    /// (namespace `netns`): `nf_tables` reports `nft_do_chain`, legacy tables `ipt_do_table`; on
    /// 6.1 the chain only returns `NF_DROP` and `nf_hook_slow` frees the packet.
    #[must_use]
    pub fn udp_forward_drop(a: &'a Pod, b: &Pod, netns: u64, sport: u16, dport: u16) -> Self {
        Self {
            reason: "NETFILTER_DROP",
            functions: &["nft_do_chain", "ipt_do_table", "nf_hook_slow"],
            ifname: &a.lxc,
            ifindex: a.lxc_ifindex,
            netns,
            proto: "udp",
            src: a.ip.into(),
            dst: b.ip.into(),
            sport: Some(sport),
            dport,
        }
    }
}

/// Checks every event, the summary and the pcapng against `want`, with exactly `n` drops and
/// nothing lost. Panics (a test assertion) on the first difference.
pub fn check(done: &Finished, n: u64, want: &Expect<'_>) {
    let s = done.summary().unwrap();
    assert_eq!(done.drops().unwrap(), n, "summary drops; stderr:\n{}", done.stderr);
    assert_eq!(s["lost_events"], 0, "lost events");
    assert_eq!(done.events.len() as u64, n, "one JSON line per drop");
    let (src, dst) = (want.src.to_string(), want.dst.to_string());
    for e in &done.events {
        assert_eq!(e["type"], "drop");
        assert_eq!(e["reason"], want.reason, "reason of {e}");
        let loc = e["location"].as_str().unwrap();
        assert!(want.functions.contains(&function(loc)), "location {loc} not in {:?}", want.functions);
        assert!(loc.contains("+0x"), "location {loc} is symbol+0xoff");
        assert_eq!(e["ifname"], want.ifname, "ifname of {e}");
        assert_eq!(e["ifindex"], want.ifindex, "ifindex of {e}");
        assert_eq!(e["netns"], want.netns, "netns of {e}");
        assert_eq!(e["proto"], want.proto, "{e}");
        assert_eq!((e["src"].as_str(), e["dst"].as_str()), (Some(src.as_str()), Some(dst.as_str())), "{e}");
        if let Some(p) = want.sport {
            assert_eq!(e["sport"], p, "{e}");
        }
        assert_eq!(e["dport"], want.dport, "{e}");
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "RFC 3339 time in {e}");
        assert!(e["len"].as_u64().unwrap() > 0);
    }
    // Aggregates: one reason, one location symbol, one interface, all with the exact total.
    assert_eq!(s["by_reason"], serde_json::json!([{"reason": want.reason, "count": n}]));
    let locs = s["by_location"].as_array().unwrap();
    assert_eq!(locs.iter().map(|l| l["count"].as_u64().unwrap()).sum::<u64>(), n);
    assert!(locs.iter().all(|l| want.functions.contains(&function(l["location"].as_str().unwrap()))), "{locs:?}");
    let ifaces = s["by_iface"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "{ifaces:?}");
    assert_eq!((ifaces[0]["ifname"].as_str(), ifaces[0]["count"].as_u64()), (Some(want.ifname), Some(n)));
    let flows = s["by_flow"].as_array().unwrap();
    assert_eq!(flows.iter().map(|f| f["count"].as_u64().unwrap()).sum::<u64>(), n, "{flows:?}");
    for f in flows {
        assert_eq!((f["reason"].as_str(), f["dst"].as_str(), f["dport"].as_u64()), (Some(want.reason), Some(dst.as_str()), Some(u64::from(want.dport))), "{f}");
    }
    assert_eq!(pcap::read(done.pcap().unwrap()).unwrap().packets.len() as u64, n, "packets in the pcapng");
}
