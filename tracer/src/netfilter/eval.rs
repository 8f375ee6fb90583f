//! Which iptables rule dropped a packet: walk the chain the packet died in, from its base
//! chain through jumps, evaluating every match we understand against the packet bytes. Matches
//! we cannot evaluate (conntrack state, marks…) make a rule a *possible* match; the rule
//! counters of the capture window then single it out.
use super::{
    iptables::{Chain, Save, Target},
    packet::PacketInfo,
};

/// Whether a rule (or one of its conditions) matches a packet: `Maybe` when it depends on
/// something the packet info does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    Yes,
    No,
    Maybe,
}

impl Truth {
    /// A condition that is `hit` (None: cannot tell), inverted by a `!`.
    pub fn of(hit: Option<bool>, negated: bool) -> Self {
        match hit {
            Some(b) if b != negated => Self::Yes,
            Some(_) => Self::No,
            None => Self::Maybe,
        }
    }

    /// All conditions together: No as soon as one is No, else Maybe if any is.
    pub fn all(conditions: impl IntoIterator<Item = Self>) -> Self {
        let mut t = Self::Yes;
        for c in conditions {
            match c {
                Self::No => return Self::No,
                Self::Maybe => t = Self::Maybe,
                Self::Yes => {}
            }
        }
        t
    }
}

/// A rule (or chain policy) that may have dropped the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Chain holding the rule (a user chain for rules reached by a jump).
    pub chain: String,
    /// Chains walked from the base chain to `chain`.
    pub path: Vec<String>,
    /// The iptables-save line, or `policy DROP`.
    pub rule: String,
    pub verdict: String,
    /// The rule's own conditions (and the jumps leading to it) all evaluated true.
    pub definite: bool,
    /// Definite, and every earlier rule was decidedly not a match: no other rule can have done it.
    pub certain: bool,
    /// Position in `chain` (None for a policy).
    pub index: Option<usize>,
}

const MAX_DEPTH: usize = 16;

/// Terminal rules that may have dropped `p` in `table`/`base`, in evaluation order. The first
/// candidate with `certain` set is the answer; otherwise the caller narrows with counters.
pub fn candidates(save: &Save, table: &str, base: &str, p: &PacketInfo) -> Vec<Candidate> {
    let mut out = Vec::new();
    let Some(chain) = save.chain(table, base) else { return out };
    let mut path = vec![base.to_string()];
    let end = walk(save, table, chain, p, (true, true), &mut path, &mut out, 0);
    if let Walk::FellThrough { certain } = end
        && chain.policy.as_deref() == Some("DROP")
    {
        // Certain only if every rule on the way was decidedly not a match.
        let certain = certain && out.is_empty();
        out.push(Candidate {
            chain: base.to_string(),
            path: vec![base.to_string()],
            rule: "policy DROP".into(),
            verdict: "DROP".into(),
            definite: certain,
            certain,
            index: None,
        });
    }
    // Only candidates up to the first certain one can have acted.
    if let Some(i) = out.iter().position(|c| c.certain) {
        out.truncate(i + 1);
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// Certainly decided (a certain terminal verdict was reached).
    Decided,
    /// Reached the end of the chain (or a RETURN); `certain` when no possible match was skipped.
    FellThrough { certain: bool },
}

/// `definite`: the jumps that led here all evaluated true; `certain`: additionally, nothing
/// before could have matched.
#[expect(clippy::too_many_arguments, reason = "recursive walk state")]
fn walk(
    save: &Save,
    table: &str,
    chain: &Chain,
    p: &PacketInfo,
    (definite, certain): (bool, bool),
    path: &mut Vec<String>,
    out: &mut Vec<Candidate>,
    depth: usize,
) -> Walk {
    if depth > MAX_DEPTH {
        return Walk::FellThrough { certain: false };
    }
    let mut certain = certain;
    for (i, rule) in chain.rules.iter().enumerate() {
        let t = rule.eval(p);
        if t == Truth::No {
            continue;
        }
        let sure = certain && t == Truth::Yes;
        let rule_definite = definite && t == Truth::Yes;
        match &rule.target {
            Target::Drop | Target::Reject => {
                out.push(Candidate {
                    chain: chain.name.clone(),
                    path: path.clone(),
                    rule: rule.text.clone(),
                    verdict: if rule.target == Target::Drop { "DROP" } else { "REJECT" }.into(),
                    definite: rule_definite,
                    certain: sure,
                    index: Some(i),
                });
                // A rule that surely matches ends the walk: nothing after it can act.
                if rule_definite {
                    return Walk::Decided;
                }
                // It may have dropped the packet: nothing after it is certain any more.
                certain = false;
            }
            // The packet died in this table, so a sure ACCEPT cannot have matched: the
            // evaluation is wrong somewhere (e.g. interfaces); stop claiming certainty.
            Target::Accept => {
                if sure {
                    certain = false;
                }
            }
            Target::Return => {
                if sure {
                    return Walk::FellThrough { certain };
                }
                certain = false;
            }
            Target::Jump(next) | Target::Goto(next) => {
                if let Some(sub) = save.chain(table, next) {
                    path.push(next.clone());
                    let r = walk(save, table, sub, p, (rule_definite, sure), path, out, depth + 1);
                    path.pop();
                    match r {
                        Walk::Decided => return r,
                        Walk::FellThrough { certain: sub_certain } => {
                            if matches!(rule.target, Target::Goto(_)) && sure {
                                return Walk::FellThrough { certain: sub_certain };
                            }
                            certain &= sub_certain;
                        }
                    }
                }
                if t == Truth::Maybe {
                    certain = false;
                }
            }
            Target::Continue(_) => {}
        }
    }
    Walk::FellThrough { certain }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn exact_rule_in_base_chain_after_maybe_rule() {
        let s = Save::parse(SAVE);
        let c = candidates(&s, "filter", "FORWARD", &pkt("10.9.9.9", 17, 53));
        // The conntrack rule in the user chain is possible, then the matching DROP: definite,
        // but not certain (the counters must rule the first one out).
        assert_eq!(c.len(), 2);
        assert!(!c[0].definite && c[0].chain == "CILIUM_FORWARD");
        assert!(c[1].definite && !c[1].certain && c[1].rule.contains("--dport 53 -j DROP"));
    }

    #[test]
    fn exact_rule_in_jumped_chain() {
        let s = Save::parse(SAVE);
        let c = candidates(&s, "filter", "FORWARD", &pkt("10.7.7.7", 6, 80));
        assert_eq!(c.len(), 1);
        assert!(c[0].certain);
        assert_eq!(c[0].verdict, "REJECT");
        assert_eq!(c[0].path, vec!["FORWARD", "CILIUM_FORWARD"]);
    }

    #[test]
    fn policy_drop() {
        let s = Save::parse(SAVE);
        let c = candidates(&s, "filter", "FORWARD", &pkt("10.6.6.6", 17, 9));
        assert_eq!(c.last().unwrap().rule, "policy DROP");
        assert!(!c.last().unwrap().certain, "the INVALID rule may have matched first");
        assert_eq!(c.len(), 2);
    }
}
