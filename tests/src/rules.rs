//! Rulesets of a Kubernetes-sized node (issue 18), shared by the scale test and the bench's
//! scale arm (through `testbed-node --print-kube-rules`).
use std::fmt::Write as _;

/// `iptables-nft-restore --noflush` input: KUBE-SERVICES jumped to from FORWARD, one
/// KUBE-SVC chain per service (comment, a conntrack rule, an ACCEPT for its endpoints' range,
/// a DROP for another port). None of it matches UDP: a UDP drop after it is decided by rule
/// evaluation alone after walking all of it.
#[must_use]
pub fn kube_proxy_like(rules: usize) -> String {
    let services = rules / 4;
    let mut s = String::from("*filter\n:KUBE-SERVICES - [0:0]\n");
    for i in 0..services {
        writeln!(s, ":KUBE-SVC-{i:05} - [0:0]").expect("writing to a String");
    }
    s.push_str("-A FORWARD -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    for i in 0..services {
        let (hi, lo) = (i / 250, i % 250 + 1);
        writeln!(s, "-A KUBE-SERVICES -d 10.96.{hi}.{lo}/32 -p tcp -m comment --comment \"ns/svc-{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-{i:05}").expect("writing to a String");
        writeln!(s, "-A KUBE-SVC-{i:05} -m comment --comment \"ns/svc-{i}:http\" -m conntrack --ctstate INVALID -j DROP").expect("writing to a String");
        writeln!(s, "-A KUBE-SVC-{i:05} -s 10.244.{}.0/24 -m comment --comment \"ns/svc-{i}:http -> endpoints\" -j ACCEPT", i % 250).expect("writing to a String");
        writeln!(s, "-A KUBE-SVC-{i:05} -p tcp -m comment --comment \"ns/svc-{i}:http other port\" -m tcp --dport 81 -j DROP").expect("writing to a String");
    }
    s.push_str("COMMIT\n");
    s
}
