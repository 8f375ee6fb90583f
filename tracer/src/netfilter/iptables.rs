//! `iptables-save [-c]` output: tables, chains (policy and counters) and rules, each rule kept as
//! the exact line iptables-save prints (what the user greps for) plus its parsed matches and
//! target:
//!
//! ```text
//! *filter                                   table
//! :FORWARD DROP [12:720]                    chain, policy ("-" for user chains), counters
//! [3:180] -A FORWARD -i lxc+ -j ACCEPT      rule (counters only with `-c`)
//! COMMIT
//! ```
//!
//! Total over any input: lines it cannot read are kept in `errors`, options it cannot evaluate
//! become `Match::Unsupported`, never a panic (the tests throw random and mutated text at it).
mod parse;
#[cfg(test)]
mod tests;

pub use self::parse::tokenize;
use self::parse::{parse_chain, parse_rule};
use super::{
    eval::{self, Target, Truth},
    packet::{Cidr, PacketInfo, PortRange, iface_matches},
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Save {
    /// In the order iptables-save prints them.
    pub tables: Vec<Table>,
    /// (line number, what was wrong) for lines that were not understood.
    pub errors: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// In the order iptables-save prints them.
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `ACCEPT`/`DROP` for built-in chains, None for user chains (`-`).
    pub policy: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule as `iptables-save` prints it, without the `[p:b]` counter prefix.
    pub text: String,
    pub packets: u64,
    pub bytes: u64,
    pub matches: Vec<Match>,
    pub target: Target,
}

/// One condition of a rule; `negated` means a `!` preceded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `-s`: any of the (comma-separated) networks.
    Src { nets: Vec<Cidr>, negated: bool },
    Dst { nets: Vec<Cidr>, negated: bool },
    InIface { name: String, negated: bool },
    OutIface { name: String, negated: bool },
    Proto { proto: u8, negated: bool },
    Sport { ports: Vec<PortRange>, negated: bool },
    Dport { ports: Vec<PortRange>, negated: bool },
    IcmpType { ty: u8, code: Option<u8>, negated: bool },
    /// `--ctstate`/`--state`: any of these states (`NEW`, `RELATED`…).
    CtState { states: Vec<String>, negated: bool },
    /// `-m mark --mark V[/M]`: `skb->mark & M == V`.
    Mark { value: u32, mask: u32, negated: bool },
    /// `-m connmark --mark V[/M]`, `-m conntrack --ctmark V[/M]`: the same on the entry's mark.
    CtMark { value: u32, mask: u32, negated: bool },
    /// Always true (`-m comment`).
    Comment(String),
    /// A match we cannot evaluate (sets, rates, conntrack status…).
    Unsupported(String),
}

impl Save {
    pub fn parse(text: &str) -> Self {
        let mut save = Save::default();
        let mut current: Option<Table> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if let Some(t) = current.take() {
                    save.errors.push((line_no, format!("table {} has no COMMIT", t.name)));
                    save.tables.push(t);
                }
                current = Some(Table { name: name.trim().to_string(), chains: Vec::new() });
            } else if line == "COMMIT" {
                match current.take() {
                    Some(t) => save.tables.push(t),
                    None => save.errors.push((line_no, "COMMIT outside a table".into())),
                }
            } else if let Some(t) = &mut current {
                if let Err(e) = t.add(line) {
                    save.errors.push((line_no, e));
                }
            } else {
                save.errors.push((line_no, "line outside a table".into()));
            }
        }
        if let Some(t) = current.take() {
            save.errors.push((text.lines().count(), format!("table {} has no COMMIT", t.name)));
            save.tables.push(t);
        }
        save
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.table(table)?.chain(chain)
    }

    /// True when nothing was configured: no rules, no user chains, every policy ACCEPT.
    pub fn is_pristine(&self) -> bool {
        self.tables.iter().all(|t| t.chains.iter().all(|c| c.rules.is_empty() && c.policy.as_deref() == Some("ACCEPT")))
    }

    pub fn rule_count(&self) -> usize {
        self.tables.iter().flat_map(|t| &t.chains).map(|c| c.rules.len()).sum()
    }
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The rules of `chain` (none when there is no such chain).
    pub fn rules_in(&self, chain: &str) -> &[Rule] {
        self.chain(chain).map_or(&[], |c| &c.rules)
    }

    /// Rules that jump (or go) to `chain`, with the chain holding each.
    pub fn jumps_to<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = (&'a str, &'a Rule)> + 'a {
        self.chains.iter().flat_map(move |c| c.rules.iter().filter(move |r| r.target.chain() == Some(chain)).map(move |r| (c.name.as_str(), r)))
    }

    /// A chain declaration or a rule of this table.
    fn add(&mut self, line: &str) -> Result<(), String> {
        if let Some(decl) = line.strip_prefix(':') {
            self.chains.push(parse_chain(decl).ok_or("bad chain declaration")?);
            return Ok(());
        }
        let (chain, rule) = parse_rule(line)?;
        let c = self.chains.iter_mut().find(|c| c.name == chain).ok_or_else(|| format!("rule for undeclared chain {chain}"))?;
        c.rules.push(rule);
        Ok(())
    }
}

impl eval::Chains for Table {
    type Rule = Rule;

    fn rules(&self, chain: &str) -> Option<&[Rule]> {
        self.chain(chain).map(|c| c.rules.as_slice())
    }

    fn policy(&self, chain: &str) -> Option<&str> {
        self.chain(chain)?.policy.as_deref()
    }

    fn sets_facts(&self) -> bool {
        self.chains.iter().flat_map(|c| &c.rules).any(Rule::sets_facts)
    }
}

impl eval::Rule for Rule {
    fn eval(&self, p: &PacketInfo) -> Truth {
        Truth::all(self.matches.iter().map(|m| m.eval(p)))
    }

    fn target(&self) -> Target {
        self.target.clone()
    }

    fn text(&self) -> &str {
        &self.text
    }
}

impl Rule {
    /// The rule's `-m comment --comment` texts.
    /// Whether it changes what later rules match on: the packet's or the entry's mark, or its
    /// conntrack (`-j CT`, `NOTRACK`).
    pub fn sets_facts(&self) -> bool {
        matches!(&self.target, Target::Continue(t) if matches!(t.as_str(), "MARK" | "CONNMARK" | "CT" | "NOTRACK"))
    }

    pub fn comments(&self) -> impl Iterator<Item = &str> {
        self.matches.iter().filter_map(|m| match m {
            Match::Comment(c) => Some(c.as_str()),
            _ => None,
        })
    }
}

impl Match {
    fn eval(&self, p: &PacketInfo) -> Truth {
        match self {
            Self::Src { nets, negated } => Truth::of(p.src.map(|a| nets.iter().any(|n| n.contains(a))), *negated),
            Self::Dst { nets, negated } => Truth::of(p.dst.map(|a| nets.iter().any(|n| n.contains(a))), *negated),
            Self::InIface { name, negated } => Truth::of(p.in_iface.as_deref().map(|i| iface_matches(name, i)), *negated),
            Self::OutIface { name, negated } => Truth::of(p.out_iface.as_deref().map(|i| iface_matches(name, i)), *negated),
            Self::Proto { proto, negated } => Truth::of(p.proto.map(|x| x == *proto), *negated),
            Self::Sport { ports, negated } => Truth::of(p.sport.map(|x| ports.iter().any(|r| r.contains(x))), *negated),
            Self::Dport { ports, negated } => Truth::of(p.dport.map(|x| ports.iter().any(|r| r.contains(x))), *negated),
            Self::IcmpType { ty, code, negated } => Truth::of(
                p.icmp_type.map(|t| t == *ty && code.is_none_or(|c| p.icmp_code == Some(c))),
                *negated,
            ),
            Self::CtState { states, negated } => Truth::of(p.ct_state.map(|s| states.iter().any(|x| x == s.name())), *negated),
            Self::Mark { value, mask, negated } => Truth::of(p.mark.map(|m| m & mask == *value), *negated),
            Self::CtMark { value, mask, negated } => Truth::of(p.ct_mark.map(|m| m & mask == *value), *negated),
            Self::Comment(_) => Truth::Yes,
            Self::Unsupported(_) => Truth::Maybe,
        }
    }
}
