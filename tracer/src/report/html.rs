//! The page: one self-contained HTML file (styles, script and SVG inline; no URL of any kind).
//! Everything but the drop table's filter box is static, so the page reads without JavaScript.
use std::fmt::Write as _;

use html_escape::{encode_double_quoted_attribute as attr, encode_text as esc};

use super::{
    charts,
    model::{Report, TABLE_ROWS},
    sentences::{self, Part, date_time, thousands},
    tables::{self, Table},
};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1160px;padding:0 16px 40px;color:#222}\
h1{margin:16px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}.sub{color:#555;margin:0}\
nav a{margin-right:12px}code{background:#f3f3f3;padding:1px 4px;border-radius:3px;font-size:90%;word-break:break-all}\
table{border-collapse:collapse;margin:8px 0 16px;width:100%;font-size:13px}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#f6f6f6}tr:target{background:#fff6bf}.note{color:#666;font-size:12px}.headlines li{margin:6px 0;font-size:16px}\
.headlines a{color:inherit;text-decoration:none;border-bottom:1px dotted #888}.sev-critical{color:#b00;font-weight:bold}.sev-warning{color:#a60}\
#filter{display:none;padding:4px;width:320px}.removed{color:#b00}.added{color:#070}.changed{color:#a60}svg{max-width:100%;height:auto}";

/// Hides non-matching rows; the box is shown only when this runs (no JavaScript, no box).
const SCRIPT: &str = "(function(){var f=document.getElementById('filter');if(!f)return;f.style.display='inline-block';\
var rows=document.querySelectorAll('#drop-table tbody tr');var n=document.getElementById('shown');\
f.addEventListener('input',function(){var q=f.value.toLowerCase();var k=0;\
for(var i=0;i<rows.length;i++){var m=rows[i].textContent.toLowerCase().indexOf(q)>=0;rows[i].style.display=m?'':'none';if(m)k++;}\
n.textContent=k+' shown';});})();";

fn table(o: &mut String, t: &Table) {
    let _ = write!(o, "<h3>{}</h3>", esc(&t.title));
    let _ = write!(o, "<table id=\"{}\"><thead><tr>", attr(&t.id));
    for h in &t.headers {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead><tbody>");
    for r in &t.rows {
        match &r.anchor {
            Some(a) => {
                let _ = write!(o, "<tr id=\"{}\">", attr(a));
            }
            None => o.push_str("<tr>"),
        }
        for c in &r.cells {
            let class = match c.text.as_str() {
                "removed" | "added" | "changed" => format!(" class=\"{}\"", c.text),
                _ => String::new(),
            };
            if c.code {
                let _ = write!(o, "<td{class}><code>{}</code></td>", esc(&c.text));
            } else {
                let _ = write!(o, "<td{class}>{}</td>", esc(&c.text));
            }
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    if let Some(n) = &t.note {
        let _ = write!(o, "<p class=\"note\">{}</p>", esc(n));
    }
}

fn headlines(o: &mut String, r: &Report) {
    o.push_str("<section id=\"what\"><h2>1. What happened</h2><ol class=\"headlines\">");
    for s in sentences::headlines(r) {
        let _ = write!(o, "<li><a href=\"#{}\">", attr(&s.anchor));
        for p in &s.parts {
            match p {
                Part::Text(t) => o.push_str(&esc(t)),
                Part::Code(c) => {
                    let _ = write!(o, "<code>{}</code>", esc(c));
                }
            }
        }
        o.push_str("</a></li>");
    }
    o.push_str("</ol>");
    let doctor = sentences::doctor(r);
    if !doctor.is_empty() {
        o.push_str("<h3>tracer doctor findings</h3><table><thead><tr><th>node</th><th>severity</th><th>finding</th><th>action</th></tr></thead><tbody>");
        for (node, sev, summary, action) in doctor {
            let _ = write!(o, "<tr><td>{}</td><td class=\"sev-{}\">{}</td><td>{}</td><td>{}</td></tr>", esc(&node), attr(&sev), esc(&sev), esc(&summary), esc(&action));
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

fn over_time(o: &mut String, r: &Report) {
    o.push_str("<section id=\"time\"><h2>2. Drops over time</h2>");
    match charts::over_time(r) {
        Some((svg, bin)) => {
            let per = if bin == 1 { "second".to_string() } else { format!("{bin} seconds") };
            let _ = write!(o, "<p class=\"note\">Drop events per {per}, stacked by reason. The shaded span is where the node state changed (between the start and end snapshots; after the last drop of a rule that is gone at the end).</p>");
            o.push_str("<figure id=\"chart-time\">");
            o.push_str(&svg);
            o.push_str("</figure>");
        }
        None => o.push_str("<p>No drop events to draw.</p>"),
    }
    o.push_str("</section>");
}

fn paths(o: &mut String, r: &Report) {
    o.push_str("<section id=\"paths\"><h2>5. Packet paths</h2>");
    let mut any = false;
    for n in &r.nodes {
        for p in &n.packets {
            if let Some(svg) = charts::swimlane(p) {
                any = true;
                let _ = write!(o, "<h3>{}: packet {} {}</h3><p class=\"note\">fate: {}</p><figure class=\"swimlane\">{svg}</figure>", esc(&n.name), p.id, esc(&p.label), esc(&p.fate));
            }
        }
        if n.packets_total > n.packets.len() as u64 {
            let _ = write!(o, "<p class=\"note\">{}: {} of {} followed packets drawn.</p>", esc(&n.name), n.packets.len(), thousands(n.packets_total));
        }
    }
    if !any {
        o.push_str("<p>No followed packets (capture with <code>--path</code> to follow packets hook by hook).</p>");
    }
    o.push_str("</section>");
}

fn drops(o: &mut String, r: &Report) {
    o.push_str("<section id=\"drops\"><h2>6. Every drop</h2>");
    let rows: usize = r.nodes.iter().map(|n| n.rows.len()).sum();
    let events: u64 = r.nodes.iter().map(|n| n.events).sum();
    if rows == 0 {
        o.push_str("<p>No drop events.</p></section>");
        return;
    }
    if events > rows as u64 {
        let _ = write!(o, "<p class=\"note\">The first {} drop events of each input ({} of {} in all); the JSON Lines file holds every one.</p>", thousands(TABLE_ROWS as u64), thousands(rows as u64), thousands(events));
    }
    let _ = write!(o, "<input id=\"filter\" type=\"search\" placeholder=\"filter rows (any text)\"> <span id=\"shown\" class=\"note\">{rows} rows</span>");
    o.push_str("<table id=\"drop-table\"><thead><tr><th>node</th><th>time (UTC)</th><th>reason</th><th>dropped by</th><th>interface</th><th>proto</th><th>source</th><th>destination</th><th>pods</th></tr></thead><tbody>");
    for n in &r.nodes {
        for d in &n.rows {
            let time = d.time.get(11..).unwrap_or(&d.time);
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.node),
                esc(time),
                esc(&d.reason),
                esc(&d.culprit),
                esc(&d.iface),
                esc(&d.proto),
                esc(&d.src),
                esc(&d.dst),
                esc(&d.pods)
            );
        }
    }
    o.push_str("</tbody></table></section>");
}

pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(1 << 20);
    let (s, e) = r.window();
    let names = r.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    let _ = write!(o, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body>", esc(&r.title));
    let _ = write!(o, "<header><h1>{}</h1><p class=\"sub\">{} {}: {} drops", esc(&r.title), if r.nodes.len() > 1 { "nodes" } else { "node" }, esc(&names), thousands(r.drops()));
    if let (Some(s), Some(e)) = (s, e) {
        let _ = write!(o, ", {} to {}", date_time(s), date_time(e));
    }
    o.push_str("</p><nav><a href=\"#what\">what happened</a><a href=\"#time\">over time</a><a href=\"#who\">who and where</a><a href=\"#changes\">node changes</a><a href=\"#paths\">paths</a><a href=\"#drops\">every drop</a><a href=\"#facts\">run facts</a></nav></header>");
    headlines(&mut o, r);
    over_time(&mut o, r);
    o.push_str("<section id=\"who\"><h2>3. Who and where</h2>");
    let who = tables::who_where(r);
    if who.is_empty() {
        o.push_str("<p>No drops.</p>");
    }
    for t in &who {
        table(&mut o, t);
    }
    o.push_str("</section><section id=\"changes\"><h2>4. What changed on the node during the window</h2>");
    let ch = tables::changes(r);
    if ch.is_empty() {
        o.push_str("<p>No node state at start and end in this input (a bundle has it: <code>tracer capture --bundle DIR</code>).</p>");
    }
    for t in &ch {
        if t.rows.is_empty() {
            let _ = write!(o, "<h3 id=\"{}\">{}</h3><p>Nothing changed.</p><p class=\"note\">{}</p>", attr(&t.id), esc(&t.title), esc(t.note.as_deref().unwrap_or_default()));
        } else {
            table(&mut o, t);
        }
    }
    o.push_str("</section>");
    paths(&mut o, r);
    drops(&mut o, r);
    o.push_str("<section id=\"facts\"><h2>7. Run facts</h2>");
    for (i, (node, kv)) in tables::facts(r).into_iter().enumerate() {
        let _ = write!(o, "<h3 id=\"facts-{i}\">{}</h3><table><tbody>", esc(&node));
        for (k, v) in kv {
            let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
        }
        o.push_str("</tbody></table>");
    }
    let _ = write!(o, "</section><footer class=\"note\">Written by tracer report {}.</footer><script>{SCRIPT}</script></body></html>", env!("CARGO_PKG_VERSION"));
    o.push('\n');
    o
}
