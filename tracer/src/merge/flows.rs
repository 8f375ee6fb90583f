//! Cross-node flows: the same 5-tuple followed (`--path`, a `"type": "packet"` record) on one
//! node and dropped (a `"type": "drop"` record) on another, listed together.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::report::event::Event;

/// proto, source, destination, ports as the records write them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FiveTuple {
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl FiveTuple {
    /// From a JSON record; None without both addresses.
    pub fn of(r: &Map<String, Value>) -> Option<Self> {
        let proto = match r.get("proto") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let port = |k: &str| r.get(k).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
        Some(Self { proto, src: r.get("src")?.as_str()?.to_string(), dst: r.get("dst")?.as_str()?.to_string(), sport: port("sport"), dport: port("dport") })
    }

    pub fn text(&self) -> String {
        let ep = |a: &str, p| Event::endpoint(Some(a), p).unwrap_or_default();
        format!("{} {} > {}", self.proto, ep(&self.src, self.sport), ep(&self.dst, self.dport))
    }
}

/// A flow's packets followed on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub node: String,
    pub packets: u64,
    /// Their fates as that node's capture wrote them, most frequent first.
    pub fates: Vec<String>,
}

/// A flow's drops on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub node: String,
    pub drops: u64,
    pub reasons: Vec<String>,
    /// The netfilter rules that dropped them.
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossFlow {
    #[serde(flatten)]
    pub flow: FiveTuple,
    pub seen: Vec<Seen>,
    pub dropped: Vec<Dropped>,
}

/// Texts (fates, reasons, rules) with how often each was seen.
type Counts = BTreeMap<String, u64>;

#[derive(Default)]
struct Tally {
    /// node → (packets, fates)
    seen: BTreeMap<usize, (u64, Counts)>,
    /// node → (drops, reasons, rules)
    dropped: BTreeMap<usize, (u64, Counts, Counts)>,
}

fn by_count(m: &BTreeMap<String, u64>) -> Vec<String> {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    v.into_iter().map(|(k, _)| k.clone()).collect()
}

/// `records`: (node index, record) of every input; `names`: node names by index. A flow is
/// cross-node when it has a followed packet on some node and a drop on another.
pub fn cross_node<'a>(names: &[String], records: impl IntoIterator<Item = (usize, &'a Map<String, Value>)>) -> Vec<CrossFlow> {
    let mut flows: BTreeMap<FiveTuple, Tally> = BTreeMap::new();
    for (node, r) in records {
        let kind = r.get("type").and_then(Value::as_str);
        if !matches!(kind, Some("packet" | "drop")) {
            continue;
        }
        let Some(flow) = FiveTuple::of(r) else { continue };
        let t = flows.entry(flow).or_default();
        let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if kind == Some("packet") {
            let e = t.seen.entry(node).or_default();
            e.0 += 1;
            *e.1.entry(text("fate")).or_default() += 1;
        } else {
            let e = t.dropped.entry(node).or_default();
            e.0 += 1;
            *e.1.entry(text("reason")).or_default() += 1;
            if let Some(rule) = r.get("netfilter").and_then(|n| n.get("rule")).and_then(Value::as_str) {
                *e.2.entry(rule.to_string()).or_default() += 1;
            }
        }
    }
    flows
        .into_iter()
        .filter(|(_, t)| t.seen.keys().any(|s| t.dropped.keys().any(|d| d != s)))
        .map(|(flow, t)| CrossFlow {
            flow,
            seen: t.seen.iter().map(|(n, (c, f))| Seen { node: names[*n].clone(), packets: *c, fates: by_count(f) }).collect(),
            dropped: t.dropped.iter().map(|(n, (c, r, rules))| Dropped { node: names[*n].clone(), drops: *c, reasons: by_count(r), rules: by_count(rules) }).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(v: &Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn followed_on_one_node_dropped_on_another() {
        let names = vec!["a".to_string(), "b".to_string()];
        let flow = json!({"proto": "udp", "src": "10.0.1.10", "dst": "10.0.2.10", "sport": 4000, "dport": 53});
        let mut p = flow.clone();
        p["type"] = json!("packet");
        p["fate"] = json!("sent out eth1 (netns 1)");
        let mut d = flow.clone();
        d["type"] = json!("drop");
        d["reason"] = json!("NETFILTER_DROP");
        d["netfilter"] = json!({"rule": "-A FORWARD -j DROP"});
        // Same node only: not cross-node.
        let mut other = rec(&d);
        other.insert("dport".into(), json!(54));
        let mut other_p = rec(&p);
        other_p.insert("dport".into(), json!(54));
        let (p, d) = (rec(&p), rec(&d));
        let records = vec![(0, &p), (0, &p), (1, &d), (1, &d), (1, &d), (1, &other), (1, &other_p)];
        let got = cross_node(&names, records);
        assert_eq!(got.len(), 1, "{got:?}");
        let f = &got[0];
        assert_eq!(f.flow.text(), "udp 10.0.1.10:4000 > 10.0.2.10:53");
        assert_eq!(f.seen, vec![Seen { node: "a".into(), packets: 2, fates: vec!["sent out eth1 (netns 1)".into()] }]);
        assert_eq!(f.dropped, vec![Dropped { node: "b".into(), drops: 3, reasons: vec!["NETFILTER_DROP".into()], rules: vec!["-A FORWARD -j DROP".into()] }]);
    }

    #[test]
    fn a_flow_seen_and_dropped_on_the_same_node_is_not_cross_node() {
        let names = vec!["a".to_string()];
        let p = rec(&json!({"type": "packet", "proto": "tcp", "src": "::1", "dst": "::2", "sport": 1, "dport": 2}));
        let d = rec(&json!({"type": "drop", "proto": "tcp", "src": "::1", "dst": "::2", "sport": 1, "dport": 2}));
        assert!(cross_node(&names, vec![(0, &p), (0, &d)]).is_empty());
        assert_eq!(FiveTuple::of(&p).unwrap().text(), "tcp [::1]:1 > [::2]:2");
    }
}
