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
use super::{
    eval::{self, Target, Truth},
    packet::{Cidr, PacketInfo, PortRange, iface_matches, proto_number},
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
    /// Always true (`-m comment`).
    Comment(String),
    /// A match we cannot evaluate from packet bytes (marks, sets…).
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
            Self::Comment(_) => Truth::Yes,
            Self::Unsupported(_) => Truth::Maybe,
        }
    }
}

/// `FORWARD DROP [12:720]` or `CILIUM_FORWARD - [0:0]`.
fn parse_chain(decl: &str) -> Option<Chain> {
    let mut it = decl.split_whitespace();
    let name = it.next()?.to_string();
    let policy = Some(it.next()?).filter(|p| *p != "-").map(str::to_string);
    let (packets, bytes) = it.next().and_then(parse_counters).unwrap_or_default();
    Some(Chain { name, policy, packets, bytes, rules: Vec::new() })
}

/// `[pkts:bytes]`
fn parse_counters(s: &str) -> Option<(u64, u64)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

/// Splits like iptables-save quotes: `"a b"` is one word, `\"` an escaped quote.
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    has_token = true;
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    out.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if has_token {
        out.push(cur);
    }
    out
}

/// `[p:b] -A CHAIN …` → (chain, rule).
fn parse_rule(line: &str) -> Result<(String, Rule), String> {
    let ((packets, bytes), text) = match line.strip_prefix('[') {
        Some(_) => {
            let (counters, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (parse_counters(counters).ok_or_else(|| format!("bad counters {counters}"))?, rest.trim_start())
        }
        None => ((0, 0), line),
    };
    let words = tokenize(text);
    if words.first().map(String::as_str) != Some("-A") {
        return Err("expected -A CHAIN".into());
    }
    let chain = words.get(1).ok_or("-A without a chain")?.clone();
    let (matches, target) = parse_spec(&words[2..]);
    Ok((chain, Rule { text: text.to_string(), packets, bytes, matches, target }))
}

fn parse_spec(words: &[String]) -> (Vec<Match>, Target) {
    let mut matches = Vec::new();
    let mut target = Target::Continue(String::new());
    let mut i = 0;
    let mut negated = false;
    let arg = |i: usize| words.get(i + 1).cloned().unwrap_or_default();
    while i < words.len() {
        let w = words[i].as_str();
        let mut skip = 2;
        match w {
            "!" => {
                negated = true;
                i += 1;
                continue;
            }
            "-s" | "--source" | "-d" | "--destination" => {
                let a = arg(i);
                matches.push(match Cidr::parse_list(&a) {
                    Some(nets) if matches!(w, "-s" | "--source") => Match::Src { nets, negated },
                    Some(nets) => Match::Dst { nets, negated },
                    None => Match::Unsupported(format!("{w} {a}")),
                });
            }
            "-i" | "--in-interface" => matches.push(Match::InIface { name: arg(i), negated }),
            "-o" | "--out-interface" => matches.push(Match::OutIface { name: arg(i), negated }),
            "-p" | "--protocol" => {
                let a = arg(i);
                match proto_number(&a) {
                    Some(0) => {}
                    Some(proto) => matches.push(Match::Proto { proto, negated }),
                    None => matches.push(Match::Unsupported(format!("-p {a}"))),
                }
            }
            "-m" | "--match" => {
                // The module name only selects option parsing; its options follow.
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                matches.push(port_match(&arg(i), negated, true));
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                matches.push(port_match(&arg(i), negated, false));
            }
            "--icmp-type" | "--icmpv6-type" => {
                let a = arg(i);
                matches.push(icmp_match(&a, negated).unwrap_or(Match::Unsupported(format!("{w} {a}"))));
            }
            "--ctstate" | "--state" => matches.push(Match::CtState { states: arg(i).split(',').map(str::to_string).collect(), negated }),
            "--comment" => matches.push(Match::Comment(arg(i))),
            "-j" | "--jump" => {
                target = target_of(&arg(i));
                // Target options (--reject-with …) follow; they do not matter for the verdict.
                i = words.len();
                continue;
            }
            "-g" | "--goto" => {
                target = Target::Goto(arg(i));
                i = words.len();
                continue;
            }
            "-f" | "--fragment" => {
                matches.push(Match::Unsupported(w.to_string()));
                skip = 1;
            }
            other => {
                // Unknown option: keep it (and its value, if it has one) as unsupported.
                let value = words.get(i + 1).filter(|v| !v.starts_with('-') && *v != "!");
                if value.is_none() {
                    skip = 1;
                }
                matches.push(Match::Unsupported(match value {
                    Some(v) => format!("{other} {v}"),
                    None => other.to_string(),
                }));
            }
        }
        negated = false;
        i += skip;
    }
    (matches, target)
}

fn target_of(name: &str) -> Target {
    match name {
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        "REJECT" => Target::Reject,
        "RETURN" => Target::Return,
        "" => Target::Continue(String::new()),
        n if n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && is_extension_target(n) =>
        {
            Target::Continue(n.to_string())
        }
        n => Target::Jump(n.to_string()),
    }
}

/// Extension targets that do not end evaluation (they are uppercase like user chains, so they
/// are named here; anything else uppercase is taken for a user chain).
fn is_extension_target(n: &str) -> bool {
    matches!(
        n,
        "LOG" | "NFLOG" | "ULOG" | "MARK" | "CONNMARK" | "CT" | "NOTRACK" | "TRACE" | "TOS" | "DSCP" | "TTL" | "HL"
            | "TCPMSS" | "CLASSIFY" | "CHECKSUM" | "AUDIT" | "SECMARK" | "CONNSECMARK" | "IDLETIMER" | "LED"
            | "SNAT" | "DNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP" | "TPROXY" | "NFQUEUE" | "SET" | "TEE"
    )
}

fn port_match(spec: &str, negated: bool, dst: bool) -> Match {
    let ports: Option<Vec<PortRange>> = spec.split(',').map(PortRange::parse).collect();
    match ports {
        Some(ports) if dst => Match::Dport { ports, negated },
        Some(ports) => Match::Sport { ports, negated },
        None => Match::Unsupported(format!("port {spec}")),
    }
}

fn icmp_match(spec: &str, negated: bool) -> Option<Match> {
    let (ty, code) = match spec.split_once('/') {
        Some((t, c)) => (t.parse().ok()?, Some(c.parse().ok()?)),
        None => match spec {
            "echo-reply" | "pong" => (0, None),
            "destination-unreachable" => (3, None),
            "echo-request" | "ping" => (8, None),
            "time-exceeded" => (11, None),
            t => (t.parse().ok()?, None),
        },
    };
    Some(Match::IcmpType { ty, code, negated })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [5:300]
:FORWARD DROP [3:180]
:OUTPUT ACCEPT [0:0]
:CILIUM_FORWARD - [0:0]
[7:420] -A FORWARD -m comment --comment "cilium-feeder: CILIUM_FORWARD" -j CILIUM_FORWARD
[2:120] -A FORWARD -d 10.1.2.3/32 -p udp -m udp --dport 9999 -j DROP
[0:0] -A CILIUM_FORWARD ! -s 10.0.0.0/8 -p tcp -m multiport --dports 80,443,8000:8080 -j REJECT --reject-with tcp-reset
[0:0] -A CILIUM_FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
"#;

    #[test]
    fn parses_tables_chains_rules() {
        let s = Save::parse(SAVE);
        let fwd = s.chain("filter", "FORWARD").unwrap();
        assert_eq!(fwd.policy.as_deref(), Some("DROP"));
        assert_eq!(fwd.packets, 3);
        assert_eq!(fwd.rules.len(), 2);
        assert_eq!(fwd.rules[1].text, "-A FORWARD -d 10.1.2.3/32 -p udp -m udp --dport 9999 -j DROP");
        assert_eq!(fwd.rules[1].packets, 2);
        assert_eq!(fwd.rules[1].target, Target::Drop);
        assert_eq!(fwd.rules[0].target, Target::Jump("CILIUM_FORWARD".into()));
        assert_eq!(fwd.rules[0].matches, vec![Match::Comment("cilium-feeder: CILIUM_FORWARD".into())]);
        let cf = s.chain("filter", "CILIUM_FORWARD").unwrap();
        assert_eq!(cf.policy, None);
        assert!(matches!(cf.rules[0].matches[0], Match::Src { negated: true, .. }));
        assert!(matches!(&cf.rules[0].matches[2], Match::Dport { ports, .. } if ports.len() == 3));
        assert_eq!(cf.rules[0].target, Target::Reject);
        // Conntrack state is its own match now (evaluated when the flow's state is known).
        assert!(matches!(&cf.rules[1].matches[0], Match::CtState { states, negated: false } if states == &["INVALID"]));
    }

    const SAMPLE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Fri Nov 27 21:29:28 2026
*filter
:INPUT ACCEPT [10:600]
:FORWARD DROP [3:180]
:OUTPUT ACCEPT [0:0]
:CILIUM_FORWARD - [0:0]
[5:300] -A FORWARD -m comment --comment "cilium-feeder: CILIUM_FORWARD" -j CILIUM_FORWARD
-A CILIUM_FORWARD -o cilium_host -m comment --comment "cilium: any->cluster on cilium_host forward accept" -j ACCEPT
-A CILIUM_FORWARD ! -i lxc+ -s 10.0.0.0/8,192.168.1.1 -p tcp -m tcp --dport 80 -j ACCEPT
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m comment --comment "a \"quoted\" word" -g CILIUM_FORWARD
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
COMMIT
"#;

    #[test]
    fn parses_tables_chains_and_rules() {
        let rs = Save::parse(SAMPLE);
        assert!(rs.errors.is_empty(), "{:?}", rs.errors);
        assert_eq!(rs.tables.len(), 2);
        let f = rs.table("filter").unwrap();
        assert_eq!(f.chain("FORWARD").unwrap().policy.as_deref(), Some("DROP"));
        assert_eq!(f.chain("CILIUM_FORWARD").unwrap().policy, None);
        assert_eq!(rs.rule_count(), 5);
        let (fwd, cf) = (f.rules_in("FORWARD"), f.rules_in("CILIUM_FORWARD"));
        let feeder = &fwd[0];
        assert_eq!((feeder.packets, feeder.bytes), (5, 300));
        assert_eq!(feeder.comments().collect::<Vec<_>>(), vec!["cilium-feeder: CILIUM_FORWARD"]);
        assert_eq!(feeder.target.chain(), Some("CILIUM_FORWARD"));
        assert!(feeder.text.starts_with("-A FORWARD"));
        assert!(feeder.matches.iter().all(|m| matches!(m, Match::Comment(_))));
        let r = &cf[1];
        assert_eq!(r.matches[0], Match::InIface { name: "lxc+".into(), negated: true });
        assert_eq!(r.matches[1], Match::Src { nets: Cidr::parse_list("10.0.0.0/8,192.168.1.1").unwrap(), negated: false });
        assert_eq!(r.matches[2], Match::Proto { proto: 6, negated: false });
        assert_eq!(r.matches[3..], [Match::Dport { ports: vec![PortRange { lo: 80, hi: 80 }], negated: false }]);
        assert_eq!(fwd[1].matches, vec![Match::CtState { states: vec!["RELATED".into(), "ESTABLISHED".into()], negated: false }]);
        assert_eq!(fwd[2].comments().collect::<Vec<_>>(), vec![r#"a "quoted" word"#]);
        assert_eq!(fwd[2].target, Target::Goto("CILIUM_FORWARD".into()));
        assert_eq!(f.jumps_to("CILIUM_FORWARD").count(), 2);
        assert!(!rs.is_pristine());
        assert!(Save::parse("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").is_pristine());
    }

    #[test]
    fn reports_bad_lines_without_failing() {
        let rs = Save::parse("-A FORWARD -j DROP\n*filter\n:\nbogus\n[1:x] -A X\n-A\n*nat\n");
        assert_eq!(rs.tables.len(), 2);
        assert_eq!(rs.errors.len(), 7, "{:?}", rs.errors);
    }

    #[test]
    fn tokenizer_handles_quotes_and_escapes() {
        assert_eq!(tokenize(r#"-m comment --comment "a \"b\" c" -j X"#), vec!["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]);
        assert_eq!(tokenize(r#"--comment """#), vec!["--comment", ""]);
    }

    #[test]
    fn never_panics_on_garbage() {
        for s in ["*", ":", "[", "[1:2]", "[x:y] -A", "-A", "-A X ! ! -p", "*t\n:C\n-A C -p tcp --dport", "*t\n:C - [1:2]\n[1:2] -A C -s 300.1.1.1 -j"] {
            let _ = Save::parse(s);
        }
    }

    /// xorshift: deterministic pseudo-random input without a dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[expect(clippy::cast_possible_truncation, reason = "a remainder below n always fits usize")]
    fn below(state: &mut u64, n: usize) -> usize {
        (next(state) % n as u64) as usize
    }

    #[test]
    fn never_panics_on_random_or_mutated_input() {
        let alphabet: Vec<char> = "*:-A!\"\\[]0123456789 \n\t/+,.jgimsdopCOMMITFORWARD#é\u{0}".chars().collect();
        let mut s = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            let len = below(&mut s, 200);
            let text: String = (0..len).map(|_| alphabet[below(&mut s, alphabet.len())]).collect();
            let _ = Save::parse(&text);
        }
        let base: Vec<char> = SAMPLE.chars().collect();
        let p = PacketInfo { src: "10.0.0.1".parse().ok(), dst: "10.0.0.2".parse().ok(), in_iface: Some("lxc1".into()), ..PacketInfo::default() };
        for _ in 0..3000 {
            let mut m = base.clone();
            for _ in 0..(next(&mut s) % 8) {
                let at = below(&mut s, m.len());
                match next(&mut s) % 3 {
                    0 => {
                        m.remove(at);
                    }
                    1 => m.insert(at, alphabet[below(&mut s, alphabet.len())]),
                    _ => m.truncate(at),
                }
                if m.is_empty() {
                    break;
                }
            }
            let text: String = m.into_iter().collect();
            let rs = Save::parse(&text);
            for t in &rs.tables {
                for c in &t.chains {
                    let _ = eval::candidates(t, &c.name, &p);
                    let _ = eval::verdict(t, &c.name, &p);
                }
            }
        }
    }
}
