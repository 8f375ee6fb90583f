//! `--summary FILE`: one JSON object with the exact totals of the run (field names are a
//! contract other tools read).
use serde::Serialize;

use crate::{
    aggregate::{self, Flow, KernelRow},
    events::Proto,
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
    pub count: u64,
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
    /// Events written to the outputs (= drops − lost_events).
    pub events: u64,
    /// Drops seen before any filter (every reason, every interface).
    pub seen_drops: u64,
    /// Times the kernel skipped the drop probe because it was already running on that CPU:
    /// drops neither counted nor reported (normally 0).
    pub probe_misses: u64,
    /// Events not folded into `by_flow` because too many distinct flows were seen.
    pub other_flows: u64,
    pub expression: String,
    /// How the drop probe attached (`tp_btf` or `raw_tp`).
    pub probe: String,
    pub kernel: String,
    pub start: String,
    pub end: String,
}

pub struct Totals {
    pub drops: u64,
    pub lost_events: u64,
    pub events: u64,
    pub seen_drops: u64,
    pub probe_misses: u64,
}

pub struct Meta {
    pub duration_s: f64,
    pub expression: String,
    pub probe: String,
    pub kernel: String,
    pub start: String,
    pub end: String,
}

pub fn build(totals: &Totals, rows: &[KernelRow], flows: &aggregate::Flows, rules: &aggregate::Rules, meta: Meta) -> Summary {
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
        by_iface: aggregate::group_by(rows, |r| (r.ifname.clone(), r.ifindex, r.netns))
            .into_iter()
            .map(|((ifname, ifindex, netns), count)| IfaceCount { ifname, ifindex, netns, count })
            .collect(),
        by_rule: rules
            .sorted()
            .into_iter()
            .map(|((backend, table, chain, rule), count)| RuleCount { backend, table, chain, rule, count })
            .collect(),
        events: totals.events,
        seen_drops: totals.seen_drops,
        probe_misses: totals.probe_misses,
        other_flows: flows.other,
        expression: meta.expression,
        probe: meta.probe,
        kernel: meta.kernel,
        start: meta.start,
        end: meta.end,
    }
}
