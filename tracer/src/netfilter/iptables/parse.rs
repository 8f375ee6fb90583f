//! Reading `iptables-save` lines: chain declarations, counters, rule words (with iptables'
//! quoting) and the matches and target they spell.
use super::{Chain, Match, Rule};
use crate::netfilter::{
    eval::Target,
    packet::{Cidr, PortRange, parse_mark, proto_number},
};

/// `FORWARD DROP [12:720]` or `CILIUM_FORWARD - [0:0]`.
pub(super) fn parse_chain(decl: &str) -> Option<Chain> {
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
pub(super) fn parse_rule(line: &str) -> Result<(String, Rule), String> {
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
    // The `-m` module in effect: `--mark` is the packet's under `mark`, the entry's under
    // `connmark`.
    let mut module = String::new();
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
            "-m" | "--match" => module = arg(i),
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
            "--mark" | "--ctmark" if matches!((w, module.as_str()), ("--mark", "mark" | "connmark") | ("--ctmark", "conntrack")) => {
                let a = arg(i);
                matches.push(match parse_mark(&a) {
                    Some((value, mask)) if module == "mark" => Match::Mark { value, mask, negated },
                    Some((value, mask)) => Match::CtMark { value, mask, negated },
                    None => Match::Unsupported(format!("{w} {a}")),
                });
            }
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
