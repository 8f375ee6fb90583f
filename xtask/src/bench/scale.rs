//! The scale arm (issue 18): a capture on a Kubernetes-sized node. For 0, 5,000, 20,000 and
//! 50,000 kube-proxy-like rules (`testbed-node --print-kube-rules`) in the node namespace and 0
//! or 100 pod namespaces (each with a rule of its own): start → ready, CPU seconds (the
//! tracer's and the listings it ran) and peak RSS of a `CAPTURE` capture that sees no drop.
//! Then a storm at 20,000 rules whose every drop needs the rule counters (a statistic match
//! before the DROP: the packet cannot say whether it matched): the tracer's CPU share while
//! it lasts, and whether every event names the rule.
use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    INTERRUPTED, node,
    peer::{self, Kind, Outputs},
    proc,
    stats::Spread,
    traffic,
};

/// What the arm runs with: the tracer, the flood sender, `testbed-node`, a scratch directory.
pub struct Env<'a> {
    pub tracer: &'a Path,
    pub blast: &'a Path,
    pub node: &'a Path,
    pub work: &'a Path,
    pub peer_cpu: Option<usize>,
}

/// Rules in the node namespace, per row.
pub const RULES: [usize; 4] = [0, 5_000, 20_000, 50_000];
/// Pod namespaces (beyond the two pods the traffic uses), per row.
pub const POD_NAMESPACES: [usize; 2] = [0, 100];
/// How long each capture runs (no drops).
const CAPTURE: Duration = Duration::from_secs(30);
/// Starts per row for the ready time (its median): the 30 s capture and this many more, each
/// stopped once ready.
const READY_SAMPLES: usize = 5;
/// The storm: rules, packets (at most `STORM_S` seconds).
const STORM_RULES: usize = 20_000;
const STORM_PACKETS: u64 = 2_000_000;
const STORM_S: f64 = 10.0;
/// The storm's guard: matches the millionth packet only (`statistic` keeps a per-rule count
/// the tracer cannot see), so each drop after it is named from the rule counters.
const GUARD: &str = "-A FORWARD -m statistic --mode nth --every 1000000 --packet 999999 -m comment --comment bench-guard -j DROP";

/// One capture on one node shape.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub rules: usize,
    pub pods: usize,
    /// Start → ready of each start.
    pub ready: Vec<f64>,
    pub cpu_s: f64,
    pub peak_kib: u64,
    pub error: Option<String>,
}

impl Row {
    fn ready(&self) -> Option<Spread> {
        Spread::of(&self.ready)
    }
}

/// The counter-attributed storm.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    pub rules: usize,
    pub rule_drops: u64,
    pub counted: u64,
    pub events: u64,
    /// Events naming the flood's rule (`by_rule`).
    pub named: u64,
    pub lost: u64,
    /// The tracer's CPU (its own and the listings it ran) from the flood's start until it
    /// stopped, and that wall time: what the storm cost, start-up left out.
    pub cpu_s: f64,
    pub wall_s: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Scale {
    pub rows: Vec<Row>,
    pub storm: Storm,
}

pub fn run(env: &Env<'_>) -> Scale {
    let mut scale = Scale::default();
    for pods in POD_NAMESPACES {
        let node = match node::Node::start_with(env.node, &node::Shape { prefix: "bscale", range: "10.248", pods: 2 + pods, conntrack: false }) {
            Ok(n) => n,
            Err(e) => {
                scale.rows.push(Row { pods, error: Some(format!("{e:#}")), ..Row::default() });
                continue;
            }
        };
        if let Err(e) = pod_rules(&node) {
            scale.rows.push(Row { pods, error: Some(format!("{e:#}")), ..Row::default() });
            continue;
        }
        for rules in RULES {
            if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
                return scale;
            }
            let mut row = Row { rules, pods, ..Row::default() };
            if let Err(e) = capture(env, &node, &mut row) {
                row.error = Some(format!("{e:#}"));
            }
            cmd_step(&row);
            scale.rows.push(row);
        }
        if pods == 0 {
            scale.storm.rules = STORM_RULES;
            if let Err(e) = storm(env, &node, &mut scale.storm) {
                scale.storm.error = Some(format!("{e:#}"));
            }
        }
    }
    scale
}

fn cmd_step(r: &Row) {
    let ready = r.ready().map_or_else(|| "–".into(), |s| s.show(3));
    crate::cmd::step(format!("bench: scale: {} rules, {} pod namespaces: ready {ready} s, CPU {:.2} s, peak {} KiB", r.rules, r.pods, r.cpu_s, r.peak_kib));
}

/// Each pod namespace beyond the first two gets a small ruleset of its own.
fn pod_rules(node: &node::Node) -> Result<()> {
    for p in node.pods.iter().skip(2) {
        proc::output("ip", &["netns", "exec", &p.netns, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "6443", "-j", "DROP"], Duration::from_secs(30))?;
    }
    Ok(())
}

/// Replaces the node's filter table with `rules` kube-proxy-like rules, the flood's DROP
/// first in FORWARD (after `guard` when given).
fn load(helper: &Path, node: &node::Node, rules: usize, guard: Option<&str>) -> Result<()> {
    let kube = if rules == 0 { "*filter\nCOMMIT\n".to_string() } else { proc::output(&helper.display().to_string(), &["--print-kube-rules", &rules.to_string()], Duration::from_mins(1))? };
    let mut head: String = guard.map(|g| format!("{g}\n")).unwrap_or_default();
    head.push_str(&node.flood_rule());
    head.push('\n');
    // The flood's rule (and guard) before the first rule of the table.
    let at = kube.find("\n-A ").map_or_else(|| kube.find("COMMIT").unwrap_or(kube.len()), |i| i + 1);
    let text = format!("{}{head}{}", &kube[..at], &kube[at..]);
    node.restore(&text)
}

fn capture(env: &Env<'_>, node: &node::Node, row: &mut Row) -> Result<()> {
    load(env.node, node, row.rules, None)?;
    let dir = env.work.join(format!("scale-{}-{}", row.rules, row.pods));
    let expression = format!("udp and dst host {} and dst port {}", node.pods[1].ip, node::FLOOD_PORT);
    let start = peer::Start { tracer: env.tracer, dir: &dir, expression: &expression, outputs: Outputs::Summary, cpu: env.peer_cpu };
    let kind = Kind::Tracer { netfilter: true, path: false, watch: false, stack: false };
    let running = peer::start(kind, &start)?;
    std::thread::sleep(CAPTURE);
    let stopped = running.stop()?;
    row.ready.push(stopped.ready_s);
    (row.cpu_s, row.peak_kib) = (stopped.cpu_s, stopped.rss_kib);
    for _ in 1..READY_SAMPLES {
        row.ready.push(peer::start(kind, &start)?.stop()?.ready_s);
    }
    Ok(())
}

fn storm(env: &Env<'_>, node: &node::Node, s: &mut Storm) -> Result<()> {
    load(env.node, node, STORM_RULES, Some(GUARD))?;
    let dir = env.work.join("scale-storm");
    let expression = format!("udp and dst host {} and dst port {}", node.pods[1].ip, node::FLOOD_PORT);
    let start = peer::Start { tracer: env.tracer, dir: &dir, expression: &expression, outputs: Outputs::All, cpu: env.peer_cpu };
    let running = peer::start(Kind::Tracer { netfilter: true, path: false, watch: false, stack: false }, &start)?;
    let before = cpu_s(running.pid()).context("the tracer's CPU time")?;
    let t0 = Instant::now();
    let (_, dropped) = traffic::flood(node, env.blast, STORM_PACKETS, STORM_S)?;
    let stopped = running.stop()?;
    s.wall_s = t0.elapsed().as_secs_f64();
    s.rule_drops = dropped;
    s.cpu_s = stopped.cpu_s - before;
    let summary = stopped.summary.as_ref().context("no summary")?;
    let u = |k: &str| summary[k].as_u64().unwrap_or(0);
    (s.counted, s.events, s.lost) = (u("drops"), u("events"), u("lost_events"));
    s.named = summary["by_rule"].as_array().map_or(0, |rules| {
        rules.iter().filter(|r| r["rule"].as_str().is_some_and(|t| t.contains("bench-flood"))).map(|r| r["count"].as_u64().unwrap_or(0)).sum()
    });
    if s.counted == 0 {
        bail!("the tracer counted no drop of the storm ({dropped} by the rule)");
    }
    Ok(())
}

/// CPU seconds of a running process and of its children it has reaped (`/proc/PID/stat`:
/// utime, stime, cutime, cstime), as `wait4` will count them at its end.
fn cpu_s(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11..15)?.iter().map(|f| f.parse::<u64>().unwrap_or(0)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "tick counts far below 2^52")]
    Some(ticks as f64 / hz.max(1) as f64)
}

impl Scale {
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| json!({"rules": r.rules, "pod_namespaces": r.pods, "ready_s": r.ready().map(|s| s.to_json(3)), "cpu_s": r.cpu_s, "peak_rss_kib": r.peak_kib, "error": r.error}))
            .collect();
        let s = &self.storm;
        json!({
            "capture_s": CAPTURE.as_secs(), "rows": rows,
            "storm": {"rules": s.rules, "rule_drops": s.rule_drops, "counted": s.counted, "events": s.events, "named": s.named,
                      "lost_events": s.lost, "cpu_s": s.cpu_s, "wall_s": s.wall_s, "error": s.error},
        })
    }

    /// The report's section.
    pub fn markdown(&self) -> String {
        #[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
        let mib = |k: u64| k as f64 / 1024.0;
        let mut out = format!(
            "\n**Scale** (issue 18): a {} s capture (`udp and dst host … and dst port 9999`, no drops) on a node with kube-proxy-like rules in FORWARD's chains and pod namespaces holding a rule each; ready: median [min–max] of {READY_SAMPLES} starts; CPU (counting the listings the tracer ran) and peak RSS of the 30 s capture:\n\n| rules | pod namespaces | ready, s | CPU, s | peak RSS, MiB |\n|---|---|---|---|---|\n",
            CAPTURE.as_secs()
        );
        for r in &self.rows {
            if let Some(e) = &r.error {
                let _ = writeln!(out, "| {} | {} | failed: {e} | | |", r.rules, r.pods);
            } else {
                let ready = r.ready().map_or_else(|| "–".into(), |s| s.show(3));
                let _ = writeln!(out, "| {} | {} | {ready} | {:.2} | {:.1} |", r.rules, r.pods, r.cpu_s, mib(r.peak_kib));
            }
        }
        let s = &self.storm;
        let _ = write!(out, "\n**Counter-attributed storm** at {} rules: {STORM_PACKETS} × 64 B (≤ {STORM_S} s) into a DROP behind a `statistic` rule; ", s.rules);
        if let Some(e) = &s.error {
            let _ = writeln!(out, "failed: {e}");
        } else {
            let share = if s.wall_s > 0.0 { s.cpu_s / s.wall_s } else { 0.0 };
            let _ = writeln!(
                out,
                "tracer CPU {:.2} s from the storm's start to the tracer's stop, {:.1} s ({share:.2} of a core); counted {} of the rule's {}; events {} (+ {} lost), {} naming the rule.",
                s.cpu_s, s.wall_s, s.counted, s.rule_drops, s.events, s.lost, s.named
            );
        }
        out
    }
}
