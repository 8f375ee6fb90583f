//! Which policy entry decided a "Policy denied" drop: the endpoint's policy map looked up as
//! the datapath does (an identity-specific and an any-identity match, protocol and port
//! exact or wildcarded; a deny entry wins), over the entries read from the pinned map.
use super::layout::{LPM_L4_BITS, PolicyKey, PolicyValue};
use crate::model::cilium::{PolicyEntry, PolicyInfo};

fn port_mask(v: &PolicyValue) -> u16 {
    match v.l4_prefix {
        Some(bits) if bits > 8 && bits < LPM_L4_BITS => 0xffffu16 << (LPM_L4_BITS - bits),
        _ => 0xffff,
    }
}

fn matches(k: PolicyKey, v: &PolicyValue, want: PolicyKey) -> bool {
    let identity = k.identity == 0 || k.identity == want.identity;
    let any_l4 = k.protocol == 0 && k.dport == 0;
    let l4 = any_l4 || (k.protocol == want.protocol && (k.dport == 0 || k.dport == want.dport & port_mask(v)));
    k.egress == want.egress && identity && l4
}

/// More specific first: an exact identity, then a protocol, then a (longer) port match.
fn specificity(k: PolicyKey, v: &PolicyValue) -> (bool, bool, u32) {
    let port_bits = if k.dport == 0 { 0 } else { v.l4_prefix.unwrap_or(LPM_L4_BITS) };
    (k.identity != 0, k.protocol != 0, port_bits)
}

pub fn decide(map: String, entries: &[(PolicyKey, PolicyValue)], want: PolicyKey) -> PolicyInfo {
    let hits: Vec<&(PolicyKey, PolicyValue)> = entries.iter().filter(|(k, v)| matches(*k, v, want)).collect();
    let best = |deny: bool| hits.iter().filter(|(_, v)| v.deny == deny).max_by_key(|(k, v)| specificity(*k, v)).copied();
    let (decision, entry) = match (best(true), best(false)) {
        (Some(d), _) => ("deny entry", Some(d)),
        (None, Some(a)) => ("allow entry", Some(a)),
        (None, None) => ("no allow entry", None),
    };
    PolicyInfo {
        map,
        direction: if want.egress { "egress" } else { "ingress" },
        identity: want.identity,
        protocol: want.protocol,
        dport: want.dport,
        decision,
        entry: entry.map(|(k, v)| PolicyEntry { identity: k.identity, protocol: k.protocol, dport: k.dport, deny: v.deny }),
        entries: entries.iter().filter(|(k, _)| k.egress == want.egress).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(identity: u32, protocol: u8, dport: u16, deny: bool) -> (PolicyKey, PolicyValue) {
        (PolicyKey { identity, egress: true, protocol, dport }, PolicyValue { deny, l4_prefix: None, packets: None })
    }

    #[test]
    fn deny_beats_allow_and_absence_is_reported() {
        let want = PolicyKey { identity: 3000, egress: true, protocol: 6, dport: 80 };
        let entries = vec![e(3000, 6, 80, false), e(0, 6, 80, true), e(4000, 0, 0, false)];
        let p = decide("m".into(), &entries, want);
        assert_eq!((p.decision, p.entry.as_ref().map(|x| (x.identity, x.deny))), ("deny entry", Some((0, true))));
        let p = decide("m".into(), &entries[..1], want);
        assert_eq!(p.decision, "allow entry");
        let p = decide("m".into(), &entries[2..], want);
        assert_eq!((p.decision, p.entry, p.entries), ("no allow entry", None, 1));
        let p = decide("m".into(), &[e(3000, 0, 0, false)], want);
        assert_eq!(p.decision, "allow entry", "an L3-only entry allows every port");
    }
}
