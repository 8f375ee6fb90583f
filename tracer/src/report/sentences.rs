//! Section 1: what happened, in plain words, generated from the data. One sentence per top
//! finding (a group of alike drops), each pointing at its evidence further down the page.
use std::fmt::Write as _;

use super::{
    event::Culprit,
    model::{Group, GroupKey, Node, Report},
    state::Op,
};

/// Findings told as sentences per report.
pub const TOP: usize = 6;

/// One sentence: plain text parts and code parts (rule text), with the anchor of its evidence.
#[derive(Debug, Clone)]
pub struct Sentence {
    pub parts: Vec<Part>,
    pub anchor: String,
}

#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    Code(String),
}

impl Sentence {
    pub fn plain(&self) -> String {
        self.parts.iter().map(|p| match p { Part::Text(t) => t.clone(), Part::Code(c) => format!("`{c}`") }).collect()
    }
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `HH:MM:SS` (UTC) of a time in ns since the epoch.
pub fn clock(ns: i128) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    let full = humantime::format_rfc3339_seconds(st).to_string();
    full.get(11..19).unwrap_or(&full).to_string()
}

pub fn date_time(ns: i128) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_seconds(st).to_string().replace('T', " ").replace('Z', " UTC")
}

/// The anchor of a culprit's row in section 3.
pub fn culprit_anchor(node: usize, c: &Culprit) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.hash(&mut h);
    format!("c{node}-{:x}", h.finish() & 0xffff_ffff)
}

fn what(k: &GroupKey, g: &Group) -> String {
    let proto = k.proto.as_deref().map(str::to_uppercase);
    let is_syn = g.syns == g.count && g.count > 0;
    let noun = match (proto.as_deref(), is_syn) {
        (Some("TCP"), true) => if g.count == 1 { "TCP SYN".to_string() } else { "TCP SYNs".to_string() },
        (Some(p), _) => format!("{p} {}", if g.count == 1 { "packet" } else { "packets" }),
        (None, _) => (if g.count == 1 { "packet" } else { "packets" }).to_string(),
    };
    let mut s = format!("{} {noun}", thousands(g.count));
    if let Some(src) = &k.src {
        let _ = write!(s, " from {src}");
    }
    if let Some(dst) = &k.dst {
        let _ = match k.dport {
            Some(p) => write!(s, " to {dst}:{p}"),
            None => write!(s, " to {dst}"),
        };
    }
    s
}

fn when(node: &Node, multi: bool, g: &Group) -> String {
    let mut s = String::new();
    if multi || node.kind == super::source::Kind::Bundle {
        let _ = write!(s, " on {}", node.name);
    }
    match (g.first_ns, g.last_ns) {
        (Some(a), Some(b)) if clock(a) == clock(b) => {
            let _ = write!(s, " at {}", clock(a));
        }
        (Some(a), Some(b)) => {
            let _ = write!(s, " between {} and {}", clock(a), clock(b));
        }
        _ => {}
    }
    s
}

fn finding(ni: usize, node: &Node, multi: bool, k: &GroupKey, g: &Group) -> Sentence {
    let anchor = culprit_anchor(ni, &k.culprit);
    let who = what(k, g);
    let when = when(node, multi, g);
    let were = if g.count == 1 { "was" } else { "were" };
    let parts = match (&k.culprit, k.reason.as_str()) {
        (Culprit::Rule(nf), _) => {
            let ctx = k.culprit.context();
            let mut p = vec![Part::Text(format!("{who} {were} dropped by ")), Part::Code(k.culprit.text())];
            if !ctx.is_empty() {
                p.push(Part::Text(format!(" ({ctx})")));
            }
            if nf.attribution.as_deref().is_some_and(|a| a == "ambiguous" || a == "hook") {
                p.push(Part::Text(format!(" (attribution: {})", nf.attribution.as_deref().unwrap_or_default())));
            }
            p.push(Part::Text(format!("{when}.")));
            p
        }
        (Culprit::Program(_), _) => vec![
            Part::Text(format!("{who} {were} dropped by BPF program ")),
            Part::Code(k.culprit.text()),
            Part::Text(format!(" ({}){when}.", k.culprit.context())),
        ],
        (Culprit::Location(l), "NO_SOCKET") => vec![Part::Text(format!("{who} found no socket")), Part::Text(loc(l)), Part::Text(format!("{when}."))],
        (Culprit::Location(l), reason) => vec![Part::Text(format!("{who} {were} dropped with reason {reason}")), Part::Text(loc(l)), Part::Text(format!("{when}."))],
    };
    Sentence { parts, anchor }
}

fn loc(l: &str) -> String {
    if l.is_empty() { String::new() } else { format!(" (in {l})") }
}

/// The headline sentences, biggest finding first, then what the node state says.
pub fn headlines(r: &Report) -> Vec<Sentence> {
    let multi = r.nodes.len() > 1;
    let mut out = Vec::new();
    if r.drops() == 0 && r.nodes.iter().all(|n| n.events == 0) {
        let (s, e) = r.window();
        let span = match (s, e) {
            (Some(s), Some(e)) => format!(" between {} and {}", date_time(s), date_time(e)),
            _ => String::new(),
        };
        let names = r.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
        out.push(Sentence { parts: vec![Part::Text(format!("No drops: no packet matching the capture's filters was dropped on {names}{span}."))], anchor: "facts".into() });
    }
    let mut all: Vec<(usize, &GroupKey, &Group)> = r.nodes.iter().enumerate().flat_map(|(i, n)| n.groups.iter().map(move |(k, g)| (i, k, g))).collect();
    all.sort_by(|a, b| b.2.count.cmp(&a.2.count).then_with(|| a.1.cmp(b.1)));
    for (i, k, g) in all.iter().take(TOP) {
        out.push(finding(*i, &r.nodes[*i], multi, k, g));
    }
    if all.len() > TOP {
        let rest: u64 = all[TOP..].iter().map(|x| x.2.count).sum();
        out.push(Sentence { parts: vec![Part::Text(format!("{} more drops in {} smaller groups.", thousands(rest), thousands((all.len() - TOP) as u64)))], anchor: "drops".into() });
    }
    for (i, n) in r.nodes.iter().enumerate() {
        if let Some(lost) = n.lost_events().filter(|l| *l > 0) {
            out.push(Sentence {
                parts: vec![Part::Text(format!("{} drops on {} were counted but their events were lost; the exact totals are in the tables, the breakdowns above count events.", thousands(lost), n.name))],
                anchor: format!("facts-{i}"),
            });
        }
        if let Some(c) = &n.changes {
            let (rm, add, ch) = (c.count(Op::Removed), c.count(Op::Added), c.count(Op::Changed));
            if rm + add + ch > 0 {
                let removed_rules: Vec<&str> = c.list.iter().filter(|x| x.op == Op::Removed && x.kind == "rule").map(|x| x.text.as_str()).take(2).collect();
                let mut parts = vec![Part::Text(format!("The node state of {} changed during the window: {rm} removed, {add} added, {ch} changed", n.name))];
                if removed_rules.is_empty() {
                    parts.push(Part::Text(".".into()));
                } else {
                    parts.push(Part::Text(", among them the removed rule ".into()));
                    for (j, rule) in removed_rules.iter().enumerate() {
                        if j > 0 {
                            parts.push(Part::Text(" and ".into()));
                        }
                        parts.push(Part::Code((*rule).to_string()));
                    }
                    parts.push(Part::Text(".".into()));
                }
                out.push(Sentence { parts, anchor: format!("changes-{i}") });
            }
        }
    }
    out
}

/// `doctor` findings at the end of the window (else at its start): (node, severity, summary, action).
pub fn doctor(r: &Report) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for n in &r.nodes {
        let Some(d) = n.doctor_end.as_ref().or(n.doctor_start.as_ref()) else { continue };
        for f in d["findings"].as_array().into_iter().flatten() {
            let g = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            out.push((n.name.clone(), g("severity"), g("summary"), g("action")));
        }
    }
    out
}
