//! The Markdown file: sections 1, 3, 4 and 7 as text and tables, for pasting into a write-up.
use std::fmt::Write as _;

use super::{
    model::Report,
    sentences::{self, date_time, thousands},
    tables::{self, Cell, Table},
};

fn cell(c: &Cell) -> String {
    let t = c.text.replace('|', "\\|").replace('\n', " ");
    if c.code && !t.is_empty() { format!("`{}`", t.replace('`', "'")) } else { t }
}

fn table(o: &mut String, t: &Table) {
    let _ = writeln!(o, "### {}\n", t.title);
    let _ = writeln!(o, "| {} |", t.headers.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(t.headers.len()));
    for r in &t.rows {
        let _ = writeln!(o, "| {} |", r.cells.iter().map(cell).collect::<Vec<_>>().join(" | "));
    }
    if let Some(n) = &t.note {
        let _ = writeln!(o, "\n_{n}_");
    }
    o.push('\n');
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", r.title);
    let names = r.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut sub = format!("{} {names}: {} drops", if r.nodes.len() > 1 { "Nodes" } else { "Node" }, thousands(r.drops()));
    if let (Some(s), Some(e)) = r.window() {
        let _ = write!(sub, ", {} to {}", date_time(s), date_time(e));
    }
    let _ = writeln!(o, "{sub}.\n\n## What happened\n");
    for s in sentences::headlines(r) {
        let _ = writeln!(o, "- {}", s.plain());
    }
    let doctor = sentences::doctor(r);
    if !doctor.is_empty() {
        o.push_str("\n### tracer doctor findings\n\n| node | severity | finding | action |\n|---|---|---|---|\n");
        for (n, sev, s, a) in doctor {
            let _ = writeln!(o, "| {} | {} | {} | {} |", n, sev, s.replace('|', "\\|"), a.replace('|', "\\|"));
        }
    }
    o.push_str("\n## Who and where\n\n");
    for t in tables::who_where(r) {
        table(&mut o, &t);
    }
    o.push_str("## What changed on the node during the window\n\n");
    let ch = tables::changes(r);
    if ch.is_empty() {
        o.push_str("No node state at start and end in this input.\n\n");
    }
    for t in &ch {
        if t.rows.is_empty() {
            let _ = writeln!(o, "### {}\n\nNothing changed ({}).\n", t.title, t.note.as_deref().unwrap_or_default());
        } else {
            table(&mut o, t);
        }
    }
    o.push_str("## Run facts\n\n");
    for (node, kv) in tables::facts(r) {
        let _ = writeln!(o, "### {node}\n\n| fact | value |\n|---|---|");
        for (k, v) in kv {
            let _ = writeln!(o, "| {k} | {} |", v.replace('|', "\\|"));
        }
        o.push('\n');
    }
    o
}
