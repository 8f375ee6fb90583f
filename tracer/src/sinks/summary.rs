//! `--summary FILE`: one JSON object with the exact totals of the run (field names are a
//! contract other tools read).
use serde::Serialize;

use crate::{
    aggregate::{self, Flow, Flows, KernelRow, PodCounts, Rules},
    model::{drop::DropRecord, headers::Proto, render::tc_sentence},
};

#[derive(Debug, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct LocationCount {
    pub location: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct IfaceCount {
    pub ifname: String,
    pub ifindex: u32,
    pub netns: u32,
    /// The pod behind the interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub count: u64,
}

/// Exact drops per tc program (from the kernel's counters, keyed by the observer code).
#[derive(Debug, Serialize)]
pub struct ProgramCount {
    pub ifname: String,
    pub direction: &'static str,
    pub attach: Option<&'static str>,
    pub prog: Option<String>,
    pub prog_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub attribution: &'static str,
    pub count: u64,
    /// The finding in words ("dropped by BPF program … on … (pod …), ingress").
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct FlowCount {
    pub proto: Option<Proto>,
    pub src: Option<std::net::IpAddr>,
    pub dst: Option<std::net::IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct RuleCount {
    pub backend: String,
    pub table: String,
    pub chain: String,
    pub rule: String,
    pub count: u64,
}

/// `--stack`: drop events per kernel stack (from events: rate-limited drops carry none).
#[derive(Debug, Serialize)]
pub struct StackCount {
    /// Innermost frame first (`function+0xoff`).
    pub stack: Vec<String>,
    pub count: u64,
}

/// Drops by a Cilium program per Cilium reason (from attributed events).
#[derive(Debug, Serialize)]
pub struct CiliumReasonCount {
    /// "Policy denied (133) at `bpf_lxc.c:1412` egress", "ambiguous: … | …", or that none moved.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// Exact number of drops that matched every filter (in-kernel counter).
    pub drops: u64,
    /// Matching drops whose event did not reach the JSON/pcapng outputs.
    pub lost_events: u64,
    pub duration_s: f64,
    pub by_reason: Vec<ReasonCount>,
    pub by_location: Vec<LocationCount>,
    pub by_flow: Vec<FlowCount>,
    pub by_iface: Vec<IfaceCount>,
    /// Netfilter drops per rule (from attributed events).
    pub by_rule: Vec<RuleCount>,
    /// tc/BPF drops per program (exact).
    pub by_program: Vec<ProgramCount>,
    /// Drops per pod (from events; a drop counts for each pod involved).
    pub by_pod: Vec<aggregate::PodCount>,
    /// Drops by Cilium programs per Cilium reason (from events).
    pub by_cilium_reason: Vec<CiliumReasonCount>,
    /// With `--stack`: the most frequent kernel stacks of the drop events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_stack: Vec<StackCount>,
    /// Events written to the outputs (= drops − `lost_events`).
    pub events: u64,
    /// Drops seen before any filter (every reason, every interface).
    pub seen_drops: u64,
    /// Times the kernel skipped the drop probe because it was already running on that CPU:
    /// drops neither counted nor reported (normally 0).
    pub probe_misses: u64,
    /// Matching drops whose event `--max-event-rate` held back (part of `lost_events`).
    pub rate_limited: u64,
    /// Events not folded into `by_flow` because too many distinct flows were seen.
    pub other_flows: u64,
    pub expression: String,
    /// How the kernel evaluates the expression: `ebpf` (compiled into the probes) or
    /// `interpreted` (classic BPF, when the translation failed). Absent without an expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<&'static str>,
    /// How the drop probe attached (`tp_btf` or `raw_tp`).
    pub probe: String,
    pub kernel: String,
    pub start: String,
    pub end: String,
    /// With `--path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathSummary>,
    /// The node's name (`--node-name`, `$NODE_NAME` or the host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

pub struct Totals {
    pub drops: u64,
    pub lost_events: u64,
    pub events: u64,
    pub seen_drops: u64,
    pub probe_misses: u64,
    pub rate_limited: u64,
}

impl Totals {
    /// The `events`/`lost_events` contract, in one place: `events` are the drop events every
    /// output committed (`written`); every other drop the kernel counted is lost (held back by
    /// the rate limit, lost in the ring, unreadable, or cut off by an output that failed).
    pub fn new(drops: u64, written: u64, seen_drops: u64, probe_misses: u64, rate_limited: u64) -> Self {
        Self { drops, lost_events: drops.saturating_sub(written), events: written, seen_drops, probe_misses, rate_limited }
    }
}

/// `--path` totals.
#[derive(Debug, Clone, Serialize)]
pub struct PathSummary {
    /// `tracepoint`, `fentry` or `kprobe` (the tracepoints always run; the others add kernel
    /// functions as hops).
    pub backend: String,
    /// Kernel functions hooked by the fentry/kprobe back end.
    pub functions: usize,
    /// Why `auto` fell back to tracepoints only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Whether a veth peer's receive took the verdict its driver hook gave the same skb, bytes
    /// in place, instead of applying the filters again: false with `--netns`, `--iface` or
    /// `--pod`, or when an interface ran an XDP program at start.
    pub receive_reuse: bool,
    /// Packets followed (each has a `"type": "packet"` record).
    pub packets: u64,
    /// Path events lost in the ring buffer (their packets' paths have gaps).
    pub lost_events: u64,
}

#[derive(Clone)]
pub struct Meta {
    pub path: Option<PathSummary>,
    pub node: Option<String>,
    pub duration_s: f64,
    pub expression: String,
    pub filter: Option<&'static str>,
    pub probe: String,
    pub kernel: String,
    pub start: String,
    pub end: String,
}

/// What the summary tallies from drop events.
#[derive(Default)]
pub struct Tallies {
    pub flows: Flows,
    pub rules: Rules,
    pub by_pod: PodCounts,
    pub cilium: aggregate::CiliumReasons,
    pub stacks: std::collections::HashMap<Vec<String>, u64>,
}

/// Stacks listed in `by_stack`.
const TOP_STACKS: usize = 10;

pub fn build(totals: &Totals, rows: &[KernelRow], t: &Tallies, meta: Meta) -> Summary {
    let Tallies { flows, rules, by_pod: pods, cilium, stacks } = t;
    let mut by_stack: Vec<StackCount> = stacks.iter().map(|(stack, count)| StackCount { stack: stack.clone(), count: *count }).collect();
    by_stack.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.stack.cmp(&b.stack)));
    by_stack.truncate(TOP_STACKS);
    let mut programs: Vec<ProgramCount> = Vec::new();
    for r in rows {
        let Some(tc) = &r.tc else { continue };
        let text = tc_sentence(tc, r.pod.as_deref());
        if let Some(p) = programs.iter_mut().find(|p| p.text == text && p.prog_id == tc.prog_id) {
            p.count += r.count;
        } else {
            programs.push(ProgramCount {
                ifname: tc.ifname.clone(),
                direction: tc.direction,
                attach: tc.attach,
                prog: tc.prog.clone(),
                prog_id: tc.prog_id,
                pod: r.pod.clone(),
                attribution: tc.attribution,
                count: r.count,
                text,
            });
        }
    }
    programs.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.text.cmp(&b.text)));
    Summary {
        drops: totals.drops,
        lost_events: totals.lost_events,
        duration_s: meta.duration_s,
        by_reason: aggregate::group_by(rows, |r| r.reason.clone())
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect(),
        by_location: aggregate::group_by(rows, |r| r.location.clone())
            .into_iter()
            .map(|(location, count)| LocationCount { location, count })
            .collect(),
        by_flow: flows
            .sorted()
            .into_iter()
            .map(|(Flow { proto, src, dst, sport, dport, reason }, count)| FlowCount { proto, src, dst, sport, dport, reason, count })
            .collect(),
        by_iface: aggregate::group_by(rows, |r| (r.ifname.clone(), r.ifindex, r.netns, r.pod.clone()))
            .into_iter()
            .map(|((ifname, ifindex, netns, pod), count)| IfaceCount { ifname, ifindex, netns, pod, count })
            .collect(),
        by_rule: rules
            .sorted()
            .into_iter()
            .map(|((backend, table, chain, rule), count)| RuleCount { backend, table, chain, rule, count })
            .collect(),
        by_program: programs,
        by_pod: pods.sorted(),
        by_cilium_reason: cilium.sorted().into_iter().map(|((reason, code), count)| CiliumReasonCount { reason, code, count }).collect(),
        by_stack,
        events: totals.events,
        seen_drops: totals.seen_drops,
        probe_misses: totals.probe_misses,
        rate_limited: totals.rate_limited,
        other_flows: flows.other,
        expression: meta.expression,
        filter: meta.filter,
        probe: meta.probe,
        kernel: meta.kernel,
        start: meta.start,
        end: meta.end,
        path: meta.path,
        node: meta.node,
    }
}

/// How a run ended: what the kernel counted, what the outputs hold, and the run's details.
pub struct RunEnd {
    pub totals: Totals,
    pub rows: Vec<KernelRow>,
    pub meta: Meta,
}

/// The summary as an output: tallies flows, rules and pods from the drop events; at the end
/// writes `--summary FILE` (all or nothing) and the tables on stderr.
pub struct SummarySink {
    pub path: Option<std::path::PathBuf>,
    pub tallies: Tallies,
}

impl SummarySink {
    pub fn new(path: Option<std::path::PathBuf>) -> Self {
        Self { path, tallies: Tallies::default() }
    }
}

impl super::Sink for SummarySink {
    fn name(&self) -> &'static str {
        "summary"
    }

    fn drop_event(&mut self, d: &DropRecord) -> anyhow::Result<()> {
        let t = &mut self.tallies;
        t.flows.add(&d.event);
        t.by_pod.add(&d.event);
        if let Some(nf) = &d.event.netfilter {
            t.rules.add(nf);
        }
        if let Some(c) = &d.event.cilium {
            t.cilium.add(c);
        }
        if let Some(s) = &d.event.stack {
            *t.stacks.entry(s.clone()).or_default() += 1;
        }
        Ok(())
    }

    fn finish(&mut self, end: &RunEnd) -> anyhow::Result<()> {
        let s = build(&end.totals, &end.rows, &self.tallies, end.meta.clone());
        if let Some(p) = &self.path {
            let mut bytes = serde_json::to_vec_pretty(&s)?;
            bytes.push(b'\n');
            super::write_atomic(p, &bytes)?;
        }
        eprint!("{}", super::table::render(&s));
        Ok(())
    }
}
