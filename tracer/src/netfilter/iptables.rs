//! `iptables-save -c` output: tables, chains (policy and counters) and rules, each rule kept as
//! the exact line iptables-save prints (what the user greps for) plus its parsed matches.
//! Never panics on any input: unknown syntax becomes `Match::Unsupported`.
use std::collections::BTreeMap;

use super::packet::{Cidr, PortRange};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Save {
    pub tables: BTreeMap<String, Table>,
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
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule as `iptables-save` prints it, without the `[p:b]` counter prefix.
    pub text: String,
    pub packets: u64,
    pub matches: Vec<Match>,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Accept,
    Drop,
    Reject,
    Return,
    /// `-j CHAIN` (or an extension target we do not model, which never ends evaluation).
    Jump(String),
    Goto(String),
    /// Extension targets that continue evaluation (LOG, MARK, CT…), or none at all.
    Continue(String),
}

/// One condition of a rule; `negated` means a `!` preceded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Src { cidr: Cidr, negated: bool },
    Dst { cidr: Cidr, negated: bool },
    InIface { name: String, negated: bool },
    OutIface { name: String, negated: bool },
    Proto { proto: u8, negated: bool },
    Sport { ports: Vec<PortRange>, negated: bool },
    Dport { ports: Vec<PortRange>, negated: bool },
    IcmpType { ty: u8, code: Option<u8>, negated: bool },
    /// Always true (`-m comment`).
    Comment(String),
    /// A match we cannot evaluate from packet bytes (conntrack state, marks, sets…).
    Unsupported(String),
}

impl Save {
    pub fn parse(text: &str) -> Self {
        let mut save = Save::default();
        let mut table: Option<Table> = None;
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if let Some(t) = table.take() {
                    save.tables.insert(t.name.clone(), t);
                }
                table = Some(Table { name: name.to_string(), chains: Vec::new() });
            } else if line == "COMMIT" {
                if let Some(t) = table.take() {
                    save.tables.insert(t.name.clone(), t);
                }
            } else if let Some(rest) = line.strip_prefix(':') {
                if let Some(t) = &mut table {
                    t.chains.push(parse_chain_header(rest));
                }
            } else if let Some(t) = &mut table
                && let Some((chain, rule)) = parse_rule(line)
                && let Some(c) = t.chains.iter_mut().find(|c| c.name == chain)
            {
                c.rules.push(rule);
            }
        }
        if let Some(t) = table.take() {
            save.tables.insert(t.name.clone(), t);
        }
        save
    }

    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.tables.get(table)?.chains.iter().find(|c| c.name == chain)
    }
}

/// `FORWARD DROP [12:720]` or `CILIUM_FORWARD - [0:0]`.
fn parse_chain_header(rest: &str) -> Chain {
    let mut it = rest.split_whitespace();
    let name = it.next().unwrap_or_default().to_string();
    let policy = it.next().filter(|p| *p != "-").map(str::to_string);
    let packets = it.next().and_then(parse_counters).map_or(0, |c| c.0);
    Chain { name, policy, packets, rules: Vec::new() }
}

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
fn parse_rule(line: &str) -> Option<(String, Rule)> {
    let (packets, text) = match line.strip_prefix('[') {
        Some(_) => {
            let (counters, rest) = line.split_once(' ')?;
            (parse_counters(counters)?.0, rest.trim_start())
        }
        None => (0, line),
    };
    let words = tokenize(text);
    if words.first().map(String::as_str) != Some("-A") {
        return None;
    }
    let chain = words.get(1)?.clone();
    let (matches, target) = parse_spec(&words[2..]);
    Some((chain, Rule { text: text.to_string(), packets, matches, target }))
}

fn parse_spec(words: &[String]) -> (Vec<Match>, Target) {
    let mut matches = Vec::new();
    let mut target = Target::Continue(String::new());
    let mut proto: Option<u8> = None;
    let mut i = 0;
    let mut negate = false;
    let arg = |i: usize| words.get(i + 1).cloned().unwrap_or_default();
    while i < words.len() {
        let w = words[i].as_str();
        let mut skip = 2;
        match w {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-s" | "--source" | "-d" | "--destination" => {
                let a = arg(i);
                let m = match Cidr::parse(&a) {
                    Some(cidr) if w.starts_with("-s") || w == "--source" => Match::Src { cidr, negated: negate },
                    Some(cidr) => Match::Dst { cidr, negated: negate },
                    None => Match::Unsupported(format!("{w} {a}")),
                };
                matches.push(m);
            }
            "-i" | "--in-interface" => matches.push(Match::InIface { name: arg(i), negated: negate }),
            "-o" | "--out-interface" => matches.push(Match::OutIface { name: arg(i), negated: negate }),
            "-p" | "--protocol" => {
                let a = arg(i);
                match proto_number(&a) {
                    Some(0) => {}
                    Some(p) => {
                        proto = Some(p);
                        matches.push(Match::Proto { proto: p, negated: negate });
                    }
                    None => matches.push(Match::Unsupported(format!("-p {a}"))),
                }
            }
            "-m" | "--match" => {
                // The module name only selects option parsing; its options follow.
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                matches.push(port_match(&arg(i), negate, true));
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                matches.push(port_match(&arg(i), negate, false));
            }
            "--icmp-type" | "--icmpv6-type" => {
                let a = arg(i);
                matches.push(icmp_match(&a, negate).unwrap_or(Match::Unsupported(format!("{w} {a}"))));
            }
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
        negate = false;
        i += skip;
    }
    // Port matches without -p never parse in iptables; keep proto for completeness.
    let _ = proto;
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

fn proto_number(p: &str) -> Option<u8> {
    match p.to_ascii_lowercase().as_str() {
        "all" | "0" => Some(0),
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "ipv6-icmp" | "icmpv6" => Some(58),
        "sctp" => Some(132),
        "gre" => Some(47),
        "esp" => Some(50),
        "ah" => Some(51),
        n => n.parse().ok(),
    }
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
        assert!(matches!(&cf.rules[1].matches[0], Match::Unsupported(s) if s.starts_with("--ctstate")));
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
}
