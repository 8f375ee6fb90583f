//! Walking a packet through a chain the way netfilter does: rules in order, first match wins,
//! jumps come back at the chain's end or a RETURN, gotos return to the caller's caller. One
//! walk serves iptables tables and native nft tables (`Chains`), the capture's "which rule
//! dropped this packet?" (`candidates`) and the doctor's "does a new pod flow get through
//! FORWARD?" (`verdict`).
//!
//! Matches we cannot evaluate (sets, rates; marks and conntrack state where the drop did not
//! tell them) make a rule `Maybe`. The walk goes on past a maybe-rule as if it had not matched, but keeps it on the
//! path, and walks the chain a maybe-jump enters, so callers can tell what else may have
//! happened.
use super::packet::PacketInfo;

/// Jumps followed at most (nftables allows 16; real iptables rulesets stay shallower).
const MAX_DEPTH: usize = 16;
/// Rules evaluated at most per walk (bounds huge rulesets and jump fan-out).
const MAX_STEPS: usize = 100_000;

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

/// What a rule does with a packet it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Accept,
    Drop,
    Reject,
    Return,
    /// Into a user chain (iptables `-j CHAIN`, nft `jump`).
    Jump(String),
    /// Into a user chain with no coming back (iptables `-g`, nft `goto`).
    Goto(String),
    /// Targets that continue evaluation (LOG, MARK, CT…, nft `counter`), or none at all.
    Continue(String),
}

impl Target {
    /// The chain a jump or goto enters.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Self::Jump(c) | Self::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// A rule as the walk sees it.
pub trait Rule {
    fn eval(&self, p: &PacketInfo) -> Truth;
    fn target(&self) -> Target;
    /// As the user's tool prints it.
    fn text(&self) -> &str;
}

/// The chains of one table, by name.
pub trait Chains {
    type Rule: Rule;
    fn rules(&self, chain: &str) -> Option<&[Self::Rule]>;
    /// A base chain's policy, as the tool prints it (`DROP`, `drop`).
    fn policy(&self, chain: &str) -> Option<&str>;
    /// Whether a rule of the table sets a mark or conntrack (then a drop's marks and state
    /// are not what every rule before the drop saw).
    fn sets_facts(&self) -> bool;
}

/// What the caller already knows of the packet's fate in this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Nothing: an ACCEPT that surely matches ends the walk.
    Nothing,
    /// The table dropped it: an ACCEPT that seems to match means the evaluation is wrong
    /// somewhere (e.g. interfaces), so it ends nothing.
    Dropped,
}

/// The walk of one chain: the rules the packet may match there, in order.
#[derive(Debug)]
pub struct Frame<'a, R> {
    pub chain: String,
    pub steps: Vec<Step<'a, R>>,
    pub end: End<'a, R>,
}

/// A rule the packet may match (rules it surely does not match are left out).
#[derive(Debug)]
pub struct Step<'a, R> {
    /// Position in its chain.
    pub index: usize,
    pub rule: &'a R,
    pub target: Target,
    /// The rule's own conditions.
    pub matched: Truth,
    /// Yes when the packet surely gets here and matches: this rule and every jump that led
    /// here matched.
    pub reached: Truth,
    /// The walk of the chain a jump or goto enters.
    pub sub: Option<Frame<'a, R>>,
}

#[derive(Debug)]
pub enum End<'a, R> {
    /// This ACCEPT/DROP/REJECT surely matched (in this chain or one it surely jumped to).
    Verdict(&'a R),
    /// Back to the caller: the chain's end, a RETURN, or the end of a chain gone to. For the
    /// base chain, its policy applies.
    Return,
    /// A bound was hit; says which. The whole walk stops.
    Unknown(String),
}

/// Walks `p` from the chain `base`.
pub fn walk<'a, C: Chains>(chains: &'a C, base: &str, p: &PacketInfo, known: Known) -> Frame<'a, C::Rule> {
    Walker { chains, p, known, steps: 0 }.frame(base, Truth::Yes, 0)
}

struct Walker<'a, 'p, C> {
    chains: &'a C,
    p: &'p PacketInfo,
    known: Known,
    steps: usize,
}

impl<'a, C: Chains> Walker<'a, '_, C> {
    /// `entry`: whether the packet surely gets into this chain.
    fn frame(&mut self, name: &str, entry: Truth, depth: usize) -> Frame<'a, C::Rule> {
        let mut frame = Frame { chain: name.to_string(), steps: Vec::new(), end: End::Return };
        if depth > MAX_DEPTH {
            frame.end = End::Unknown(format!("jumps nested deeper than {MAX_DEPTH} at {name}"));
            return frame;
        }
        let chains = self.chains;
        for (index, rule) in chains.rules(name).unwrap_or_default().iter().enumerate() {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                frame.end = End::Unknown(format!("more than {MAX_STEPS} rules evaluated"));
                return frame;
            }
            let matched = rule.eval(self.p);
            if matched == Truth::No {
                continue;
            }
            let sure = matched == Truth::Yes;
            let reached = if entry == Truth::Yes { matched } else { Truth::Maybe };
            let mut step = Step { index, rule, target: rule.target(), matched, reached, sub: None };
            let end = match &step.target {
                Target::Accept if self.known == Known::Dropped => None,
                Target::Accept | Target::Drop | Target::Reject => sure.then_some(End::Verdict(rule)),
                Target::Return => sure.then_some(End::Return),
                Target::Jump(next) | Target::Goto(next) if chains.rules(next).is_some() => {
                    let sub = self.frame(next, reached, depth + 1);
                    let end = match &sub.end {
                        End::Unknown(why) => Some(End::Unknown(why.clone())),
                        // A maybe-jump's outcome is only possible: go on as if it did not match.
                        _ if !sure => None,
                        End::Verdict(r) => Some(End::Verdict(*r)),
                        End::Return => matches!(step.target, Target::Goto(_)).then_some(End::Return),
                    };
                    step.sub = Some(sub);
                    end
                }
                // Non-terminating targets (LOG, MARK…) and jumps to chains that do not exist.
                _ => None,
            };
            frame.steps.push(step);
            if let Some(end) = end {
                frame.end = end;
                return frame;
            }
        }
        frame
    }
}

/// A rule (or chain policy) that may have dropped the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Chain holding the rule (a user chain for rules reached by a jump).
    pub chain: String,
    /// Chains walked from the base chain to `chain`.
    pub path: Vec<String>,
    /// The rule as the tool prints it, or `policy DROP`.
    pub rule: String,
    pub verdict: String,
    /// The rule's own conditions (and the jumps leading to it) all evaluated true.
    pub definite: bool,
    /// Definite, and every earlier rule was decidedly not a match: no other rule can have done it.
    pub certain: bool,
    /// Position in `chain` (None for a policy).
    pub index: Option<usize>,
}

/// Terminal rules that may have dropped `p`, which the table dropped, entering at `base`, in
/// evaluation order. The first candidate with `certain` set is the answer; otherwise the
/// caller narrows with counters.
pub fn candidates<C: Chains>(chains: &C, base: &str, p: &PacketInfo) -> Vec<Candidate> {
    let mut out = Vec::new();
    if chains.rules(base).is_none() {
        return out;
    }
    let frame = walk(chains, base, p, Known::Dropped);
    let mut certain = true;
    collect_candidates(&frame, &mut Vec::new(), &mut certain, &mut out);
    if matches!(frame.end, End::Return)
        && let Some(policy) = chains.policy(base).filter(|p| p.eq_ignore_ascii_case("drop"))
    {
        // Certain only if every rule on the way was decidedly not a match.
        let certain = certain && out.is_empty();
        out.push(Candidate {
            chain: base.to_string(),
            path: vec![base.to_string()],
            rule: format!("policy {policy}"),
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

/// `certain`: nothing walked so far may have taken the packet elsewhere.
fn collect_candidates<R: Rule>(frame: &Frame<'_, R>, path: &mut Vec<String>, certain: &mut bool, out: &mut Vec<Candidate>) {
    path.push(frame.chain.clone());
    for s in &frame.steps {
        let sure = s.reached == Truth::Yes;
        if matches!(s.target, Target::Drop | Target::Reject) {
            out.push(Candidate {
                chain: frame.chain.clone(),
                path: path.clone(),
                rule: s.rule.text().to_string(),
                verdict: if s.target == Target::Drop { "DROP" } else { "REJECT" }.into(),
                definite: sure,
                certain: *certain && sure,
                index: Some(s.index),
            });
        }
        if let Some(sub) = &s.sub {
            collect_candidates(sub, path, certain, out);
        }
        // A rule that may have matched may have ended or redirected the walk; a sure ACCEPT
        // in a table that dropped the packet means the evaluation is off somewhere.
        *certain &= match s.target {
            Target::Continue(_) => true,
            Target::Accept => !sure,
            _ => sure,
        };
    }
    path.pop();
}

/// Where a packet ends up when nothing is known of its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by this rule (or `policy ACCEPT`).
    Accept(String),
    /// Dropped by this rule (or `policy DROP`); the maybe-ACCEPT rules passed on the way.
    Drop { by: String, maybe_accepts: Vec<String> },
    /// The walk could not finish (depth or step bound); says why.
    Unknown(String),
}

/// Walks `p` from the built-in chain `base`: accepted, or dropped unless one of the rules it
/// may match accepts it.
pub fn verdict<C: Chains>(chains: &C, base: &str, p: &PacketInfo) -> Verdict {
    let frame = walk(chains, base, p, Known::Nothing);
    let mut maybe_accepts = Vec::new();
    collect_maybe_accepts(&frame, &mut maybe_accepts);
    match frame.end {
        End::Unknown(why) => Verdict::Unknown(why),
        End::Verdict(r) if r.target() == Target::Accept => Verdict::Accept(r.text().to_string()),
        End::Verdict(r) => Verdict::Drop { by: r.text().to_string(), maybe_accepts },
        End::Return => match chains.policy(base) {
            Some("DROP") => Verdict::Drop { by: format!("policy DROP of {base}"), maybe_accepts },
            Some(p) => Verdict::Accept(format!("policy {p} of {base}")),
            None => Verdict::Accept(format!("{base} has no policy (not a built-in chain)")),
        },
    }
}

/// ACCEPT rules that may match on the way: maybe-ACCEPTs, and for a maybe-jump the ACCEPT its
/// chain ends at (a maybe-jump whose chain would drop is taken not to match).
fn collect_maybe_accepts<R: Rule>(frame: &Frame<'_, R>, out: &mut Vec<String>) {
    for s in &frame.steps {
        match (&s.sub, s.matched) {
            (Some(sub), Truth::Maybe) => match &sub.end {
                End::Verdict(r) if r.target() == Target::Accept => out.push(r.text().to_string()),
                End::Verdict(_) => {}
                End::Return | End::Unknown(_) => collect_maybe_accepts(sub, out),
            },
            (Some(sub), _) => collect_maybe_accepts(sub, out),
            (None, Truth::Maybe) if s.target == Target::Accept => out.push(s.rule.text().to_string()),
            (None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests;
