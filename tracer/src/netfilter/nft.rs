//! nftables rulesets from `nft -j list ruleset` (structure, counters) and `nft -a list ruleset`
//! (each rule's text as `nft list` prints it, keyed by handle). Covers native nftables and the
//! tables iptables-nft keeps in `nf_tables`.
use std::collections::HashMap;

use serde_json::Value;

use super::{
    eval::{self, Target, Truth},
    packet::{Cidr, PacketInfo, PortRange, iface_matches, proto_number},
};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    pub chains: Vec<NftChain>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NftChain {
    pub family: String,
    pub table: String,
    pub name: String,
    /// Set for base chains.
    pub hook: Option<String>,
    pub priority: Option<i32>,
    pub policy: Option<String>,
    /// A base chain's type (`filter`, `nat`, `route`).
    pub kind: Option<String>,
    pub rules: Vec<NftRule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NftRule {
    pub handle: u64,
    /// As `nft list` prints it, with `# handle N`.
    pub text: String,
    /// Packets from the rule's `counter`, if it has one.
    pub packets: Option<u64>,
    pub expr: Vec<Value>,
}

impl Ruleset {
    /// `json` from `nft -j list ruleset`, `text` from `nft -a list ruleset`.
    pub fn parse(json: &str, text: &str) -> Self {
        let texts = rule_texts(text);
        let Ok(v) = serde_json::from_str::<Value>(json) else { return Self::default() };
        let Some(items) = v.get("nftables").and_then(Value::as_array) else { return Self::default() };
        let mut chains: Vec<NftChain> = Vec::new();
        for item in items {
            if let Some(c) = item.get("chain") {
                chains.push(NftChain {
                    family: str_of(c, "family"),
                    table: str_of(c, "table"),
                    name: str_of(c, "name"),
                    hook: c.get("hook").and_then(Value::as_str).map(str::to_string),
                    priority: c.get("prio").and_then(Value::as_i64).and_then(|p| i32::try_from(p).ok()),
                    policy: c.get("policy").and_then(Value::as_str).map(str::to_string),
                    kind: c.get("type").and_then(Value::as_str).map(str::to_string),
                    rules: Vec::new(),
                });
            } else if let Some(r) = item.get("rule") {
                let (family, table, chain) = (str_of(r, "family"), str_of(r, "table"), str_of(r, "chain"));
                let handle = r.get("handle").and_then(Value::as_u64).unwrap_or(0);
                let expr = r.get("expr").and_then(Value::as_array).cloned().unwrap_or_default();
                let packets = expr.iter().find_map(|e| e.get("counter")?.get("packets")?.as_u64());
                let text = texts
                    .get(&(family.clone(), table.clone(), chain.clone(), handle))
                    .cloned()
                    .unwrap_or_else(|| format!("(rule handle {handle})"));
                if let Some(c) = chains.iter_mut().find(|c| c.family == family && c.table == table && c.name == chain) {
                    c.rules.push(NftRule { handle, text, packets, expr });
                }
            }
        }
        Self { chains }
    }

    pub fn chain(&self, family: &str, table: &str, name: &str) -> Option<&NftChain> {
        self.chains.iter().find(|c| c.family == family && c.table == table && c.name == name)
    }

    pub fn table<'a>(&'a self, family: &'a str, table: &'a str) -> Table<'a> {
        Table { rs: self, family, name: table }
    }

    pub fn base_chains(&self) -> impl Iterator<Item = &NftChain> {
        self.chains.iter().filter(|c| c.hook.is_some())
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// (family, table, chain, handle) → rule text, from `nft -a list ruleset`.
fn rule_texts(text: &str) -> HashMap<(String, String, String, u64), String> {
    let mut out = HashMap::new();
    let (mut family, mut table, mut chain) = (String::new(), String::new(), String::new());
    for line in text.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["table", f, name, ..] => {
                family = (*f).to_string();
                table = (*name).to_string();
            }
            ["chain", name, ..] => chain = (*name).to_string(),
            _ => {
                if let Some((rule, handle)) = t.rsplit_once(" # handle ")
                    && let Ok(h) = handle.trim().parse::<u64>()
                    && !rule.starts_with("type ")
                    && !t.starts_with("table ")
                    && !t.starts_with("chain ")
                {
                    out.insert((family.clone(), table.clone(), chain.clone(), h), format!("{} # handle {h}", without_counter_values(rule)));
                }
            }
        }
    }
    out
}

/// `counter packets 3 bytes 180` → `counter`: the text names the rule, the values change.
fn without_counter_values(rule: &str) -> String {
    let words: Vec<&str> = rule.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        out.push(words[i]);
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") && words.get(i + 3) == Some(&"bytes") {
            i += 5;
        } else {
            i += 1;
        }
    }
    out.join(" ")
}

/// One table of the ruleset, for the walk (`eval::Chains`).
pub struct Table<'a> {
    rs: &'a Ruleset,
    family: &'a str,
    name: &'a str,
}

impl eval::Chains for Table<'_> {
    type Rule = NftRule;

    fn rules(&self, chain: &str) -> Option<&[NftRule]> {
        self.rs.chain(self.family, self.name, chain).map(|c| c.rules.as_slice())
    }

    fn policy(&self, chain: &str) -> Option<&str> {
        self.rs.chain(self.family, self.name, chain)?.policy.as_deref()
    }

    fn sets_facts(&self) -> bool {
        self.rs.chains.iter().filter(|c| c.family == self.family && c.table == self.name).flat_map(|c| &c.rules).any(NftRule::sets_facts)
    }
}

impl NftRule {
    /// `meta mark set`, `ct mark set`, `ct zone set`, `notrack`, or an iptables target kept
    /// as `xt` (MARK, CT…): it changes what later rules match on.
    fn sets_facts(&self) -> bool {
        self.expr.iter().any(|e| {
            e.get("notrack").is_some()
                || e.get("xt").is_some_and(|x| x.get("type").and_then(Value::as_str) == Some("target"))
                || e.get("mangle").and_then(|m| m.get("key")).is_some_and(|k| k.get("ct").is_some() || k.get("meta").and_then(|m| m.get("key")).and_then(Value::as_str) == Some("mark"))
        })
    }
}

impl eval::Rule for NftRule {
    /// Evaluates the rule's `match` expressions; anything we do not understand is `Maybe`.
    fn eval(&self, p: &PacketInfo) -> Truth {
        Truth::all(self.expr.iter().map(|e| {
            if let Some(m) = e.get("match") {
                eval_match(m, p)
            } else if e.get("xt").is_some() {
                Truth::Maybe
            } else {
                Truth::Yes
            }
        }))
    }

    /// The verdict the rule ends with, if any.
    fn target(&self) -> Target {
        for e in &self.expr {
            let Some(obj) = e.as_object() else { continue };
            for (k, v) in obj {
                match k.as_str() {
                    "accept" => return Target::Accept,
                    "drop" => return Target::Drop,
                    "reject" => return Target::Reject,
                    "return" => return Target::Return,
                    "jump" => return Target::Jump(str_of(v, "target")),
                    "goto" => return Target::Goto(str_of(v, "target")),
                    _ => {}
                }
            }
        }
        Target::Continue(String::new())
    }

    fn text(&self) -> &str {
        &self.text
    }
}

enum Field {
    Addr(Option<std::net::IpAddr>),
    Num(Option<u64>),
    Name(Option<String>),
    /// `ct state`, as nft names it (`established`).
    State(Option<&'static str>),
}

fn field(left: &Value, p: &PacketInfo) -> Option<Field> {
    if let Some(pl) = left.get("payload") {
        let proto = pl.get("protocol").and_then(Value::as_str).unwrap_or_default();
        let f = pl.get("field").and_then(Value::as_str).unwrap_or_default();
        let l4 = |n: u8| p.proto.map(|x| x == n);
        return Some(match (proto, f) {
            ("ip" | "ip6", "saddr") => Field::Addr(p.src),
            ("ip" | "ip6", "daddr") => Field::Addr(p.dst),
            ("ip", "protocol") | ("ip6", "nexthdr") => Field::Num(p.proto.map(u64::from)),
            ("tcp", "dport") => Field::Num(if l4(6)? { p.dport.map(u64::from) } else { None }),
            ("tcp", "sport") => Field::Num(if l4(6)? { p.sport.map(u64::from) } else { None }),
            ("udp", "dport") => Field::Num(if l4(17)? { p.dport.map(u64::from) } else { None }),
            ("udp", "sport") => Field::Num(if l4(17)? { p.sport.map(u64::from) } else { None }),
            ("th", "dport") => Field::Num(p.dport.map(u64::from)),
            ("th", "sport") => Field::Num(p.sport.map(u64::from)),
            ("icmp" | "icmpv6", "type") => Field::Num(p.icmp_type.map(u64::from)),
            ("icmp" | "icmpv6", "code") => Field::Num(p.icmp_code.map(u64::from)),
            _ => return None,
        });
    }
    // `meta mark & 0xf00`: the masked value.
    if let Some([inner, mask]) = left.get("&").and_then(Value::as_array).map(Vec::as_slice) {
        let mask = mask.as_u64()?;
        return match field(inner, p)? {
            Field::Num(n) => Some(Field::Num(n.map(|n| n & mask))),
            _ => None,
        };
    }
    if let Some(ct) = left.get("ct").and_then(|c| c.get("key")).and_then(Value::as_str) {
        return Some(match ct {
            "state" => Field::State(p.ct_state.map(|s| nft_state(s.name()))),
            "mark" => Field::Num(p.ct_mark.map(u64::from)),
            "zone" => Field::Num(p.ct_zone.map(u64::from)),
            _ => return None,
        });
    }
    let meta = left.get("meta")?.get("key")?.as_str()?;
    Some(match meta {
        "l4proto" => Field::Num(p.proto.map(u64::from)),
        "iifname" => Field::Name(p.in_iface.clone()),
        "oifname" => Field::Name(p.out_iface.clone()),
        "mark" => Field::Num(p.mark.map(u64::from)),
        _ => return None,
    })
}

/// A conntrack state as nft spells it.
fn nft_state(name: &str) -> &'static str {
    match name {
        "NEW" => "new",
        "ESTABLISHED" => "established",
        "RELATED" => "related",
        "UNTRACKED" => "untracked",
        _ => "invalid",
    }
}

/// Does one right-hand value contain the packet's field? None = cannot tell.
fn value_matches(f: &Field, right: &Value) -> Option<bool> {
    match f {
        Field::Addr(a) => {
            let a = (*a)?;
            if let Some(s) = right.as_str() {
                return Some(Cidr::parse(s)?.contains(a));
            }
            if let Some(pre) = right.get("prefix") {
                let addr = pre.get("addr")?.as_str()?;
                let len = pre.get("len")?.as_u64()?;
                return Some(Cidr::parse(&format!("{addr}/{len}"))?.contains(a));
            }
            if let Some(r) = right.get("range").and_then(Value::as_array) {
                let lo: std::net::IpAddr = r.first()?.as_str()?.parse().ok()?;
                let hi: std::net::IpAddr = r.get(1)?.as_str()?.parse().ok()?;
                return Some(lo <= a && a <= hi);
            }
            None
        }
        Field::Num(n) => {
            let n = (*n)?;
            if let Some(x) = right.as_u64() {
                return Some(x == n);
            }
            if let Some(s) = right.as_str() {
                return Some(proto_number(s).map(u64::from).or_else(|| Some(u64::from(PortRange::parse(s)?.lo)))? == n);
            }
            if let Some(r) = right.get("range").and_then(Value::as_array) {
                return Some(r.first()?.as_u64()? <= n && n <= r.get(1)?.as_u64()?);
            }
            None
        }
        Field::State(state) => Some(right.as_str()? == (*state)?),
        Field::Name(name) => {
            let name = name.as_ref()?;
            let pat = right.as_str()?;
            // nft wildcards end with `*`.
            Some(match pat.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => iface_matches(pat, name),
            })
        }
    }
}

fn eval_match(m: &Value, p: &PacketInfo) -> Truth {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let (Some(left), Some(right)) = (m.get("left"), m.get("right")) else { return Truth::Maybe };
    let Some(f) = field(left, p) else { return Truth::Maybe };
    // A set, or a list of flags (`ct state established,related`): any of them.
    let hit = if let Some(set) = right.get("set").and_then(Value::as_array).or_else(|| right.as_array()) {
        let mut any = Some(false);
        for v in set {
            match value_matches(&f, v) {
                Some(true) => {
                    any = Some(true);
                    break;
                }
                Some(false) => {}
                None => any = None,
            }
        }
        any
    } else {
        value_matches(&f, right)
    };
    match op {
        "!=" => Truth::of(hit, true),
        "==" | "in" => Truth::of(hit, false),
        _ => Truth::Maybe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::eval::Rule as _;

    const JSON: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "inet", "name": "fw", "handle": 3}},
 {"chain": {"family": "inet", "table": "fw", "name": "fwd", "handle": 1, "type": "filter", "hook": "forward", "prio": -5, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "fw", "chain": "fwd", "handle": 4, "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.1.2.3"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 9999}},
   {"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}},
 {"rule": {"family": "inet", "table": "fw", "chain": "fwd", "handle": 5, "expr": [
   {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": null}]}}]}"#;
    const TEXT: &str = "table inet fw { # handle 3\n\tchain fwd { # handle 1\n\t\ttype filter hook forward priority -5; policy accept;\n\t\tip daddr 10.1.2.3 udp dport 9999 counter packets 3 bytes 180 drop # handle 4\n\t\tct state invalid drop # handle 5\n\t}\n}\n";

    #[test]
    fn parses_and_evaluates() {
        let r = Ruleset::parse(JSON, TEXT);
        let c = r.chain("inet", "fw", "fwd").unwrap();
        assert_eq!(c.priority, Some(-5));
        assert_eq!(c.hook.as_deref(), Some("forward"));
        assert_eq!(c.rules[0].text, "ip daddr 10.1.2.3 udp dport 9999 counter drop # handle 4");
        assert_eq!(c.rules[0].packets, Some(3));
        assert_eq!(c.rules[0].target(), Target::Drop);
        let p = PacketInfo { dst: Some("10.1.2.3".parse().unwrap()), proto: Some(17), dport: Some(9999), ..Default::default() };
        assert_eq!(c.rules[0].eval(&p), Truth::Yes);
        assert_eq!(c.rules[1].eval(&p), Truth::Maybe);
        let q = PacketInfo { dport: Some(53), ..p };
        assert_eq!(c.rules[0].eval(&q), Truth::No);
    }

    #[test]
    fn garbage_is_empty() {
        assert_eq!(Ruleset::parse("{", ""), Ruleset::default());
        assert_eq!(Ruleset::parse(r#"{"nftables": [{"rule": {}}]}"#, "x # handle y").chains.len(), 0);
    }
}
