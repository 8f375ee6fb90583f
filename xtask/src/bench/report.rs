//! Results: per-arm medians, ratios to the baseline (of medians, and per round), the flood's
//! exactness, the tracer's start time and memory, the targets, and how busy the machine was.
//! As JSON (`bench.json`: every run, every aggregate) and as Markdown (`bench.md`, the README's
//! table).
use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Arm, Phase, Plan, Run, machine, soak::Soak, stats::Spread};

/// Targets from the issue (reported, not enforced).
const PPS_RATIO_TARGET: f64 = 0.97;
/// Issue 12: a drop flood at ≥ 0.95 of the baseline, and above bpftrace's counter.
const FLOOD_RATIO_TARGET: f64 = 0.95;
/// Issue 12: `--path` with an expression that matches nothing.
const PATH_RATIO_TARGET: f64 = 0.90;
/// Issue 13: `tracer watch` on forwarded traffic, and during a drop flood.
const WATCH_PPS_TARGET: f64 = 0.98;
const WATCH_FLOOD_TARGET: f64 = 0.95;
const READY_TARGET_S: f64 = 1.0;
const RSS_TARGET_MIB: f64 = 64.0;
const README_BEGIN: &str = "<!-- bench:begin -->";
const README_END: &str = "<!-- bench:end -->";

pub struct Report<'a> {
    plan: &'a Plan,
    runs: &'a [Run],
    soak: Option<&'a Soak>,
    date: String,
    machine: Value,
    tracer: Value,
    elapsed: Duration,
}

/// One metric of one arm against the baseline.
#[derive(Debug, Clone, Copy)]
struct Compared {
    arm: Spread,
    ratio: Option<f64>,
    pairs: Option<Spread>,
}

/// `git describe --always --dirty` of the source tree ("" outside a checkout).
pub fn git_describe() -> String {
    crate::cmd::probe(std::process::Command::new("git").args(["-C"]).arg(crate::cmd::root()).args(["describe", "--always", "--dirty"])).unwrap_or_default()
}

impl<'a> Report<'a> {
    /// `tracer`: the binary and `git_describe` of the tree when the bench started.
    pub fn new(plan: &'a Plan, runs: &'a [Run], soak: Option<&'a Soak>, tracer: (&Path, &str), elapsed: Duration) -> Self {
        let (tracer, git) = tracer;
        let version = crate::cmd::probe(std::process::Command::new(tracer).arg("--version")).unwrap_or_default();
        let probe = runs
            .iter()
            .find_map(|r| r.peer.as_ref()?.summary.as_ref()?["probe"].as_str().map(String::from))
            .unwrap_or_default();
        Self {
            plan,
            runs,
            soak,
            date: date("+%Y-%m-%d %H:%M UTC"),
            machine: machine::describe(),
            tracer: json!({ "path": tracer, "version": version.trim(), "git": git.trim(), "probe": probe }),
            elapsed,
        }
    }

    /// The measured rounds' runs that succeeded (not the BPF statistics round's).
    fn ok_runs(&self, phase: Phase, arm: &str) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| r.phase == phase && r.arm == arm && r.error.is_none() && !r.stats)
    }

    /// The BPF statistics round's runs that succeeded.
    fn stats_runs(&self, phase: Phase, arm: &str) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| r.phase == phase && r.arm == arm && r.error.is_none() && r.stats)
    }

    fn values(&self, phase: Phase, arm: &str, key: &str) -> Vec<f64> {
        self.ok_runs(phase, arm).filter_map(|r| r.value(key)).collect()
    }

    fn compare(&self, phase: Phase, arm: &str, key: &str) -> Option<Compared> {
        let a = Spread::of(&self.values(phase, arm, key))?;
        let base = Spread::of(&self.values(phase, "baseline", key));
        let pairs: Vec<f64> = self
            .ok_runs(phase, arm)
            .filter_map(|r| {
                let b = self.ok_runs(phase, "baseline").find(|b| b.round == r.round)?.value(key)?;
                Some(r.value(key)? / b)
            })
            .collect();
        Some(Compared { arm: a, ratio: base.map(|b| a.median / b.median), pairs: Spread::of(&pairs) })
    }

    fn arms(&self, phase: Phase) -> impl Iterator<Item = &Arm> {
        self.plan.arms.iter().filter(move |a| a.phases.contains(&phase))
    }

    fn busy(&self, phase: Phase, arm: &str) -> (usize, usize) {
        let runs: Vec<&Run> = self.runs.iter().filter(|r| r.phase == phase && r.arm == arm && !r.stats).collect();
        (runs.iter().filter(|r| r.busy || !r.foreign_bpf.is_empty()).count(), runs.len())
    }

    fn peer_spread(&self, phase: Option<Phase>, arms: &[&str], f: impl Fn(&super::peer::Stopped) -> f64) -> Option<Spread> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| phase.is_none_or(|p| r.phase == p) && arms.contains(&r.arm))
            .filter_map(|r| r.peer.as_ref().map(&f))
            .collect();
        Spread::of(&v)
    }

    fn tracer_arms(&self) -> Vec<&'static str> {
        self.plan.arms.iter().filter(|a| matches!(a.peer, Some(super::Kind::Tracer { .. }))).map(|a| a.key).collect()
    }

    fn floods(&self, arm: &str) -> Vec<&super::Exact> {
        self.ok_runs(Phase::Flood, arm).filter_map(|r| r.exact.as_ref()).collect()
    }

    pub fn json(&self) -> Value {
        let mut arms = Vec::new();
        for a in &self.plan.arms {
            let mut m = serde_json::Map::new();
            for (phase, keys) in [(Phase::Throughput, &["udp_kpps", "tcp_gbps"][..]), (Phase::Flood, &["flood_kpps"][..])] {
                if !a.phases.contains(&phase) {
                    continue;
                }
                for k in keys {
                    if let Some(c) = self.compare(phase, a.key, k) {
                        m.insert(
                            (*k).to_string(),
                            json!({ "spread": c.arm.to_json(3), "ratio": c.ratio.map(|r| super::stats::round(r, 4)), "pairs": c.pairs.map(|p| p.to_json(4)) }),
                        );
                    }
                }
                let (busy, n) = self.busy(phase, a.key);
                m.insert(format!("{}_busy_runs", phase.name()), json!({ "busy": busy, "runs": n }));
            }
            if let Some(s) = self.peer_spread(None, &[a.key], |p| p.ready_s) {
                m.insert("ready_s".into(), s.to_json(3));
            }
            if let Some(s) = self.peer_spread(None, &[a.key], |p| mib(p.rss_kib)) {
                m.insert("rss_mib".into(), s.to_json(1));
            }
            let floods = self.floods(a.key);
            if !floods.is_empty() {
                m.insert("floods_exact".into(), json!({ "exact": floods.iter().filter(|e| e.ok()).count(), "floods": floods.len() }));
            }
            arms.push(json!({ "key": a.key, "label": a.label, "unavailable": a.unavailable, "results": m }));
        }
        json!({
            "date": self.date,
            "machine": self.machine,
            "tracer": self.tracer,
            "plan": {
                "quick": self.plan.quick, "rounds": self.plan.rounds, "udp_seconds": self.plan.udp_s, "tcp_seconds": self.plan.tcp_s,
                "flood_packets": self.plan.flood_packets, "flood_seconds": self.plan.flood_s, "cooldown_seconds": self.plan.cooldown_s,
                "wait_idle_seconds": self.plan.wait_idle_s, "busy_pct": self.plan.busy_pct, "elapsed_seconds": self.elapsed.as_secs(),
                "bpf_stats": self.plan.bpf_stats, "peer_cpu": self.plan.peer_cpu, "conntrack": self.plan.conntrack,
            },
            "targets": self.targets().iter().map(|t| json!({ "target": t.0, "measured": t.1, "met": t.2 })).collect::<Vec<_>>(),
            "arms": arms,
            "runs": self.runs.iter().map(Run::to_json).collect::<Vec<_>>(),
            "soak": self.soak.map(Soak::to_json),
        })
    }

    /// (target, measured, met).
    fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut t = Vec::new();
        let ratio = |c: Option<Compared>, target: f64| match c {
            Some(Compared { ratio: Some(r), pairs, .. }) => {
                let p = pairs.map(|p| format!(" (pairs {:.3}–{:.3})", p.min, p.max)).unwrap_or_default();
                (format!("{r:.3}{p}"), Some(r >= target))
            }
            _ => ("not measured".into(), None),
        };
        // What the machine allows at the same hooks (an empty program there), beside each.
        let floor_of = |phase: Phase, arm: &str| self.compare(phase, arm, if phase == Phase::Flood { "flood_kpps" } else { "udp_kpps" }).and_then(|c| c.ratio).map_or(String::new(), |f| format!("; floor {f:.3}"));
        let (m, ok) = ratio(self.compare(Phase::Throughput, "drop", "udp_kpps"), PPS_RATIO_TARGET);
        let m = format!("{m}{}", floor_of(Phase::Throughput, "floor"));
        t.push((format!("drop mode: 64 B UDP pps ratio ≥ {PPS_RATIO_TARGET}"), m, ok));
        let bpftrace = self.compare(Phase::Flood, "bpftrace", "flood_kpps").and_then(|c| c.ratio);
        let (m, ok) = ratio(self.compare(Phase::Flood, "drop", "flood_kpps"), FLOOD_RATIO_TARGET);
        let flood = self.compare(Phase::Flood, "drop", "flood_kpps").and_then(|c| c.ratio);
        let (m, ok) = match (bpftrace, flood) {
            (Some(b), Some(f)) => (format!("{m}; bpftrace {b:.3}"), ok.map(|ok| ok && f > b)),
            _ => (format!("{m}; bpftrace not measured"), None),
        };
        let m = format!("{m}{}", floor_of(Phase::Flood, "floor"));
        t.push((format!("drop flood: rate ratio ≥ {FLOOD_RATIO_TARGET} and above bpftrace's"), m, ok));
        let (m, ok) = ratio(self.compare(Phase::Throughput, "path", "udp_kpps"), PATH_RATIO_TARGET);
        let m = format!("{m}{}", floor_of(Phase::Throughput, "path_floor"));
        t.push((format!("--path, expression matching nothing: 64 B UDP pps ratio ≥ {PATH_RATIO_TARGET}"), m, ok));
        let (m, ok) = ratio(self.compare(Phase::Throughput, "watch", "udp_kpps"), WATCH_PPS_TARGET);
        t.push((format!("watch: 64 B UDP pps ratio ≥ {WATCH_PPS_TARGET}"), m, ok));
        let (m, ok) = ratio(self.compare(Phase::Flood, "watch", "flood_kpps"), WATCH_FLOOD_TARGET);
        t.push((format!("watch: drop flood rate ratio ≥ {WATCH_FLOOD_TARGET}"), m, ok));
        let floods: Vec<&super::Exact> = self.tracer_arms().iter().flat_map(|a| self.floods(a)).collect();
        let exact = floods.iter().filter(|e| e.ok()).count();
        let lost: u64 = floods.iter().filter_map(|e| e.lost_events).sum();
        t.push((
            "drop flood: every drop in the pcapng or counted as lost".into(),
            if floods.is_empty() { "not measured".into() } else { format!("{exact} of {} traced floods exact ({lost} lost events in all)", floods.len()) },
            (!floods.is_empty()).then_some(exact == floods.len()),
        ));
        match self.peer_spread(None, &["drop"], |p| p.ready_s) {
            Some(s) => t.push((format!("start to ready file < {READY_TARGET_S} s"), format!("median {:.3} s [{:.3}–{:.3}], n={}", s.median, s.min, s.max, s.n), Some(s.median < READY_TARGET_S))),
            None => t.push((format!("start to ready file < {READY_TARGET_S} s"), "not measured".into(), None)),
        }
        match self.peer_spread(None, &self.tracer_arms(), |p| mib(p.rss_kib)) {
            Some(s) => t.push((format!("peak RSS < {RSS_TARGET_MIB} MiB"), format!("max {:.1} MiB (median {:.1})", s.max, s.median), Some(s.max < RSS_TARGET_MIB))),
            None => t.push((format!("peak RSS < {RSS_TARGET_MIB} MiB"), "not measured".into(), None)),
        }
        t
    }

    pub fn markdown(&self) -> String {
        let p = self.plan;
        let mut s = String::new();
        let _ = writeln!(s, "`cargo xtask bench{}` of {} on {}.", if p.quick { " --quick" } else { "" }, self.date, machine::one_line(&self.machine));
        let _ = writeln!(
            s,
            "Tracer {} ({}, drop probe {}). {} rounds; UDP {} s and TCP {} s per run, floods of {} packets (≤ {} s); arms interleaved in an order rotating per round; {:.0} s in all.",
            self.tracer["git"].as_str().unwrap_or("?"),
            self.tracer["version"].as_str().unwrap_or("?"),
            self.tracer["probe"].as_str().filter(|v| !v.is_empty()).unwrap_or("?"),
            p.rounds,
            p.udp_s,
            p.tcp_s,
            thousands(p.flood_packets),
            p.flood_s,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "Node: the testbed's netns node (pods on `lxc…` veths, /32 routes, forwarding in the node namespace), iptables: the flood's DROP rule in FORWARD, one in INPUT{}; peer {}{}.",
            if p.conntrack { ", a nat MASQUERADE rule (conntrack on)" } else { " (no conntrack)" },
            p.peer_cpu.map_or("not pinned".to_string(), |c| format!("pinned to CPU {c}")),
            if p.bpf_stats { "; BPF run time from one more run per arm and phase with the kernel's statistics on (not in the rates: the statistics' clock reads cost the node too)" } else { "" }
        );
        let _ = writeln!(s, "Medians [min–max] over the rounds; ratio = arm median / baseline median; pairs = per-round arm/baseline [min–max].\n");

        s.push_str("| target | measured | met |\n|---|---|---|\n");
        for (t, m, ok) in self.targets() {
            let ok = match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let _ = writeln!(s, "| {t} | {m} | {ok} |");
        }

        let _ = writeln!(s, "\n**Throughput**, pod-a → node → pod-b (sender pinned to CPU {}, receiver to CPU {}); tracer expression `{}` (matches nothing):\n", super::traffic::SENDER_CPU, super::traffic::RECEIVER_CPU, super::NON_MATCHING);
        s.push_str("| arm | UDP 64 B, k pps | ratio | pairs | TCP, Gbit/s | ratio | pairs | busy runs |\n|---|---|---|---|---|---|---|---|\n");
        for a in self.arms(Phase::Throughput) {
            if let Some(why) = &a.unavailable {
                let _ = writeln!(s, "| {} | {why} | | | | | | |", a.label);
                continue;
            }
            let mut row = format!("| {} ", a.label);
            for (k, d) in [("udp_kpps", 1), ("tcp_gbps", 2)] {
                row.push_str(&cells(self.compare(Phase::Throughput, a.key, k), d, a.key == "baseline"));
            }
            let (b, n) = self.busy(Phase::Throughput, a.key);
            let _ = writeln!(s, "{row}| {b}/{n} |");
        }

        let _ = writeln!(s, "\n**Drop flood**: {} × 64 B UDP pod-a → pod-b:{} into an iptables DROP in FORWARD (≤ {} s); the tracer captures it (`udp and dst host … and dst port {}`, pcapng + JSON + summary, all read back):\n", thousands(p.flood_packets), super::node::FLOOD_PORT, p.flood_s, super::node::FLOOD_PORT);
        s.push_str("| arm | flood, k pps | ratio | pairs | counted = rule's drops | events + lost = drops, pcapng = JSON = events | lost events | busy runs |\n|---|---|---|---|---|---|---|---|\n");
        for a in self.arms(Phase::Flood) {
            if let Some(why) = &a.unavailable {
                let _ = writeln!(s, "| {} | {why} | | | | | | |", a.label);
                continue;
            }
            let mut row = format!("| {} ", a.label);
            row.push_str(&cells(self.compare(Phase::Flood, a.key, "flood_kpps"), 1, a.key == "baseline"));
            let floods = self.floods(a.key);
            if floods.is_empty() {
                row.push_str("| – | – | – ");
            } else {
                let counted = floods.iter().filter(|e| e.counted == e.rule_drops).count();
                let (nfull, okfull) =
                    floods.iter().filter(|e| e.events.is_some()).fold((0, 0), |(n, k), e| (n + 1, k + usize::from(e.ok())));
                let lost: Vec<u64> = floods.iter().filter_map(|e| e.lost_events).collect();
                let _ = write!(
                    row,
                    "| {counted}/{} ({}) | {} | {} ",
                    floods.len(),
                    floods.iter().map(|e| if e.counted == e.rule_drops { thousands(e.counted) } else { format!("{} ≠ {}", thousands(e.counted), thousands(e.rule_drops)) }).collect::<Vec<_>>().join(", "),
                    if nfull == 0 { "–".to_string() } else { format!("{okfull}/{nfull}") },
                    if lost.is_empty() { "–".to_string() } else { lost.iter().map(|l| thousands(*l)).collect::<Vec<_>>().join(", ") },
                );
            }
            let (b, n) = self.busy(Phase::Flood, a.key);
            let _ = writeln!(s, "{row}| {b}/{n} |");
        }

        s.push_str("\n**Peer process**: start → ready (tracer: its `--ready-file`; bpftrace: its \"Attaching\" line), peak RSS (max of VmHWM and wait4's ru_maxrss), CPU time per run:\n\n");
        s.push_str("| arm | phase | ready, s | peak RSS, MiB | CPU, s |\n|---|---|---|---|---|\n");
        for a in self.plan.arms.iter().filter(|a| a.peer.is_some() && a.unavailable.is_none()) {
            for phase in [Phase::Throughput, Phase::Flood] {
                let ready = self.peer_spread(Some(phase), &[a.key], |p| p.ready_s);
                let rss = self.peer_spread(Some(phase), &[a.key], |p| mib(p.rss_kib));
                let cpu = self.peer_spread(Some(phase), &[a.key], |p| p.cpu_s);
                if let (Some(r), Some(m), Some(c)) = (ready, rss, cpu) {
                    let _ = writeln!(s, "| {} | {} | {} | {} | {} |", a.key, phase.name(), r.show(3), m.show(1), c.show(2));
                }
            }
        }
        if p.bpf_stats {
            s.push_str(&self.bpf_table());
            s.push_str(&self.bpf_program_table());
        }
        s.push_str(&self.soak.map(super::soak::markdown).unwrap_or_default());
        s.push('\n');
        s.push_str(&self.machine_note());
        let errors: Vec<String> = self.runs.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{} {} round {}: {e}", r.phase.name(), r.arm, r.round + 1))).collect();
        if !errors.is_empty() {
            let _ = writeln!(s, "\n**Failed runs** ({}): {}", errors.len(), errors.join("; "));
        }
        s
    }

    /// ns per program run from the kernel's statistics, per arm and phase.
    fn bpf_table(&self) -> String {
        let mut s = String::from(
            "\n**BPF run time** (kernel statistics, including their own two clock reads per run; from the statistics round): probes = the drop probe (or bpftrace's program), observers = netfilter observers; runs = invocations per measured run; for floods, the BPF time per flood packet and the rate ratio that time alone allows against the baseline's median (1 / (1 + ns per packet × baseline rate)):\n\n| arm | phase | probes, ns/run | probe runs | observers, ns/run | observer runs | flood: BPF ns per packet | ratio bound |\n|---|---|---|---|---|---|---|---|\n",
        );
        for a in self.plan.arms.iter().filter(|a| a.peer.is_some() && a.unavailable.is_none()) {
            for phase in [Phase::Throughput, Phase::Flood] {
                let costs: Vec<super::bpfstats::Cost> =
                    self.stats_runs(phase, a.key).filter_map(|r| r.peer.as_ref()?.bpf).collect();
                if costs.is_empty() {
                    continue;
                }
                let col = |f: &dyn Fn(&super::bpfstats::Cost) -> super::bpfstats::Runs| {
                    let ns: Vec<f64> = costs.iter().filter_map(|c| f(c).ns_per_run()).collect();
                    let mut runs: Vec<u64> = costs.iter().map(|c| f(c).run_cnt).collect();
                    runs.sort_unstable();
                    let shown = match (runs.first(), runs.get(runs.len() / 2), runs.last()) {
                        (Some(lo), Some(mid), Some(hi)) => format!("{} [{}–{}]", thousands(*mid), thousands(*lo), thousands(*hi)),
                        _ => "–".into(),
                    };
                    (Spread::of(&ns).map_or("–".into(), |x| x.show(0)), shown)
                };
                let (pn, pr) = col(&|c| c.probes);
                let (on, or) = col(&|c| c.observers);
                let (per_packet, bound) = if phase == Phase::Flood { self.flood_bound(a.key) } else { ("–".into(), "–".into()) };
                let _ = writeln!(s, "| {} | {} | {pn} | {pr} | {on} | {or} | {per_packet} | {bound} |", a.key, phase.name());
            }
        }
        s
    }

    /// ns per run of each program (by name), median over the arm's runs of a phase.
    fn bpf_program_table(&self) -> String {
        let mut s = String::from("\n**BPF run time per program** (statistics round: median ns/run over the arm's runs [min–max]; runs: median invocations per run):\n\n| arm | phase | program | ns/run | runs |\n|---|---|---|---|---|\n");
        for a in self.plan.arms.iter().filter(|a| a.peer.is_some() && a.unavailable.is_none()) {
            for phase in [Phase::Throughput, Phase::Flood] {
                let per_run: Vec<&Vec<(String, super::bpfstats::Runs)>> = self.stats_runs(phase, a.key).filter_map(|r| Some(&r.peer.as_ref()?.bpf_programs)).collect();
                let mut names: Vec<&str> = per_run.iter().flat_map(|v| v.iter().map(|(n, _)| n.as_str())).collect();
                names.sort_unstable();
                names.dedup();
                for name in names {
                    let runs: Vec<super::bpfstats::Runs> = per_run.iter().filter_map(|v| v.iter().find(|(n, _)| n == name).map(|(_, r)| *r)).collect();
                    let ns: Vec<f64> = runs.iter().filter_map(super::bpfstats::Runs::ns_per_run).collect();
                    let mut cnt: Vec<u64> = runs.iter().map(|r| r.run_cnt).collect();
                    cnt.sort_unstable();
                    let Some(x) = Spread::of(&ns) else { continue };
                    let _ = writeln!(s, "| {} | {} | {name} | {} | {} |", a.key, phase.name(), x.show(0), thousands(cnt[cnt.len() / 2]));
                }
            }
        }
        s
    }

    /// BPF ns per flood packet (median over the arm's floods) and the rate ratio that cost
    /// alone would leave: the baseline spends 1/rate per packet on the sender's CPU.
    fn flood_bound(&self, arm: &str) -> (String, String) {
        let per_packet: Vec<f64> = self
            .stats_runs(Phase::Flood, arm)
            .filter_map(|r| {
                let c = r.peer.as_ref()?.bpf?;
                let sent = r.details["flood"]["sent"].as_u64()?;
                #[expect(clippy::cast_precision_loss, reason = "ns and packet counts far below 2^52")]
                let ns = (c.probes.run_time_ns + c.observers.run_time_ns) as f64 / sent.max(1) as f64;
                Some(ns)
            })
            .collect();
        let Some(p) = Spread::of(&per_packet) else { return ("–".into(), "–".into()) };
        let bound = Spread::of(&self.values(Phase::Flood, "baseline", "flood_kpps")).map_or("–".into(), |b| {
            let base_ns = 1e6 / b.median;
            format!("{:.2}", base_ns / (base_ns + p.median))
        });
        (p.show(0), bound)
    }

    fn machine_note(&self) -> String {
        let spread = |f: &dyn Fn(&Run) -> Option<f64>| Spread::of(&self.runs.iter().filter_map(f).collect::<Vec<_>>());
        let cpu_of = |k: &'static str| move |r: &Run| r.cpu.iter().find(|(n, _)| *n == k).map(|(_, c)| c.busy_pct);
        let mut s = String::from("**Machine load**: CPU busy during the loads (both CPUs; an idle 2-CPU machine shows ~50–80 % here): ");
        let mut parts = Vec::new();
        for k in ["udp", "tcp", "flood"] {
            if let Some(x) = spread(&cpu_of(k)) {
                parts.push(format!("{k} {} %", x.show(0)));
            }
        }
        s.push_str(&parts.join(", "));
        if let Some(x) = spread(&|r: &Run| Some(r.background.busy_pct)) {
            let _ = write!(s, "; background just before each load {} %", x.show(0));
        }
        if let Some(x) = spread(&|r: &Run| Some(r.background.steal_pct))
            && x.max > 0.0
        {
            let _ = write!(s, ", steal {} %", x.show(1));
        }
        let ns: Vec<usize> = self.runs.iter().map(|r| r.netns).collect();
        if let (Some(lo), Some(hi)) = (ns.iter().min(), ns.iter().max()) {
            let _ = write!(s, "; {lo}–{hi} named network namespaces on the machine (the tracer snapshots each one's ruleset at start)");
        }
        let busy = self.runs.iter().filter(|r| r.busy).count();
        let _ = write!(s, ". {busy} of {} runs flagged busy (background > {:.0} %)", self.runs.len(), self.plan.busy_pct);
        let mut foreign: Vec<&str> = self.runs.iter().flat_map(|r| r.foreign_bpf.iter().map(String::as_str)).collect();
        foreign.sort_unstable();
        foreign.dedup();
        let with_foreign = self.runs.iter().filter(|r| !r.foreign_bpf.is_empty()).count();
        if foreign.is_empty() {
            s.push_str("; no other process held BPF programs during the runs.\n");
        } else {
            let shown: Vec<&str> = foreign.iter().take(8).copied().collect();
            let _ = writeln!(s, "; {with_foreign} runs had other BPF holders next to them ({}{}).", shown.join(", "), if foreign.len() > 8 { ", …" } else { "" });
        }
        s
    }
}

/// `| median [min–max] | ratio | pairs ` for one metric.
fn cells(c: Option<Compared>, digits: usize, is_base: bool) -> String {
    match c {
        None => "| – | – | – ".into(),
        Some(c) if is_base => format!("| {} | 1 | – ", c.arm.show(digits)),
        Some(c) => format!(
            "| {} | {} | {} ",
            c.arm.show(digits),
            c.ratio.map_or("–".into(), |r| format!("{r:.3}")),
            c.pairs.map_or("–".into(), |p| format!("{:.3}–{:.3}", p.min, p.max))
        ),
    }
}

#[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn thousands(n: u64) -> String {
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

fn date(fmt: &str) -> String {
    crate::cmd::probe(std::process::Command::new("date").args(["-u", fmt])).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `20261127-221500` for the default output directory.
pub fn stamp_for_path() -> String {
    let d = date("+%Y%m%d-%H%M%S");
    if d.is_empty() { std::process::id().to_string() } else { d }
}

/// One line per run on stderr while the bench goes.
pub fn progress_line(plan: &Plan, r: &Run) -> String {
    let mut s = format!("xtask: bench: [{} {}/{} #{}] {}: ", r.phase.name(), r.round + 1, plan.rounds, r.seq + 1, r.arm);
    if let Some(e) = &r.error {
        let _ = write!(s, "FAILED: {e}");
        return s;
    }
    let vals: Vec<String> = r
        .values
        .iter()
        .map(|(k, v)| match *k {
            "udp_kpps" => format!("UDP {v:.1} k pps"),
            "tcp_gbps" => format!("TCP {v:.2} Gbit/s"),
            "flood_kpps" => format!("flood {v:.1} k pps"),
            _ => format!("{k} {v:.2}"),
        })
        .collect();
    s.push_str(&vals.join(", "));
    if let Some(p) = &r.peer {
        let _ = write!(s, "; ready {:.3} s, RSS {:.1} MiB", p.ready_s, mib(p.rss_kib));
    }
    if let Some(e) = &r.exact {
        let _ = write!(s, "; counted {} of {} rule drops, events {:?} lost {:?}, pcap {:?} → {}", e.counted, e.rule_drops, e.events, e.lost_events, e.pcap_packets, if e.ok() { "exact" } else { "NOT EXACT" });
    }
    let cpu: Vec<String> = r.cpu.iter().map(|(k, c)| format!("{k} {:.0}%", c.busy_pct)).collect();
    let _ = write!(s, "; cpu {}, background {:.0}%", cpu.join(" "), r.background.busy_pct);
    if r.busy {
        s.push_str(" [busy]");
    }
    if !r.foreign_bpf.is_empty() {
        let _ = write!(s, " [other BPF: {}]", r.foreign_bpf.join(" "));
    }
    s
}

/// Replaces what lies between the README's bench markers with `md`.
pub fn update_readme(path: &Path, md: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (Some(b), Some(e)) = (text.find(README_BEGIN), text.find(README_END)) else {
        bail!("{} has no `{README_BEGIN}` … `{README_END}` markers in its Benchmark section", path.display());
    };
    if e < b {
        bail!("{}: the bench markers are out of order", path.display());
    }
    let new = format!("{}{README_BEGIN}\n{}\n{}", &text[..b], md.trim_end(), &text[e..]);
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn readme_section_is_replaced_between_markers() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-readme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("README.md");
        std::fs::write(&p, format!("# x\n## Benchmark\n{README_BEGIN}\nold\n{README_END}\n## Next\n")).unwrap();
        update_readme(&p, "new table\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("# x\n## Benchmark\n{README_BEGIN}\nnew table\n{README_END}\n## Next\n"));
        std::fs::write(&p, "no markers").unwrap();
        assert!(update_readme(&p, "t").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
