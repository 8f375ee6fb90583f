//! The merged `summary.json` (per-node and total rows, cross-node flows, clock offsets) and the
//! table printed on stdout. Totals are sums of the inputs' exact summary counters.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::{Value, json};

use super::{clock::Offset, flows::CrossFlow, load::NodeData};

/// Counters summed into the total row (the capture summary's names).
pub const COUNTERS: [&str; 6] = ["drops", "events", "lost_events", "seen_drops", "rate_limited", "probe_misses"];

/// The merged summary's layout version.
pub const MERGE_VERSION: u64 = 1;

fn counter(n: &NodeData, k: &str) -> u64 {
    match n.summary.as_ref().and_then(|s| s[k].as_u64()) {
        Some(v) => v,
        // No summary (a capture directory of drops.jsonl only): what the events say.
        None if k == "drops" || k == "events" => n.drop_records(),
        None => 0,
    }
}

fn node_row(n: &NodeData) -> Value {
    let mut row = serde_json::Map::new();
    row.insert("node".into(), json!(n.name));
    row.insert("node_from".into(), json!(n.name_from));
    row.insert("input".into(), json!(n.input));
    // Exact: from the input's summary (kernel counters); else counted from its events.
    row.insert("exact".into(), json!(n.summary.is_some()));
    for k in COUNTERS {
        row.insert(k.into(), json!(counter(n, k)));
    }
    let s = n.summary.as_ref();
    for k in ["start", "end", "kernel", "expression"] {
        row.insert(k.into(), s.map_or(Value::Null, |s| s[k].clone()));
    }
    row.insert("by_reason".into(), s.map_or_else(|| json!([]), |s| s["by_reason"].clone()));
    row.insert("unreadable_lines".into(), json!(n.unreadable));
    Value::Object(row)
}

/// Reasons summed over the nodes' summaries, largest first.
fn reasons(nodes: &[NodeData]) -> Value {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for s in nodes.iter().filter_map(|n| n.summary.as_ref()) {
        for r in s["by_reason"].as_array().into_iter().flatten() {
            if let (Some(reason), Some(c)) = (r["reason"].as_str(), r["count"].as_u64()) {
                *m.entry(reason.to_string()).or_default() += c;
            }
        }
    }
    let mut v: Vec<(String, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter().map(|(reason, count)| json!({"reason": reason, "count": count})).collect()
}

/// Nodes no offset could be estimated for (no packet of theirs matched another node's).
pub fn not_estimated<'a>(nodes: &'a [NodeData], offsets: &[Offset]) -> Vec<&'a str> {
    if nodes.len() < 2 {
        return Vec::new();
    }
    nodes.iter().map(|n| n.name.as_str()).filter(|n| !offsets.iter().any(|o| o.node == *n || o.relative_to == *n)).collect()
}

pub fn build(nodes: &[NodeData], flows: &[CrossFlow], offsets: &[Offset], method: &str) -> Value {
    let mut top = serde_json::Map::new();
    top.insert("merge_version".into(), json!(MERGE_VERSION));
    // The totals at the top level too, under a capture summary's names: readers of one
    // node's summary.json read the merged total the same way.
    for k in COUNTERS {
        top.insert(k.into(), json!(nodes.iter().map(|n| counter(n, k)).sum::<u64>()));
    }
    top.insert("by_reason".into(), reasons(nodes));
    let mut total = serde_json::Map::new();
    for k in COUNTERS {
        total.insert(k.into(), top[k].clone());
    }
    total.insert("exact".into(), json!(nodes.iter().all(|n| n.summary.is_some())));
    top.insert("nodes".into(), nodes.iter().map(node_row).collect());
    top.insert("total".into(), Value::Object(total));
    top.insert("cross_node_flows".into(), json!(flows));
    top.insert(
        "clock_offsets".into(),
        json!({
            "method": method,
            "estimates": offsets,
            "not_estimated": not_estimated(nodes, offsets),
        }),
    );
    Value::Object(top)
}

#[expect(clippy::cast_precision_loss, reason = "a clock offset for display")]
fn ms(ns: i128) -> String {
    format!("{:+.3} ms", ns as f64 / 1e6)
}

/// The table on stdout.
pub fn table(nodes: &[NodeData], flows: &[CrossFlow], offsets: &[Offset], method: &str) -> String {
    let mut o = String::new();
    let w = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(5);
    let _ = writeln!(o, "{:<w$}  {:>10}  {:>10}  {:>11}  NAME FROM", "NODE", "DROPS", "EVENTS", "LOST_EVENTS");
    for n in nodes {
        let exact = if n.summary.is_some() { "" } else { " (no summary: counted from events)" };
        let _ = writeln!(o, "{:<w$}  {:>10}  {:>10}  {:>11}  {}{exact}", n.name, counter(n, "drops"), counter(n, "events"), counter(n, "lost_events"), n.name_from);
    }
    let sum = |k| nodes.iter().map(|n| counter(n, k)).sum::<u64>();
    let _ = writeln!(o, "{:<w$}  {:>10}  {:>10}  {:>11}", "total", sum("drops"), sum("events"), sum("lost_events"));
    let _ = writeln!(o, "\nCross-node flows (followed leaving on one node, dropped on another): {}", flows.len());
    for f in flows {
        let seen: Vec<String> = f.seen.iter().map(|s| format!("{} ({} packets)", s.node, s.packets)).collect();
        let dropped: Vec<String> = f
            .dropped
            .iter()
            .map(|d| {
                let rule = d.rules.first().map(|r| format!(", rule {r}")).unwrap_or_default();
                format!("{} ({} drops: {}{rule})", d.node, d.drops, d.reasons.join(", "))
            })
            .collect();
        let _ = writeln!(o, "  {}: seen on {}; dropped on {}", f.flow.text(), seen.join(", "), dropped.join(", "));
    }
    let _ = writeln!(o, "\nClock offsets ({method}):");
    for e in offsets {
        let _ = writeln!(o, "  {} vs {}: {} ({}, from {} packets matched by {})", e.node, e.relative_to, ms(e.offset_ns), e.bound, e.matches, e.matched_by);
    }
    for n in not_estimated(nodes, offsets) {
        let _ = writeln!(o, "  {n}: not estimated (no packet of it matched on another node; capture the sending node with --path --all)");
    }
    o
}
