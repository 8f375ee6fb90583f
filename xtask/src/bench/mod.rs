//! `cargo xtask bench`: what the tracer costs on a node, measured against a baseline in the same
//! invocation. A netns node (the testbed's topology), 64-byte UDP and TCP pod-a → pod-b, a drop
//! flood into an iptables DROP rule; arms (baseline, tracer in drop mode with and without
//! netfilter observers, `--path`, bpftrace) interleaved round by round in a rotating order.
//! Writes `bench.json` and `bench.md` (printed too). A benchmark, not a test: it reports the
//! targets, it does not fail on them.
mod bpfstats;
mod machine;
mod node;
mod pcapng;
mod peer;
mod plan;
mod proc;
mod report;
mod scale;
mod soak;
mod stats;
mod traffic;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{build, cmd, setup};
use machine::CpuUse;
use peer::{Kind, Outputs};
pub use plan::{Arm, Phase, Plan};

/// Packages only the bench uses (bpftrace: the peer tool of the comparison arm). Installed when
/// missing; the bench goes on without the arm if that fails.
pub const BENCH_APT_PACKAGES: &[&str] = &["bpftrace"];
/// Matches nothing on the node (TEST-NET-1, RFC 5737): the tracer runs, the traffic is clean.
const NON_MATCHING: &str = "host 192.0.2.1";
/// How long the machine is watched before each run for other load.
const BACKGROUND_WINDOW: Duration = Duration::from_millis(300);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(clap::Args)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
pub struct Args {
    /// About 2 minutes: 3 rounds, 3 s UDP, 2 s TCP, floods of 1,000,000 packets (at most 8 s)
    /// with the baseline and drop mode only (not --no-netfilter); no bpftrace (unless named in
    /// --arms, as the stack and floor arms) and no baseline-vs-baseline arm.
    #[arg(long)]
    quick: bool,
    /// Rounds; each runs every arm once, in an order that rotates from round to round
    /// [default: 5, --quick: 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: Option<u32>,
    /// Directory for bench.json and bench.md [default: target/bench/<UTC time>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seconds of each UDP run [default: 5, --quick: 3].
    #[arg(long)]
    udp_seconds: Option<f64>,
    /// Seconds of each TCP (iperf3) run [default: 5, --quick: 2].
    #[arg(long)]
    tcp_seconds: Option<u32>,
    /// Packets of each drop flood [default: 1000000].
    #[arg(long)]
    flood_packets: Option<u64>,
    /// Time bound of each drop flood [default: 10, --quick: 8].
    #[arg(long)]
    flood_seconds: Option<f64>,
    /// Pause before every run, seconds (writeback of the last run's files, caches)
    /// [default: 1, --quick: 0.5].
    #[arg(long)]
    cooldown: Option<f64>,
    /// Before every run, wait up to this many seconds for the machine to be idle (background
    /// CPU below --busy-pct).
    #[arg(long, default_value_t = 0.0)]
    wait_idle: f64,
    /// Background CPU use (all CPUs, %) above which a run is flagged as taken on a busy machine.
    #[arg(long, default_value_t = 15.0)]
    busy_pct: f64,
    /// Leave out the bpftrace arm.
    #[arg(long)]
    no_bpftrace: bool,
    /// Only these arms (comma-separated keys: drop, `drop_nonf`, path, stack, watch, bpftrace,
    /// baseline2); the baseline always runs. For trying a change on one arm, not for the
    /// README's table.
    #[arg(long, value_delimiter = ',', value_name = "ARMS")]
    arms: Vec<String>,
    /// Report the ns per run of the peers' programs: after the measured rounds of each phase,
    /// one more round of every tracer and bpftrace arm with the kernel's BPF run-time
    /// statistics on. Its rates are not used: the statistics' own two clock reads per program
    /// run cost the node more than some probes do, so the measured rounds run without them.
    #[arg(long)]
    bpf_stats: bool,
    /// Pin the tracer (or bpftrace) to this CPU; by default the scheduler places it, as on a
    /// real node. The sender is on CPU 0, the receiver on CPU 1.
    #[arg(long, value_name = "CPU")]
    peer_cpu: Option<usize>,
    /// Give the node a nat table (a MASQUERADE rule for traffic leaving the pod range), so
    /// conntrack tracks every packet as on most Kubernetes nodes; without it the node's
    /// netfilter rules are the flood's DROP in FORWARD and one in INPUT, and no conntrack.
    #[arg(long)]
    conntrack: bool,
    /// Measure this tracer binary instead of building target/release/tracer.
    #[arg(long, value_name = "FILE")]
    tracer: Option<PathBuf>,
    /// Put this run's table into README.md's Benchmark section.
    #[arg(long)]
    update_readme: bool,
    /// Minutes of the soak: `tracer watch` left running through a drop flood every 30 s, its
    /// RSS read after each [default: 10, --quick: 0 (none)].
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
    /// Run the scale arm (issue 18: ready time, CPU and RSS of a capture with 0 to 50,000
    /// kube-proxy-like rules and 0 or 100 pod namespaces, and a counter-attributed storm at
    /// 20,000 rules; about 8 minutes) [default: in a full run only, not with --quick or --arms].
    #[arg(long)]
    scale: bool,
}

/// Exactness of one traced flood.
#[derive(Debug, Clone)]
pub struct Exact {
    pub rule_drops: u64,
    /// What the peer counted for the flood (tracer `drops`, bpftrace's `NETFILTER_DROP` count).
    pub counted: u64,
    pub events: Option<u64>,
    pub lost_events: Option<u64>,
    pub pcap_packets: Option<u64>,
    pub pcap_comments: Option<u64>,
    pub json_lines: Option<u64>,
}

impl Exact {
    /// Every check that applies holds.
    pub fn ok(&self) -> bool {
        let mut ok = self.counted == self.rule_drops;
        if let (Some(e), Some(l)) = (self.events, self.lost_events) {
            ok &= e + l == self.counted;
            ok &= self.pcap_packets.is_none_or(|p| p == e);
            ok &= self.json_lines.is_none_or(|j| j == e);
            ok &= self.pcap_comments == self.pcap_packets;
        }
        ok
    }

    fn to_json(&self) -> Value {
        json!({
            "rule_drops": self.rule_drops, "counted": self.counted, "events": self.events, "lost_events": self.lost_events,
            "pcap_packets": self.pcap_packets, "pcap_comments": self.pcap_comments, "json_lines": self.json_lines, "ok": self.ok(),
        })
    }
}

/// One measured run of one arm.
#[derive(Debug, Clone)]
pub struct Run {
    pub phase: Phase,
    pub round: u32,
    pub seq: usize,
    pub arm: &'static str,
    /// Taken in the BPF statistics round (`--bpf-stats`): its program run times count, its
    /// rates do not.
    pub stats: bool,
    /// `udp_kpps`, `tcp_gbps`, `flood_kpps`.
    pub values: Vec<(&'static str, f64)>,
    pub cpu: Vec<(&'static str, CpuUse)>,
    /// Machine load just before the load started (peer running, idle).
    pub background: CpuUse,
    pub busy: bool,
    pub foreign_bpf: Vec<String>,
    /// Named network namespaces on the machine when the run started.
    pub netns: usize,
    pub peer: Option<peer::Stopped>,
    pub exact: Option<Exact>,
    pub details: Value,
    pub error: Option<String>,
}

impl Run {
    pub fn value(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn to_json(&self) -> Value {
        json!({
            "phase": self.phase.name(), "round": self.round, "seq": self.seq, "arm": self.arm, "bpf_stats_round": self.stats,
            "values": self.values.iter().map(|(k, v)| (k.to_string(), json!(stats::round(*v, 3)))).collect::<serde_json::Map<_, _>>(),
            "cpu": self.cpu.iter().map(|(k, c)| (k.to_string(), c.to_json())).collect::<serde_json::Map<_, _>>(),
            "background": self.background.to_json(), "busy": self.busy, "foreign_bpf": self.foreign_bpf, "netns": self.netns,
            "peer": self.peer.as_ref().map(peer::Stopped::to_json), "exact": self.exact.as_ref().map(Exact::to_json),
            "details": self.details, "error": self.error,
        })
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub fn run(args: &Args) -> Result<()> {
    if !cmd::is_root() {
        bail!("cargo xtask bench needs root (network namespaces, iptables, eBPF): run it as root");
    }
    if args.update_readme && !args.arms.is_empty() {
        bail!("--update-readme takes the whole bench: drop --arms");
    }
    let started = Instant::now();
    let tracer = match &args.tracer {
        Some(t) => t.canonicalize().with_context(|| format!("--tracer {}", t.display()))?,
        None => build::run()?,
    };
    let helpers = build_helpers()?;
    let bpftrace = !args.no_bpftrace && (!args.quick || plan::named(args, "bpftrace")) && ensure_bpftrace();
    let plan = plan::plan(args, &tracer, bpftrace)?;
    let out = match &args.out {
        Some(d) => d.clone(),
        None => cmd::target_dir()?.join("bench").join(report::stamp_for_path()),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Ctrl-C reaches our children directly (same process group); we stop between runs and
    // clean up instead of dying with the node up.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    cmd::step(format!(
        "bench: {} rounds; arms: {}; results in {}",
        plan.rounds,
        plan.arms.iter().filter(|a| a.unavailable.is_none()).map(|a| a.key).collect::<Vec<_>>().join(", "),
        out.display()
    ));
    let nf_value = if bpftrace { Some(peer::netfilter_drop_value()?) } else { None };
    let node = node::Node::start(&helpers.node, plan.conntrack)?;
    cmd::step(format!("bench: node {} (pods {} → {})", node.netns, node.pods[0].ip, node.pods[1].ip));
    let work = out.join("work");
    // The tree the measured binary came from: as it is now, not after a run of half an hour.
    let git = report::git_describe();
    let ctx = Ctx { plan: &plan, node: &node, tracer: &tracer, blast: &helpers.udpblast, work: work.clone(), nf_value };
    let runs = run_all(&ctx);
    let soak = (runs.is_ok() && plan.soak_min > 0.0).then(|| {
        cmd::step(format!("bench: soak, {} min", plan.soak_min));
        soak::run(&ctx, plan.soak_min)
    });
    drop(node);
    // Its own nodes (one with a hundred pods more): after the main node is gone.
    let scale = (runs.is_ok() && plan.scale).then(|| {
        cmd::step("bench: scale arm");
        scale::run(&scale::Env { tracer: &tracer, blast: &helpers.udpblast, node: &helpers.node, work: &work, peer_cpu: plan.peer_cpu })
    });
    let _ = std::fs::remove_dir_all(&work);
    let runs = runs?;
    let report = report::Report::new(&plan, &runs, soak.as_ref(), (&tracer, &git), started.elapsed());
    let mut json = report.json();
    let mut md = report.markdown();
    if let Some(s) = &scale {
        json["scale"] = s.to_json();
        md.push_str(&s.markdown());
    }
    std::fs::write(out.join("bench.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    std::fs::write(out.join("bench.md"), &md)?;
    println!("{md}");
    cmd::step(format!("bench: wrote {} and {}", out.join("bench.json").display(), out.join("bench.md").display()));
    if args.update_readme {
        report::update_readme(&cmd::root().join("README.md"), &md)?;
        cmd::step("bench: README.md Benchmark section updated");
    }
    if let Some(e) = soak.as_ref().and_then(|s| s.error.as_ref()) {
        bail!("the soak failed: {e}");
    }
    let failed = runs.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        bail!("{failed} of {} runs failed (see the errors above and in bench.json)", runs.len());
    }
    Ok(())
}

struct Helpers {
    udpblast: PathBuf,
    node: PathBuf,
}

/// `udpblast` and `testbed-node` from the tests crate (release: the sender must not be the
/// bottleneck).
fn build_helpers() -> Result<Helpers> {
    cmd::run_cargo(cmd::cargo().args(["build", "--release", "-p", "integration-tests", "--bin", "udpblast", "--bin", "testbed-node"]))?;
    let dir = cmd::target_dir()?.join("release");
    Ok(Helpers { udpblast: dir.join("udpblast"), node: dir.join("testbed-node") })
}

fn ensure_bpftrace() -> bool {
    if peer::bpftrace_available() {
        return true;
    }
    match setup::ensure_apt(BENCH_APT_PACKAGES) {
        Ok(()) => peer::bpftrace_available(),
        Err(e) => {
            cmd::step(format!("bench: warning: no bpftrace ({e:#}); its arm is left out"));
            false
        }
    }
}

struct Ctx<'a> {
    plan: &'a Plan,
    node: &'a node::Node,
    tracer: &'a Path,
    blast: &'a Path,
    work: PathBuf,
    nf_value: Option<i64>,
}

fn run_all(ctx: &Ctx) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for phase in [Phase::Throughput, Phase::Flood] {
        let arms: Vec<&Arm> =
            ctx.plan.arms.iter().filter(|a| a.unavailable.is_none() && a.phases.contains(&phase)).collect();
        for round in 0..ctx.plan.rounds {
            // Rotate the order so no arm always runs first or right after a flood's writeback.
            let k = usize::try_from(round)? % arms.len();
            for arm in arms[k..].iter().chain(&arms[..k]) {
                if INTERRUPTED.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                pause(ctx.plan)?;
                let r = one_run(ctx, phase, round, runs.len(), arm);
                eprintln!("{}", report::progress_line(ctx.plan, &r));
                runs.push(r);
            }
        }
        if ctx.plan.bpf_stats {
            stats_round(ctx, phase, &arms, &mut runs)?;
        }
    }
    Ok(runs)
}

/// One run of every arm with a peer, the kernel's BPF statistics on only meanwhile.
fn stats_round(ctx: &Ctx, phase: Phase, arms: &[&Arm], runs: &mut Vec<Run>) -> Result<()> {
    let _on = bpfstats::enable()?;
    for arm in arms.iter().filter(|a| a.peer.is_some()) {
        if INTERRUPTED.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        pause(ctx.plan)?;
        let mut r = one_run(ctx, phase, ctx.plan.rounds, runs.len(), arm);
        r.stats = true;
        eprintln!("{} (BPF statistics round)", report::progress_line(ctx.plan, &r));
        runs.push(r);
    }
    Ok(())
}

fn pause(plan: &Plan) -> Result<()> {
    std::thread::sleep(Duration::from_secs_f64(plan.cooldown_s.max(0.0)));
    let start = Instant::now();
    while plan.wait_idle_s > 0.0 && start.elapsed().as_secs_f64() < plan.wait_idle_s {
        if machine::background(Duration::from_millis(500))?.busy_pct < plan.busy_pct {
            break;
        }
    }
    Ok(())
}

fn one_run(ctx: &Ctx, phase: Phase, round: u32, seq: usize, arm: &Arm) -> Run {
    let mut run = Run {
        phase,
        round,
        seq,
        arm: arm.key,
        stats: false,
        values: Vec::new(),
        cpu: Vec::new(),
        background: CpuUse::default(),
        busy: false,
        foreign_bpf: machine::foreign_bpf(&[]),
        netns: machine::named_netns(),
        peer: None,
        exact: None,
        details: json!({}),
        error: None,
    };
    if let Err(e) = measure(ctx, phase, arm, &mut run) {
        run.error = Some(format!("{e:#}"));
    }
    run.busy = run.background.busy_pct > ctx.plan.busy_pct;
    run.foreign_bpf.sort();
    run.foreign_bpf.dedup();
    run
}

fn measure(ctx: &Ctx, phase: Phase, arm: &Arm, run: &mut Run) -> Result<()> {
    let b = &ctx.node.pods[1];
    let (expression, outputs) = match phase {
        Phase::Throughput => (NON_MATCHING.to_string(), Outputs::Summary),
        Phase::Flood => (format!("udp and dst host {} and dst port {}", b.ip, node::FLOOD_PORT), Outputs::All),
    };
    let dir = ctx.work.join(run.seq.to_string());
    let start = peer::Start { tracer: ctx.tracer, dir: &dir, expression: &expression, outputs, cpu: ctx.plan.peer_cpu };
    let running = arm.peer.map(|k| peer::start(k, &start)).transpose()?;
    let ours: Vec<i32> = running.iter().map(peer::Running::pid).collect();
    run.background = machine::background(BACKGROUND_WINDOW)?;
    let mut details = serde_json::Map::new();
    let mut rule_drops = None;
    match phase {
        Phase::Throughput => {
            let u = traffic::udp(ctx.node, ctx.blast, ctx.plan.udp_s)?;
            run.values.push(("udp_kpps", u.value));
            run.cpu.push(("udp", u.cpu));
            details.insert("udp".into(), u.details);
            let t = traffic::tcp(ctx.node, ctx.plan.tcp_s)?;
            run.values.push(("tcp_gbps", t.value));
            run.cpu.push(("tcp", t.cpu));
            details.insert("tcp".into(), t.details);
        }
        Phase::Flood => {
            let (f, dropped) = traffic::flood(ctx.node, ctx.blast, ctx.plan.flood_packets, ctx.plan.flood_s)?;
            run.values.push(("flood_kpps", f.value));
            run.cpu.push(("flood", f.cpu));
            details.insert("flood".into(), f.details);
            rule_drops = Some(dropped);
        }
    }
    run.foreign_bpf.extend(machine::foreign_bpf(&ours));
    run.details = details.into();
    if let Some(r) = running {
        let stopped = r.stop()?;
        // A floor counts nothing: there is no total to check.
        if let Some(rule_drops) = rule_drops.filter(|_| !matches!(arm.peer, Some(Kind::Floor { .. }))) {
            run.exact = Some(exactness(&stopped, rule_drops, ctx.nf_value.map(|v| (v, ctx.node.netns_inode))));
        }
        run.peer = Some(stopped);
    }
    // A flood's outputs are gone now; let their writeback not tax the next run.
    if phase == Phase::Flood {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
    }
    Ok(())
}

/// `nf_key`: bpftrace's map key for the flood's drops (`NETFILTER_DROP`, the node's netns).
fn exactness(s: &peer::Stopped, rule_drops: u64, nf_key: Option<(i64, u64)>) -> Exact {
    if s.summary.is_none() {
        let counted = nf_key.and_then(|k| s.by_reason.get(&k).copied()).unwrap_or(0);
        return Exact { rule_drops, counted, events: None, lost_events: None, pcap_packets: None, pcap_comments: None, json_lines: None };
    }
    Exact {
        rule_drops,
        counted: s.summary_u64("drops").unwrap_or(0),
        events: s.summary_u64("events"),
        lost_events: s.summary_u64("lost_events"),
        pcap_packets: s.pcap.map(|c| c.packets),
        pcap_comments: s.pcap.map(|c| c.with_comment),
        json_lines: s.json_lines,
    }
}
