//! A parser for the `iptables-save` / `ip6tables-save` text format:
//!
//! ```text
//! *filter                                   table
//! :FORWARD DROP [12:720]                    chain, policy ("-" for user chains), counters
//! [3:180] -A FORWARD -i lxc+ -j ACCEPT      rule (counters only with `-c`)
//! COMMIT
//! ```
//!
//! Total over any input: lines it cannot read are kept in `errors`, never a panic (the tests
//! throw random and mutated text at it).
use std::net::IpAddr;

#[derive(Debug, Default, Clone)]
pub struct Ruleset {
    pub tables: Vec<Table>,
    /// (line number, what was wrong) for lines that were not understood.
    pub errors: Vec<(usize, String)>,
}

#[derive(Debug, Default, Clone)]
pub struct Table {
    pub name: String,
    pub chains: Vec<Chain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `ACCEPT`/`DROP` for built-in chains, `None` for user chains (`-`).
    pub policy: Option<String>,
}

/// A negatable match argument such as `! -i lxc+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub value: String,
    pub negated: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub chain: String,
    /// The rule as iptables-save printed it, without counters.
    pub text: String,
    /// `-j TARGET` or `-g TARGET`.
    pub target: Option<String>,
    /// True for `-g` (goto: no return to the calling chain).
    pub goto: bool,
    pub comments: Vec<String>,
    pub in_iface: Option<Arg>,
    pub out_iface: Option<Arg>,
    pub src: Option<Arg>,
    pub dst: Option<Arg>,
    pub proto: Option<Arg>,
    /// `--ctstate`/`--state` value, e.g. `RELATED,ESTABLISHED`.
    pub state: Option<Arg>,
    /// Every option the typed fields above do not cover (e.g. `--dport`, `-m mark`).
    pub other_options: Vec<String>,
    pub counters: Option<(u64, u64)>,
}

impl Ruleset {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// True when nothing was configured: no rules, no user chains, every policy ACCEPT.
    pub fn is_pristine(&self) -> bool {
        self.tables.iter().all(|t| t.rules.is_empty() && t.chains.iter().all(|c| c.policy.as_deref() == Some("ACCEPT")))
    }

    pub fn rule_count(&self) -> usize {
        self.tables.iter().map(|t| t.rules.len()).sum()
    }
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Rules that jump (or go) to `chain`.
    pub fn jumps_to<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.target.as_deref() == Some(chain))
    }
}

/// Parses a whole dump.
pub fn parse(text: &str) -> Ruleset {
    let mut rs = Ruleset::default();
    let mut current: Option<Table> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if let Some(t) = current.take() {
                rs.errors.push((line_no, format!("table {} has no COMMIT", t.name)));
                rs.tables.push(t);
            }
            current = Some(Table { name: name.trim().to_string(), ..Table::default() });
            continue;
        }
        if line == "COMMIT" {
            match current.take() {
                Some(t) => rs.tables.push(t),
                None => rs.errors.push((line_no, "COMMIT outside a table".into())),
            }
            continue;
        }
        let Some(table) = current.as_mut() else {
            rs.errors.push((line_no, "line outside a table".into()));
            continue;
        };
        if let Some(decl) = line.strip_prefix(':') {
            match parse_chain(decl) {
                Some(c) => table.chains.push(c),
                None => rs.errors.push((line_no, "bad chain declaration".into())),
            }
            continue;
        }
        match parse_rule(line) {
            Ok(r) => table.rules.push(r),
            Err(e) => rs.errors.push((line_no, e)),
        }
    }
    if let Some(t) = current.take() {
        rs.errors.push((text.lines().count(), format!("table {} has no COMMIT", t.name)));
        rs.tables.push(t);
    }
    rs
}

fn parse_chain(decl: &str) -> Option<Chain> {
    let mut it = decl.split_whitespace();
    let name = it.next()?.to_string();
    let policy = match it.next()? {
        "-" => None,
        p => Some(p.to_string()),
    };
    Some(Chain { name, policy })
}

/// `[pkts:bytes]`
fn parse_counters(tok: &str) -> Option<(u64, u64)> {
    let inner = tok.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

fn parse_rule(line: &str) -> Result<Rule, String> {
    let mut tokens = tokenize(line);
    let mut rule = Rule::default();
    if tokens.first().is_some_and(|t| t.starts_with('[')) {
        let c = tokens.remove(0);
        rule.counters = Some(parse_counters(&c).ok_or_else(|| format!("bad counters {c}"))?);
    }
    if tokens.first().map(String::as_str) != Some("-A") {
        return Err("expected -A CHAIN".into());
    }
    rule.chain = tokens.get(1).cloned().ok_or("-A without a chain")?;
    rule.text = line.find("-A").map_or_else(|| line.to_string(), |i| line[i..].to_string());
    let mut i = 2;
    let mut negate = false;
    while i < tokens.len() {
        let tok = tokens[i].as_str();
        let next = tokens.get(i + 1).cloned();
        let arg = |v: Option<String>, n: bool| v.map(|value| Arg { value, negated: n });
        let mut consumed = 2;
        match tok {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-j" | "--jump" => rule.target = next,
            "-g" | "--goto" => {
                rule.target = next;
                rule.goto = true;
            }
            "-i" | "--in-interface" => rule.in_iface = arg(next, negate),
            "-o" | "--out-interface" => rule.out_iface = arg(next, negate),
            "-s" | "--source" => rule.src = arg(next, negate),
            "-d" | "--destination" => rule.dst = arg(next, negate),
            "-p" | "--protocol" => rule.proto = arg(next, negate),
            "--comment" => rule.comments.extend(next),
            "--ctstate" | "--state" => rule.state = arg(next, negate),
            "-m" | "--match" => {
                // Module loads carry no condition themselves; their options follow.
                if !matches!(next.as_deref(), Some("comment" | "conntrack" | "state")) {
                    rule.other_options.push(format!("-m {}", next.unwrap_or_default()));
                }
            }
            t if t.starts_with('-') => {
                // An option of some match or target; its values run to the next option.
                let mut text = if negate { format!("! {t}") } else { t.to_string() };
                consumed = 1;
                while let Some(v) = tokens.get(i + consumed).filter(|v| !v.starts_with('-') && v.as_str() != "!") {
                    text.push(' ');
                    text.push_str(v);
                    consumed += 1;
                }
                // Target options (after -j) are not matches.
                if rule.target.is_none() {
                    rule.other_options.push(text);
                }
            }
            _ => consumed = 1,
        }
        negate = false;
        i += consumed;
    }
    Ok(rule)
}

/// Splits on whitespace; `"…"` groups words, with `\"` and `\\` escapes inside (how
/// iptables-save quotes comments). An unterminated quote runs to the end of the line.
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut tok = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            tok.push(n);
                        }
                    }
                    '"' => break,
                    c => tok.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                tok.push(c);
                chars.next();
            }
        }
        out.push(tok);
    }
    out
}

/// iptables interface match: exact name, or a prefix when the pattern ends in `+`.
pub fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether `addr` is in a `-s`/`-d` value (comma-separated `a.b.c.d[/len]` or `/mask`).
/// `None` when the value cannot be read.
pub fn addr_matches(value: &str, addr: IpAddr) -> Option<bool> {
    let mut any = false;
    for part in value.split(',') {
        let (ip, len) = match part.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (part, None),
        };
        let net: IpAddr = ip.trim().parse().ok()?;
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => bits,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if n <= bits => n,
                Ok(_) => return None,
                // Dotted mask (iptables prints /255.255.255.0 for non-contiguous masks).
                Err(_) => match l.parse::<IpAddr>().ok()? {
                    IpAddr::V4(m) => u32::from(m).count_ones(),
                    IpAddr::V6(m) => u128::from(m).count_ones(),
                },
            },
        };
        any |= in_prefix(net, len, addr);
    }
    Some(any)
}

fn in_prefix(net: IpAddr, len: u32, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let rs = parse(SAMPLE);
        assert!(rs.errors.is_empty(), "{:?}", rs.errors);
        assert_eq!(rs.tables.len(), 2);
        let f = rs.table("filter").unwrap();
        assert_eq!(f.chain("FORWARD").unwrap().policy.as_deref(), Some("DROP"));
        assert_eq!(f.chain("CILIUM_FORWARD").unwrap().policy, None);
        assert_eq!(f.rules.len(), 5);
        let feeder = &f.rules[0];
        assert_eq!(feeder.counters, Some((5, 300)));
        assert_eq!(feeder.comments, vec!["cilium-feeder: CILIUM_FORWARD".to_string()]);
        assert_eq!(feeder.target.as_deref(), Some("CILIUM_FORWARD"));
        assert!(feeder.text.starts_with("-A FORWARD"));
        assert!(feeder.other_options.is_empty());
        let r = &f.rules[2];
        assert_eq!(r.in_iface, Some(Arg { value: "lxc+".into(), negated: true }));
        assert_eq!(r.src.as_ref().unwrap().value, "10.0.0.0/8,192.168.1.1");
        assert_eq!(r.proto.as_ref().unwrap().value, "tcp");
        assert_eq!(r.other_options, vec!["-m tcp".to_string(), "--dport 80".to_string()]);
        assert_eq!(f.rules[3].state.as_ref().unwrap().value, "RELATED,ESTABLISHED");
        assert!(f.rules[3].other_options.is_empty());
        assert_eq!(f.rules[4].comments, vec![r#"a "quoted" word"#.to_string()]);
        assert!(f.rules[4].goto);
        assert_eq!(f.jumps_to("CILIUM_FORWARD").count(), 2);
        assert!(!rs.is_pristine());
        assert!(parse("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").is_pristine());
    }

    #[test]
    fn reports_bad_lines_without_failing() {
        let rs = parse("-A FORWARD -j DROP\n*filter\n:\nbogus\n[1:x] -A X\n-A\n*nat\n");
        assert_eq!(rs.tables.len(), 2);
        assert_eq!(rs.errors.len(), 7, "{:?}", rs.errors);
    }

    #[test]
    fn interface_and_address_matching() {
        assert!(iface_matches("lxc+", "lxc12ab"));
        assert!(!iface_matches("lxc+", "eth0"));
        assert!(iface_matches("eth0", "eth0"));
        assert!(iface_matches("+", "anything"));
        let a: IpAddr = "10.220.1.5".parse().unwrap();
        assert_eq!(addr_matches("10.220.0.0/16", a), Some(true));
        assert_eq!(addr_matches("10.0.0.0/255.0.0.0", a), Some(true));
        assert_eq!(addr_matches("192.168.0.0/16,10.220.1.5/32", a), Some(true));
        assert_eq!(addr_matches("192.168.0.0/16", a), Some(false));
        assert_eq!(addr_matches("0.0.0.0/0", a), Some(true));
        assert_eq!(addr_matches("fd00::/8", a), Some(false));
        assert_eq!(addr_matches("nonsense", a), None);
        assert_eq!(addr_matches("10.0.0.0/99", a), None);
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
            let _ = parse(&text);
        }
        let base: Vec<char> = SAMPLE.chars().collect();
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
            let rs = parse(&text);
            for t in &rs.tables {
                for r in &t.rules {
                    for v in [&r.src, &r.dst].into_iter().flatten() {
                        let _ = addr_matches(&v.value, "10.0.0.1".parse().unwrap());
                    }
                }
            }
        }
    }
}
