//! Walks a synthetic new pod flow through a dumped `filter/FORWARD` chain, first match wins,
//! following jumps and gotos: does it reach an ACCEPT, or a DROP/REJECT or a DROP policy?
//! Matches the walker cannot evaluate (ports, marks, sets…) make a rule "maybe": a maybe-ACCEPT
//! is remembered (the path is then only conditional), a maybe-DROP is passed over.
use crate::netfilter::{
    eval::Truth,
    iptables::{Table, Target},
    packet::PacketInfo,
};

/// Jumps followed at most (iptables itself allows deeper, but real rulesets stay shallow).
const MAX_DEPTH: usize = 16;
/// Rules evaluated at most per walk (bounds cyclic or huge rulesets).
const MAX_STEPS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by this rule (or `policy ACCEPT`).
    Accept(String),
    /// Dropped by this rule (or `policy DROP`); the maybe-ACCEPT rules passed on the way.
    Drop { by: String, maybe_accepts: Vec<String> },
    /// The walk could not finish (depth or step bound); says why.
    Unknown(String),
}

enum Flow {
    /// Fell off the end of a user chain (or RETURN): continue in the caller.
    Return,
    Done(Verdict),
}

struct Walk<'a> {
    table: &'a Table,
    packet: &'a PacketInfo,
    steps: usize,
    maybe_accepts: Vec<String>,
}

/// Evaluates `packet` from the built-in chain `chain` of `table`.
pub fn evaluate(table: &Table, chain: &str, packet: &PacketInfo) -> Verdict {
    let mut w = Walk { table, packet, steps: 0, maybe_accepts: Vec::new() };
    match w.chain(chain, 0) {
        Flow::Done(v) => v,
        Flow::Return => match table.chain(chain).and_then(|c| c.policy.as_deref()) {
            Some("DROP") => Verdict::Drop { by: format!("policy DROP of {chain}"), maybe_accepts: w.maybe_accepts },
            Some(p) => Verdict::Accept(format!("policy {p} of {chain}")),
            None => Verdict::Accept(format!("{chain} has no policy (not a built-in chain)")),
        },
    }
}

impl Walk<'_> {
    fn chain(&mut self, name: &str, depth: usize) -> Flow {
        if depth > MAX_DEPTH {
            return Flow::Done(Verdict::Unknown(format!("jumps nested deeper than {MAX_DEPTH} at {name}")));
        }
        for r in self.table.rules_in(name) {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Flow::Done(Verdict::Unknown(format!("more than {MAX_STEPS} rules evaluated")));
            }
            let m = r.eval(self.packet);
            if m == Truth::No {
                continue;
            }
            match &r.target {
                Target::Accept if m == Truth::Yes => return Flow::Done(Verdict::Accept(r.text.clone())),
                Target::Accept => self.maybe_accepts.push(r.text.clone()),
                Target::Drop | Target::Reject if m == Truth::Yes => {
                    return Flow::Done(Verdict::Drop { by: r.text.clone(), maybe_accepts: std::mem::take(&mut self.maybe_accepts) });
                }
                Target::Return if m == Truth::Yes => return Flow::Return,
                Target::Jump(t) | Target::Goto(t) if self.table.chain(t).is_some() => {
                    let before = self.maybe_accepts.len();
                    let sub = self.chain(t, depth + 1);
                    match (sub, m) {
                        (Flow::Done(Verdict::Accept(by)), Truth::Maybe) => {
                            self.maybe_accepts.truncate(before);
                            self.maybe_accepts.push(by);
                        }
                        // A conditional jump that would drop: assume it does not match.
                        (Flow::Done(Verdict::Drop { .. }), Truth::Maybe) => self.maybe_accepts.truncate(before),
                        (Flow::Done(v), _) => return Flow::Done(v),
                        (Flow::Return, Truth::Yes) if matches!(r.target, Target::Goto(_)) => return Flow::Return,
                        (Flow::Return, _) => {}
                    }
                }
                // Non-terminating targets (LOG, MARK, CT, …) and unknown ones: go on.
                _ => {}
            }
        }
        Flow::Return
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::{iptables::Save, packet::CtState};

    fn pkt() -> PacketInfo {
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
        evaluate(rs.table("filter").unwrap(), "FORWARD", &pkt())
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
}
