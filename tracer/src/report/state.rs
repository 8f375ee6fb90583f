//! What changed on the node during the window: a bundle's `start/` and `end/` node state
//! compared — iptables rules and chains (both back ends and families), native nftables rules
//! and chains, routes, policy rules and links of every namespace snapshotted.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::source::Input;

/// Changes listed per kind at most (the rest are counted).
const MAX_LISTED: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Removed,
    Added,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub op: Op,
    /// `rule`, `chain`, `route`, `ip rule`, `link`, `namespace`.
    pub kind: &'static str,
    /// Where: `iptables-nft filter` (IPv4), `nft inet cilium`, `root`, `netns NAME`.
    pub scope: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub list: Vec<Change>,
    /// Changes beyond `MAX_LISTED` of a kind, not listed.
    pub unlisted: u64,
    /// What was compared (e.g. `iptables-nft-v4`, `routes of 3 namespaces`).
    pub compared: Vec<String>,
}

impl Changes {
    pub fn count(&self, op: Op) -> usize {
        self.list.iter().filter(|c| c.op == op).count()
    }

    /// Netfilter or routing changed (what the chart marks).
    pub fn ruleset_or_routes(&self) -> bool {
        !self.list.is_empty()
    }

    fn push_diff(&mut self, kind: &'static str, scope: &str, start: &BTreeMap<String, usize>, end: &BTreeMap<String, usize>) {
        let mut listed = 0;
        for (op, a, b) in [(Op::Removed, start, end), (Op::Added, end, start)] {
            for (text, n) in a {
                if b.get(text).copied().unwrap_or(0) < *n {
                    if listed < MAX_LISTED {
                        self.list.push(Change { op, kind, scope: scope.to_string(), text: text.clone() });
                        listed += 1;
                    } else {
                        self.unlisted += 1;
                    }
                }
            }
        }
    }
}

fn bag(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    m
}

/// `iptables-save -c` → (table → rules, table → chains), counters left out.
fn iptables(text: &str) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            out.entry(table.clone()).or_default();
        } else if let Some(c) = line.strip_prefix(':') {
            let mut w = c.split_whitespace();
            let name = w.next().unwrap_or_default();
            let policy = w.next().filter(|p| *p != "-").map(|p| format!(" (policy {p})")).unwrap_or_default();
            out.entry(table.clone()).or_default().1.push(format!("{name}{policy}"));
        } else if line.starts_with('[') || line.starts_with("-A") {
            let rule = if line.starts_with('[') { line.split_once("] ").map_or(line, |(_, r)| r) } else { line };
            out.entry(table.clone()).or_default().0.push(rule.to_string());
        }
    }
    out
}

fn diff_iptables(input: &Input, c: &mut Changes, nft_tables: &mut BTreeSet<(String, String)>) {
    for (file, backend, family) in [
        ("iptables-nft-v4", "iptables-nft", "ip"),
        ("iptables-nft-v6", "ip6tables-nft", "ip6"),
        ("iptables-legacy-v4", "iptables-legacy", "ip"),
        ("iptables-legacy-v6", "ip6tables-legacy", "ip6"),
    ] {
        let rel = format!("netfilter/{file}.txt");
        let (Some(s), Some(e)) = (input.text(&format!("start/{rel}")), input.text(&format!("end/{rel}"))) else { continue };
        c.compared.push(backend.to_string());
        let (s, e) = (iptables(&s), iptables(&e));
        let tables: BTreeSet<&String> = s.keys().chain(e.keys()).collect();
        for t in tables {
            if backend.ends_with("-nft") {
                nft_tables.insert((family.to_string(), t.clone()));
            }
            let empty = (Vec::new(), Vec::new());
            let (sr, sc) = s.get(t).unwrap_or(&empty);
            let (er, ec) = e.get(t).unwrap_or(&empty);
            let scope = format!("{backend} {t}");
            c.push_diff("chain", &scope, &bag(sc.iter().cloned()), &bag(ec.iter().cloned()));
            c.push_diff("rule", &scope, &bag(sr.iter().cloned()), &bag(er.iter().cloned()));
        }
    }
}

/// Rule expressions without their counters (which move all the time).
fn strip_counters(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().filter(|x| x.get("counter").is_none()).map(strip_counters).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), strip_counters(v))).collect()),
        other => other.clone(),
    }
}

/// Native nftables tables (those iptables-nft does not own, already compared as iptables).
fn nft(v: &Value, skip: &BTreeSet<(String, String)>) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let (obj, is_rule) = match (item.get("chain"), item.get("rule")) {
            (Some(c), _) => (c, false),
            (_, Some(r)) => (r, true),
            _ => continue,
        };
        let fam = obj["family"].as_str().unwrap_or_default().to_string();
        let table = obj["table"].as_str().unwrap_or_default().to_string();
        if skip.contains(&(fam.clone(), table.clone())) {
            continue;
        }
        let entry = out.entry(format!("nft {fam} {table}")).or_default();
        if is_rule {
            let text = obj["comment"].as_str().map_or_else(|| strip_counters(&obj["expr"]).to_string(), |c| format!("comment \"{c}\""));
            entry.0.push(format!("chain {}: {text}", obj["chain"].as_str().unwrap_or_default()));
        } else {
            let hook = obj["hook"].as_str().map(|h| format!(" (hook {h} prio {} policy {})", obj["prio"], obj["policy"].as_str().unwrap_or("-"))).unwrap_or_default();
            entry.1.push(format!("{}{hook}", obj["name"].as_str().unwrap_or_default()));
        }
    }
    out
}

fn diff_nft(input: &Input, c: &mut Changes, skip: &BTreeSet<(String, String)>) {
    let (Some(s), Some(e)) = (input.json("start/netfilter/nft.json"), input.json("end/netfilter/nft.json")) else { return };
    c.compared.push("nftables".into());
    let (s, e) = (nft(&s, skip), nft(&e, skip));
    let empty = (Vec::new(), Vec::new());
    for t in s.keys().chain(e.keys()).collect::<BTreeSet<_>>() {
        let (sr, sc) = s.get(t).unwrap_or(&empty);
        let (er, ec) = e.get(t).unwrap_or(&empty);
        c.push_diff("chain", t, &bag(sc.iter().cloned()), &bag(ec.iter().cloned()));
        c.push_diff("rule", t, &bag(sr.iter().cloned()), &bag(er.iter().cloned()));
    }
}

fn s(v: &Value, k: &str) -> Option<String> {
    match &v[k] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn route_text(r: &Value) -> String {
    let mut out = Vec::new();
    if let Some(t) = s(r, "type").filter(|t| t != "unicast") {
        out.push(t);
    }
    out.push(s(r, "dst").unwrap_or_else(|| "?".into()));
    for (k, label) in [("gateway", "via"), ("dev", "dev"), ("table", "table"), ("protocol", "proto"), ("scope", "scope"), ("prefsrc", "src"), ("metric", "metric")] {
        if let Some(v) = s(r, k) {
            out.push(format!("{label} {v}"));
        }
    }
    out.join(" ")
}

fn ip_rule_text(r: &Value) -> String {
    let mut out = vec![format!("{}:", s(r, "priority").unwrap_or_default()), format!("from {}", s(r, "src").unwrap_or_else(|| "all".into()))];
    for (k, label) in [("dst", "to"), ("fwmark", "fwmark"), ("iif", "iif"), ("oif", "oif"), ("table", "lookup"), ("action", "")] {
        if let Some(v) = s(r, k) {
            out.push(if label.is_empty() { v } else { format!("{label} {v}") });
        }
    }
    out.join(" ")
}

fn list(v: Option<Value>) -> Vec<Value> {
    v.and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

fn diff_ip(input: &Input, c: &mut Changes) {
    let dirs = |phase: &str| -> BTreeSet<String> {
        let p = format!("{phase}/ip/");
        input.files.keys().filter_map(|k| k.strip_prefix(&p)).filter_map(|k| k.rsplit_once('/').map(|(d, _)| d.to_string())).collect()
    };
    let (sd, ed) = (dirs("start"), dirs("end"));
    let scope = |d: &str| d.strip_prefix("netns/").map_or_else(|| d.to_string(), |n| format!("netns {n}"));
    for d in sd.difference(&ed) {
        c.list.push(Change { op: Op::Removed, kind: "namespace", scope: scope(d), text: format!("{} (gone at the end)", scope(d)) });
    }
    for d in ed.difference(&sd) {
        c.list.push(Change { op: Op::Added, kind: "namespace", scope: scope(d), text: format!("{} (new at the end)", scope(d)) });
    }
    let both: Vec<&String> = sd.intersection(&ed).collect();
    if !both.is_empty() {
        c.compared.push(format!("routes, policy rules and links of {} namespace(s)", both.len()));
    }
    for d in both {
        let get = |phase: &str, f: &str| list(input.json(&format!("{phase}/ip/{d}/{f}.json")));
        for (kind, files, text) in [("route", ["route4", "route6"], route_text as fn(&Value) -> String), ("ip rule", ["rule4", "rule6"], ip_rule_text)] {
            let collect = |phase: &str| bag(files.iter().flat_map(|f| get(phase, f)).map(|r| text(&r)));
            c.push_diff(kind, &scope(d), &collect("start"), &collect("end"));
        }
        let links = |phase: &str| -> BTreeMap<String, String> {
            get(phase, "link").iter().filter_map(|l| Some((s(l, "ifname")?, s(l, "operstate").unwrap_or_default()))).collect()
        };
        let (sl, el) = (links("start"), links("end"));
        for (name, state) in &sl {
            match el.get(name) {
                None => c.list.push(Change { op: Op::Removed, kind: "link", scope: scope(d), text: format!("{name} ({state})") }),
                Some(e) if e != state => c.list.push(Change { op: Op::Changed, kind: "link", scope: scope(d), text: format!("{name}: {state} → {e}") }),
                Some(_) => {}
            }
        }
        for (name, state) in el.iter().filter(|(n, _)| !sl.contains_key(*n)) {
            c.list.push(Change { op: Op::Added, kind: "link", scope: scope(d), text: format!("{name} ({state})") });
        }
    }
}

/// Start and end node state of a bundle, compared.
pub fn diff(input: &Input) -> Changes {
    let mut c = Changes::default();
    let mut nft_tables = BTreeSet::new();
    diff_iptables(input, &mut c, &mut nft_tables);
    diff_nft(input, &mut c, &nft_tables);
    diff_ip(input, &mut c);
    c
}
