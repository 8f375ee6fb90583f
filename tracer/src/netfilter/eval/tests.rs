//! Chain walks: jumps, gotos, RETURN, certainty.
use super::*;
use crate::netfilter::{iptables::Save, packet::CtState};

fn pkt(dst: &str, proto: u8, dport: u16) -> PacketInfo {
    PacketInfo { src: Some("10.0.0.1".parse().unwrap()), dst: Some(dst.parse().unwrap()), proto: Some(proto), dport: Some(dport), sport: Some(1234), ..Default::default() }
}

const SAVE: &str = "*filter\n:FORWARD DROP [0:0]\n:CILIUM_FORWARD - [0:0]\n:KUBE-FIREWALL - [0:0]\n\
[1:1] -A FORWARD -m comment --comment \"cilium-feeder: CILIUM_FORWARD\" -j CILIUM_FORWARD\n\
[1:1] -A FORWARD -d 10.9.9.9/32 -p udp -m udp --dport 53 -j DROP\n\
[0:0] -A FORWARD -d 10.8.8.8/32 -j ACCEPT\n\
[1:1] -A CILIUM_FORWARD -d 10.7.7.7/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\n\
[0:0] -A CILIUM_FORWARD -m conntrack --ctstate INVALID -j DROP\n\
COMMIT\n";

fn forward_candidates(p: &PacketInfo) -> Vec<Candidate> {
    candidates(Save::parse(SAVE).table("filter").unwrap(), "FORWARD", p)
}

#[test]
fn exact_rule_in_base_chain_after_maybe_rule() {
    let c = forward_candidates(&pkt("10.9.9.9", 17, 53));
    // The conntrack rule in the user chain is possible, then the matching DROP: definite,
    // but not certain (the counters must rule the first one out).
    assert_eq!(c.len(), 2);
    assert!(!c[0].definite && c[0].chain == "CILIUM_FORWARD");
    assert!(c[1].definite && !c[1].certain && c[1].rule.contains("--dport 53 -j DROP"));
}

#[test]
fn exact_rule_in_jumped_chain() {
    let c = forward_candidates(&pkt("10.7.7.7", 6, 80));
    assert_eq!(c.len(), 1);
    assert!(c[0].certain);
    assert_eq!(c[0].verdict, "REJECT");
    assert_eq!(c[0].path, vec!["FORWARD", "CILIUM_FORWARD"]);
}

#[test]
fn policy_drop() {
    let c = forward_candidates(&pkt("10.6.6.6", 17, 9));
    assert_eq!(c.last().unwrap().rule, "policy DROP");
    assert!(!c.last().unwrap().certain, "the INVALID rule may have matched first");
    assert_eq!(c.len(), 2);
}

#[test]
fn known_conntrack_state_decides() {
    let new = PacketInfo { ct_state: Some(CtState::New), ..pkt("10.6.6.6", 17, 9) };
    let c = forward_candidates(&new);
    assert_eq!(c.len(), 1);
    assert!(c[0].certain && c[0].rule == "policy DROP");
}

#[test]
fn a_sure_return_ends_the_chain_even_after_a_maybe_rule() {
    let s = Save::parse("*filter\n:FORWARD DROP [0:0]\n:X - [0:0]\n-A FORWARD -m mark --mark 0x1 -j DROP\n-A FORWARD -j X\n-A X -j RETURN\n-A X -j DROP\nCOMMIT\n");
    let c = candidates(s.table("filter").unwrap(), "FORWARD", &pkt("10.6.6.6", 17, 9));
    let rules: Vec<&str> = c.iter().map(|c| c.rule.as_str()).collect();
    assert_eq!(rules, vec!["-A FORWARD -m mark --mark 0x1 -j DROP", "policy DROP"]);
}

/// A new TCP flow from a pod out of the node, as the doctor walks it.
fn pod_flow() -> PacketInfo {
    PacketInfo {
        in_iface: Some("lxcab12".into()),
        out_iface: Some("eth0".into()),
        src: "10.220.1.10".parse().ok(),
        dst: "198.51.100.10".parse().ok(),
        proto: Some(6),
        ct_state: Some(CtState::New),
        ..PacketInfo::default()
    }
}

fn run(rules: &str) -> Verdict {
    let rs = Save::parse(&format!("*filter\n:FORWARD DROP [0:0]\n:CILIUM_FORWARD - [0:0]\n:OTHER - [0:0]\n{rules}\nCOMMIT\n"));
    assert!(rs.errors.is_empty(), "{:?}", rs.errors);
    verdict(rs.table("filter").unwrap(), "FORWARD", &pod_flow())
}

#[test]
fn policy_drop_without_rules_drops() {
    assert!(matches!(run(""), Verdict::Drop { by, .. } if by == "policy DROP of FORWARD"));
}

#[test]
fn cilium_feeder_accepts_pod_traffic() {
    let v = run("-A FORWARD -m comment --comment \"cilium-feeder: CILIUM_FORWARD\" -j CILIUM_FORWARD\n-A CILIUM_FORWARD -i lxc+ -m comment --comment \"cilium: cluster->any on lxc+ forward accept\" -j ACCEPT");
    assert!(matches!(v, Verdict::Accept(r) if r.contains("lxc+")));
}

#[test]
fn established_only_and_wrong_interface_do_not_count() {
    let v = run("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A FORWARD -i docker0 -j ACCEPT\n-A FORWARD ! -i lxc+ -j ACCEPT");
    assert!(matches!(v, Verdict::Drop { ref maybe_accepts, .. } if maybe_accepts.is_empty()), "{v:?}");
}

#[test]
fn conditional_accepts_are_reported() {
    let v = run("-A FORWARD -p tcp -m tcp --dport 80 -j ACCEPT");
    assert!(matches!(v, Verdict::Drop { ref maybe_accepts, .. } if maybe_accepts.len() == 1), "{v:?}");
}

#[test]
fn conditional_jumps_report_the_accept_they_lead_to() {
    let v = run("-A FORWARD -m mark --mark 0x1 -j OTHER\n-A OTHER -p tcp --dport 80 -j ACCEPT\n-A OTHER -j ACCEPT\n-A FORWARD -m mark --mark 0x2 -j CILIUM_FORWARD\n-A CILIUM_FORWARD -j DROP");
    assert_eq!(v, Verdict::Drop { by: "policy DROP of FORWARD".into(), maybe_accepts: vec!["-A OTHER -j ACCEPT".into()] });
}

#[test]
fn return_and_goto_and_explicit_drop() {
    assert!(matches!(run("-A FORWARD -j OTHER\n-A OTHER -j RETURN\n-A OTHER -j ACCEPT"), Verdict::Drop { .. }));
    assert!(matches!(run("-A FORWARD -g OTHER\n-A FORWARD -j ACCEPT"), Verdict::Drop { .. }), "goto does not come back");
    assert!(matches!(run("-A FORWARD -j OTHER\n-A FORWARD -j ACCEPT"), Verdict::Accept(_)));
    assert!(matches!(run("-A FORWARD -s 10.220.0.0/16 -j REJECT --reject-with icmp-port-unreachable\n-A FORWARD -j ACCEPT"), Verdict::Drop { by, .. } if by.contains("REJECT")));
    assert!(matches!(run("-A FORWARD -s 10.99.0.0/16 -j DROP\n-A FORWARD -j ACCEPT"), Verdict::Accept(_)));
}

#[test]
fn self_jumping_chain_is_bounded() {
    assert!(matches!(run("-A FORWARD -j OTHER\n-A OTHER -j OTHER"), Verdict::Unknown(_)));
}

/// The issue's scenarios: a DROP behind an ESTABLISHED,RELATED ACCEPT and one behind a negated
/// masked mark match are certain once the drop's state and mark are known.
#[test]
fn marks_and_states_from_the_drop_decide() {
    let s = Save::parse(
        "*filter\n:FORWARD ACCEPT [0:0]\n\
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A FORWARD -m mark ! --mark 0x200/0xf00 -j DROP\n\
-A FORWARD -m connmark --mark 0x5 -j DROP\n\
-A FORWARD -p udp -j DROP\nCOMMIT\n",
    );
    let t = s.table("filter").unwrap();
    let new = |mark, ct_mark| PacketInfo { ct_state: Some(CtState::New), mark: Some(mark), ct_mark: Some(ct_mark), ..pkt("10.6.6.6", 17, 9) };
    let rules = |p: &PacketInfo| candidates(t, "FORWARD", p).into_iter().map(|c| (c.rule, c.certain)).collect::<Vec<_>>();
    assert_eq!(rules(&new(0x100, 0)), [("-A FORWARD -m mark ! --mark 0x200/0xf00 -j DROP".to_string(), true)]);
    assert_eq!(rules(&new(0x1200, 5)), [("-A FORWARD -m connmark --mark 0x5 -j DROP".to_string(), true)]);
    assert_eq!(rules(&new(0x1200, 4)), [("-A FORWARD -p udp -j DROP".to_string(), true)]);
    // Unknown state and mark (what the window had before issue 16, and where the hook is not
    // known, as on 6.1): every DROP is possible, none certain — three candidates for the
    // counters to tell apart, against one certain rule with the facts.
    let unknown = candidates(t, "FORWARD", &pkt("10.6.6.6", 17, 9));
    assert_eq!((unknown.len(), unknown.iter().filter(|c| c.certain).count()), (3, 0));
    assert!(!t.sets_facts());
    assert!(Save::parse("*mangle\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j MARK --set-xmark 0x1/0xff\nCOMMIT\n").table("mangle").unwrap().sets_facts());
}

#[test]
fn nft_state_and_mark_matches() {
    use crate::netfilter::nft::Ruleset;
    let json = r#"{"nftables": [
 {"chain": {"family": "inet", "table": "t", "name": "f", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "t", "chain": "f", "handle": 2, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "t", "chain": "f", "handle": 3, "expr": [{"match": {"op": "!=", "left": {"&": [{"meta": {"key": "mark"}}, 3840]}, "right": 512}}, {"drop": null}]}},
 {"rule": {"family": "inet", "table": "t", "chain": "f", "handle": 4, "expr": [{"match": {"op": "==", "left": {"ct": {"key": "mark"}}, "right": 5}}, {"drop": null}]}},
 {"rule": {"family": "inet", "table": "t", "chain": "f", "handle": 5, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": null}]}}]}"#;
    let rs = Ruleset::parse(json, "");
    let t = rs.table("inet", "t");
    let p = |state, mark, ct_mark| PacketInfo { ct_state: Some(state), mark: Some(mark), ct_mark: Some(ct_mark), ..pkt("10.6.6.6", 17, 9) };
    let first = |p: &PacketInfo| candidates(&t, "f", p).into_iter().map(|c| (c.rule, c.certain)).next();
    assert_eq!(first(&p(CtState::New, 0x100, 0)), Some(("(rule handle 3)".to_string(), true)));
    assert_eq!(first(&p(CtState::New, 0x200, 5)), Some(("(rule handle 4)".to_string(), true)));
    assert_eq!(first(&p(CtState::Invalid, 0x200, 0)), Some(("(rule handle 5)".to_string(), true)));
    assert_eq!(verdict(&t, "f", &p(CtState::Established, 0, 0)), Verdict::Accept("(rule handle 2)".into()));
    assert!(!t.sets_facts());
}
