//! The end-of-run table on stderr: what dropped, where, on which interface, which flows.
use std::fmt::Write as _;

use super::summary::Summary;

const TOP: usize = 10;

pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{} drops matched in {:.1} s ({} events written, {} lost{}; {} drops seen before filtering)",
        s.drops,
        s.duration_s,
        s.events,
        s.lost_events,
        if s.rate_limited > 0 { format!(", {} of them held back by --max-event-rate", s.rate_limited) } else { String::new() },
        s.seen_drops
    );
    if s.drops == 0 {
        return o;
    }
    section(&mut o, "REASON", s.by_reason.iter().map(|r| (r.reason.clone(), r.count)));
    section(&mut o, "LOCATION", s.by_location.iter().map(|r| (r.location.clone(), r.count)));
    section(
        &mut o,
        "INTERFACE",
        s.by_iface.iter().map(|r| {
            let name = if r.ifname.is_empty() { "(no device)".to_string() } else { r.ifname.clone() };
            let pod = r.pod.as_deref().map(|p| format!(", pod {p}")).unwrap_or_default();
            (format!("{name} (ifindex {}, netns {}{pod})", r.ifindex, r.netns), r.count)
        }),
    );
    if !s.by_program.is_empty() {
        section(&mut o, "DROPPED BY", s.by_program.iter().map(|p| (p.text.clone(), p.count)));
    }
    if !s.by_pod.is_empty() {
        section(
            &mut o,
            "POD",
            s.by_pod.iter().map(|p| (format!("{} (source {}, destination {}, on its interface {})", p.pod, p.as_src, p.as_dst, p.on_iface), p.count)),
        );
    }
    if !s.by_rule.is_empty() {
        section(
            &mut o,
            "NETFILTER RULE",
            s.by_rule.iter().map(|r| (format!("{} {} {}: {}", r.backend, r.table, r.chain, r.rule), r.count)),
        );
    }
    if !s.by_cilium_reason.is_empty() {
        section(&mut o, "CILIUM REASON", s.by_cilium_reason.iter().map(|r| (r.reason.clone(), r.count)));
    }
    section(
        &mut o,
        "FLOW",
        s.by_flow.iter().map(|f| {
            let ep = |a: Option<std::net::IpAddr>, p: Option<u16>| match (a, p) {
                (Some(a), Some(p)) => format!("{a}:{p}"),
                (Some(a), None) => a.to_string(),
                _ => "?".to_string(),
            };
            let proto = f.proto.as_ref().map_or_else(|| "-".to_string(), ToString::to_string);
            (format!("{proto} {} > {} {}", ep(f.src, f.sport), ep(f.dst, f.dport), f.reason), f.count)
        }),
    );
    o
}

fn section(o: &mut String, title: &str, rows: impl Iterator<Item = (String, u64)>) {
    let rows: Vec<_> = rows.collect();
    let width = rows.iter().take(TOP).map(|r| r.0.len()).max().unwrap_or(0).max(title.len());
    let _ = writeln!(o, "\n{title:<width$}  COUNT");
    for (k, c) in rows.iter().take(TOP) {
        let _ = writeln!(o, "{k:<width$}  {c}");
    }
    if rows.len() > TOP {
        let rest: u64 = rows[TOP..].iter().map(|r| r.1).sum();
        let _ = writeln!(o, "{:<width$}  {rest}", format!("({} more)", rows.len() - TOP));
    }
}
