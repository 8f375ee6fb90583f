//! What one invocation measures: the phases, the arms (which peer runs beside the load, and
//! why an arm cannot run here), and the plan the command line makes of them.
use std::path::Path;

use anyhow::{Result, bail};

use super::{
    Args,
    peer::{self, Kind},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// UDP pps then TCP throughput, one peer process for both.
    Throughput,
    /// The drop flood.
    Flood,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Throughput => "throughput",
            Phase::Flood => "flood",
        }
    }
}

/// One configuration measured against the baseline.
#[derive(Debug, Clone)]
pub struct Arm {
    pub key: &'static str,
    pub label: &'static str,
    pub peer: Option<Kind>,
    pub phases: Vec<Phase>,
    /// Why the arm does not run here (reported as such).
    pub unavailable: Option<String>,
}

/// Everything one invocation does.
#[derive(Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "the command line's switches, as given")]
pub struct Plan {
    pub quick: bool,
    pub rounds: u32,
    pub udp_s: f64,
    pub tcp_s: u32,
    pub flood_packets: u64,
    pub flood_s: f64,
    pub cooldown_s: f64,
    pub wait_idle_s: f64,
    pub busy_pct: f64,
    pub bpf_stats: bool,
    pub peer_cpu: Option<usize>,
    pub conntrack: bool,
    pub arms: Vec<Arm>,
    /// Minutes of the watch soak (0: none).
    pub soak_min: f64,
    /// Run the scale arm after the soak.
    pub scale: bool,
}

/// Whether `--arms` names the arm `key`.
pub fn named(args: &Args, key: &str) -> bool {
    args.arms.iter().any(|k| k == key)
}

/// Why a `--quick` run leaves out an arm it runs only when `--arms` names it.
fn quick_leaves_out(args: &Args, key: &str) -> Option<String> {
    (args.quick && !named(args, key)).then(|| "left out by --quick".into())
}

/// An empty program where the drop probe attaches, and where `--path` does: they measure the
/// machine, not the tracer (left out by `--quick` unless asked for).
fn floor_arms(args: &Args, tracer: &Path) -> [Arm; 2] {
    let has = peer::tracer_has_floor(tracer);
    let unavailable = |key: &str| quick_leaves_out(args, key).or_else(|| (!has).then(|| "not available: this tracer has no floor command".into()));
    [
        Arm {
            key: "floor",
            label: "floor: an empty program on kfree_skb (its dispatch alone)",
            peer: Some(Kind::Floor { path: false }),
            phases: vec![Phase::Throughput, Phase::Flood],
            unavailable: unavailable("floor"),
        },
        Arm {
            key: "path_floor",
            label: "floor of --path: an empty program on its 6 tracepoints",
            peer: Some(Kind::Floor { path: true }),
            phases: vec![Phase::Throughput],
            unavailable: unavailable("path_floor"),
        },
    ]
}

pub fn plan(args: &Args, tracer: &Path, bpftrace: bool) -> Result<Plan> {
    let q = args.quick;
    let both = vec![Phase::Throughput, Phase::Flood];
    let has_path = peer::tracer_has_path(tracer)?;
    let mut arms = vec![
        Arm { key: "baseline", label: "baseline (no tracer)", peer: None, phases: both.clone(), unavailable: None },
        Arm {
            key: "baseline2",
            label: "baseline again (noise: A vs A)",
            peer: None,
            phases: both.clone(),
            unavailable: q.then(|| "left out by --quick".into()),
        },
        Arm {
            key: "drop",
            label: "tracer capture (drop mode, netfilter observers)",
            peer: Some(Kind::Tracer { netfilter: true, path: false, watch: false, stack: false }),
            phases: both.clone(),
            unavailable: None,
        },
        Arm {
            key: "drop_nonf",
            label: "tracer capture --no-netfilter",
            peer: Some(Kind::Tracer { netfilter: false, path: false, watch: false, stack: false }),
            phases: if q { vec![Phase::Throughput] } else { both.clone() },
            unavailable: None,
        },
        Arm {
            key: "path",
            label: "tracer capture --path",
            peer: Some(Kind::Tracer { netfilter: true, path: true, watch: false, stack: false }),
            phases: vec![Phase::Throughput],
            unavailable: (!has_path).then(|| "not available: this tracer has no --path".into()),
        },
        Arm {
            // What the netfilter hops cost `--path`: the observers it places at every base
            // chain, where drop mode places them only where they tell places apart.
            key: "path_nonf",
            label: "tracer capture --path --no-netfilter (no netfilter hops)",
            peer: Some(Kind::Tracer { netfilter: false, path: true, watch: false, stack: false }),
            phases: vec![Phase::Throughput],
            unavailable: (!has_path).then(|| "not available: this tracer has no --path".into()).or_else(|| quick_leaves_out(args, "path_nonf")),
        },
        Arm {
            key: "stack",
            label: "tracer capture --stack (kernel stack per drop event)",
            peer: Some(Kind::Tracer { netfilter: true, path: false, watch: false, stack: true }),
            phases: vec![Phase::Flood],
            unavailable: if let Some(why) = quick_leaves_out(args, "stack") {
                Some(why)
            } else if !peer::tracer_has_flag(tracer, "--stack")? {
                Some("not available: this tracer has no --stack".into())
            } else {
                None
            },
        },
        Arm {
            key: "watch",
            label: "tracer watch (metrics, flight recorder 64 MiB)",
            peer: Some(Kind::Tracer { netfilter: true, path: false, watch: true, stack: false }),
            phases: both.clone(),
            unavailable: (!peer::tracer_has_watch(tracer)?).then(|| "not available: this tracer has no watch".into()),
        },
        Arm {
            key: "bpftrace",
            label: "bpftrace: kfree_skb count by reason and netns",
            peer: Some(Kind::Bpftrace),
            phases: both,
            // Named under --quick but not installed: "not available", not silently left out.
            unavailable: if bpftrace {
                None
            } else {
                quick_leaves_out(args, "bpftrace").or_else(|| Some("not available: bpftrace is not installed (or --no-bpftrace)".into()))
            },
        },
    ];
    arms.extend(floor_arms(args, tracer));
    arms.retain(|a| !(q && a.unavailable.as_deref() == Some("left out by --quick")));
    if let Some(bad) = args.arms.iter().find(|k| !arms.iter().any(|a| a.key == k.as_str())) {
        let keys: Vec<&str> = arms.iter().map(|a| a.key).collect();
        bail!("--arms: no arm {bad:?} in this plan (arms: {})", keys.join(", "));
    }
    if !args.arms.is_empty() {
        arms.retain(|a| a.key == "baseline" || named(args, a.key));
    }
    Ok(Plan {
        quick: q,
        rounds: args.rounds.unwrap_or(if q { 3 } else { 5 }),
        udp_s: args.udp_seconds.unwrap_or(if q { 3.0 } else { 5.0 }),
        tcp_s: args.tcp_seconds.unwrap_or(if q { 2 } else { 5 }),
        flood_packets: args.flood_packets.unwrap_or(1_000_000),
        flood_s: args.flood_seconds.unwrap_or(if q { 8.0 } else { 10.0 }),
        cooldown_s: args.cooldown.unwrap_or(if q { 0.5 } else { 1.0 }),
        wait_idle_s: args.wait_idle,
        busy_pct: args.busy_pct,
        bpf_stats: args.bpf_stats,
        peer_cpu: args.peer_cpu,
        conntrack: args.conntrack,
        // The soak needs watch (an older tracer has none).
        soak_min: if peer::tracer_has_watch(tracer)? { args.soak.unwrap_or(if q { 0.0 } else { 10.0 }).max(0.0) } else { 0.0 },
        scale: args.scale || (!q && args.arms.is_empty()),
        arms,
    })
}
