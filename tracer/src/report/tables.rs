//! Sections 3, 4 and 7 as data (headers, rows, cells) that both the HTML page and the Markdown
//! file render: who and where, what changed on the node, run facts.
use std::fmt::Write as _;

use serde_json::Value;

use super::{
    model::{Node, Report},
    sentences::{culprit_anchor, date_time, thousands},
    state::Op,
};

/// Rows per "who and where" table.
const TOP_ROWS: usize = 15;

#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    /// Shown as code (rule text, program names).
    pub code: bool,
}

pub fn c(text: impl Into<String>) -> Cell {
    Cell { text: text.into(), code: false }
}

fn code(text: impl Into<String>) -> Cell {
    Cell { text: text.into(), code: true }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub anchor: Option<String>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub id: String,
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Row>,
    pub note: Option<String>,
}

/// A row to rank: its anchor, its cells, its count.
type Ranked = (Option<String>, Vec<Cell>, u64);

#[expect(clippy::cast_precision_loss, reason = "a percentage with one decimal")]
fn share(n: u64, of: u64) -> String {
    if of == 0 { "-".into() } else { format!("{:.1}%", n as f64 * 100.0 / of as f64) }
}

/// A table of `(label cells, count)` per node, biggest first, with shares of `of(node)`.
fn ranked(r: &Report, id: &str, title: &str, head: &[&str], rows: impl Fn(usize, &Node) -> Vec<Ranked>, of: impl Fn(&Node) -> u64, note: Option<String>) -> Table {
    let multi = r.nodes.len() > 1;
    // (node, (anchor, cells, count), count of the whole).
    let mut all: Vec<(String, Ranked, u64)> = Vec::new();
    for (i, n) in r.nodes.iter().enumerate() {
        for row in rows(i, n) {
            all.push((n.name.clone(), row, of(n)));
        }
    }
    all.sort_by_key(|x| std::cmp::Reverse(x.1.2));
    let total = all.len();
    let mut headers: Vec<String> = Vec::new();
    if multi {
        headers.push("node".into());
    }
    headers.extend(head.iter().map(|h| (*h).to_string()));
    headers.extend(["count".to_string(), "share".to_string()]);
    let rows = all
        .into_iter()
        .take(TOP_ROWS)
        .map(|(node, (anchor, mut cells, count), of)| {
            if multi {
                cells.insert(0, c(node));
            }
            cells.push(c(thousands(count)));
            cells.push(c(share(count, of)));
            Row { anchor, cells }
        })
        .collect();
    let mut note = note;
    if total > TOP_ROWS {
        let more = format!("top {TOP_ROWS} of {total}");
        note = Some(note.map_or(more.clone(), |n| format!("{n}; {more}")));
    }
    Table { id: id.into(), title: title.into(), headers, rows, note }
}

fn arr<'a>(n: &'a Node, k: &str) -> impl Iterator<Item = &'a Value> {
    n.summary.as_ref().and_then(|s| s[k].as_array()).into_iter().flatten()
}

fn st(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn count(v: &Value) -> u64 {
    v["count"].as_u64().unwrap_or(0)
}

fn hash_rows(m: &std::collections::HashMap<String, u64>) -> Vec<Ranked> {
    m.iter().map(|(k, v)| (None, vec![c(k.clone())], *v)).collect()
}

/// Section 3.
pub fn who_where(r: &Report) -> Vec<Table> {
    let exact = |n: &Node| n.drops();
    let events = |n: &Node| n.events;
    let ev_note = Some("from the events; shares of the events read".to_string());
    let mut out = vec![ranked(
        r,
        "t-culprits",
        "Rules, programs and kernel functions that dropped",
        &["what", "where"],
        |i, n| n.culprits.iter().map(|(k, v)| (Some(culprit_anchor(i, k)), vec![code(k.text()), c(k.context())], *v)).collect(),
        events,
        ev_note.clone(),
    )];
    out.push(ranked(
        r,
        "t-reasons",
        "Drop reasons",
        &["reason"],
        |_, n| {
            let from_summary: Vec<_> = arr(n, "by_reason").map(|v| (None, vec![c(st(v, "reason"))], count(v))).collect();
            if n.summary.is_some() { from_summary } else { hash_rows(&n.reasons) }
        },
        exact,
        Some("exact kernel counters when the summary is there".into()),
    ));
    out.push(ranked(
        r,
        "t-programs",
        "tc/BPF programs",
        &["program", "where", "pod"],
        |_, n| arr(n, "by_program").map(|v| (None, vec![code(st(v, "prog")), c(format!("{} {} [{}]", st(v, "ifname"), st(v, "direction"), st(v, "attach"))), c(st(v, "pod"))], count(v))).collect(),
        exact,
        None,
    ));
    out.push(ranked(
        r,
        "t-cilium",
        "Cilium drop reasons",
        &["Cilium reason", "code"],
        |_, n| arr(n, "by_cilium_reason").map(|v| (None, vec![c(st(v, "reason")), c(st(v, "code"))], count(v))).collect(),
        exact,
        Some("drops by Cilium programs, named as Cilium names them (from the summary; no code when the window was ambiguous)".into()),
    ));
    out.push(ranked(
        r,
        "t-pods",
        "Pods",
        &["pod", "as source", "as destination", "on its interface"],
        |_, n| {
            let s: Vec<_> = arr(n, "by_pod").map(|v| (None, vec![c(st(v, "pod")), c(st(v, "as_src")), c(st(v, "as_dst")), c(st(v, "on_iface"))], count(v))).collect();
            if n.summary.is_some() { s } else { n.pods.iter().map(|(k, v)| (None, vec![c(k.clone()), c(""), c(""), c("")], *v)).collect() }
        },
        exact,
        Some("a drop counts once for each pod involved".into()),
    ));
    out.push(ranked(
        r,
        "t-ifaces",
        "Interfaces",
        &["interface", "netns", "pod"],
        |_, n| {
            let s: Vec<_> = arr(n, "by_iface").map(|v| (None, vec![c(st(v, "ifname")), c(st(v, "netns")), c(st(v, "pod"))], count(v))).collect();
            if n.summary.is_some() { s } else { n.ifaces.iter().map(|(k, v)| (None, vec![c(k.clone()), c(""), c("")], *v)).collect() }
        },
        exact,
        None,
    ));
    out.push(ranked(
        r,
        "t-flows",
        "Flows",
        &["proto", "source", "destination", "reason"],
        |_, n| {
            arr(n, "by_flow")
                .map(|v| {
                    let ep = |a: &str, p: &str| if v[p].is_null() { st(v, a) } else { format!("{}:{}", st(v, a), st(v, p)) };
                    (None, vec![c(st(v, "proto")), c(ep("src", "sport")), c(ep("dst", "dport")), c(st(v, "reason"))], count(v))
                })
                .collect()
        },
        exact,
        None,
    ));
    out.retain(|t| !t.rows.is_empty());
    out
}

/// Section 4, per node with a start and end state.
pub fn changes(r: &Report) -> Vec<Table> {
    let mut out = Vec::new();
    for (i, n) in r.nodes.iter().enumerate() {
        let Some(ch) = &n.changes else { continue };
        let mut list = ch.list.clone();
        list.sort();
        let rows = list
            .iter()
            .map(|x| {
                let op = match x.op {
                    Op::Removed => "removed",
                    Op::Added => "added",
                    Op::Changed => "changed",
                };
                Row { anchor: None, cells: vec![c(op), c(x.kind), c(x.scope.clone()), code(x.text.clone())] }
            })
            .collect();
        let mut note = format!("compared: {}", if ch.compared.is_empty() { "nothing (no start/end state in the bundle)".into() } else { ch.compared.join(", ") });
        if ch.unlisted > 0 {
            let _ = write!(note, "; {} more changes not listed", ch.unlisted);
        }
        out.push(Table { id: format!("changes-{i}"), title: format!("Node {}: start vs end", n.name), headers: ["change", "kind", "where", "what"].map(String::from).to_vec(), rows, note: Some(note) });
    }
    out
}

fn put(out: &mut Vec<(String, String)>, k: &str, v: Option<String>) {
    if let Some(v) = v.filter(|v| !v.is_empty()) {
        out.push((k.to_string(), v));
    }
}

fn num(v: Option<&Value>, k: &str) -> Option<String> {
    v.and_then(|v| v[k].as_u64()).map(thousands)
}

/// Section 7, per node: (key, value) pairs; fields the input does not hold are left out.
#[expect(clippy::many_single_char_names, reason = "short names for the input's JSON documents")]
pub fn facts(r: &Report) -> Vec<(String, Vec<(String, String)>)> {
    r.nodes
        .iter()
        .map(|n| {
            let s = n.summary.as_ref();
            let m = n.manifest.as_ref();
            let v = n.versions.as_ref();
            let mut o = Vec::new();
            put(&mut o, "input", Some(format!("{} ({})", n.input, if n.kind == super::source::Kind::Bundle { "bundle" } else { "capture directory" })));
            put(&mut o, "tool version", v.and_then(|v| v["tracer"].as_str()).or_else(|| m.and_then(|m| m["tool_version"].as_str())).map(|t| format!("tracer {t}")));
            put(&mut o, "command", m.and_then(|m| m["command"].as_str()).map(str::to_string));
            put(&mut o, "kernel", s.and_then(|s| s["kernel"].as_str()).or_else(|| v.and_then(|v| v["kernel_release"].as_str())).map(str::to_string));
            put(&mut o, "OS", v.and_then(|v| v["os"].as_str()).map(str::to_string));
            put(&mut o, "drop probe", s.and_then(|s| s["probe"].as_str()).or_else(|| n.probes.as_ref().and_then(|p| p["kfree_skb"].as_str())).map(str::to_string));
            if let Some(p) = s.and_then(|s| s.get("path")) {
                put(&mut o, "path back end", Some(format!("{} ({} functions{}), {} packets followed", st(p, "backend"), st(p, "functions"), p["fallback"].as_str().map(|f| format!("; fallback: {f}")).unwrap_or_default(), st(p, "packets"))));
            }
            if let Some(t) = v.map(|v| &v["tools"]).and_then(Value::as_object) {
                put(&mut o, "node tools", Some(t.iter().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}: {v}"))).collect::<Vec<_>>().join("; ")));
            }
            put(&mut o, "filter expression", s.and_then(|s| s["expression"].as_str()).map(str::to_string));
            let (a, b) = n.window();
            put(&mut o, "window", a.zip(b).map(|(a, b)| format!("{} to {}", date_time(a), date_time(b))));
            put(&mut o, "duration", s.and_then(|s| s["duration_s"].as_f64()).map(|d| format!("{d:.1} s")));
            put(&mut o, "drops (exact)", num(s, "drops"));
            put(&mut o, "events read", Some(thousands(n.events)));
            put(&mut o, "lost events", num(s, "lost_events"));
            put(&mut o, "of which rate-limited", num(s, "rate_limited"));
            put(&mut o, "drops seen before filtering", num(s, "seen_drops"));
            put(&mut o, "probe misses", num(s, "probe_misses"));
            if n.unreadable > 0 {
                put(&mut o, "unreadable JSON lines", Some(thousands(n.unreadable)));
            }
            if let Some(sk) = m.and_then(|m| m["skipped"].as_array()).filter(|a| !a.is_empty()) {
                put(&mut o, "not in the bundle", Some(sk.iter().map(|x| format!("{} ({})", st(x, "what"), st(x, "why"))).collect::<Vec<_>>().join("; ")));
            }
            (n.name.clone(), o)
        })
        .collect()
}
