//! Cilium policy on this node, from its pinned maps: for each endpoint, whether ingress and
//! egress policy are enforced (an allow-all entry for a direction means not) and how many
//! entries its policy map holds; and the drops `cilium_metrics` counted since the agent
//! started, flagging policy denials with the top reasons. Read-only, like every check.
use std::path::Path;

use super::report::{Finding, Outcome, Severity};
use crate::enrich::cilium::{layout::MetricsKey, maps, tables};

const TOP: usize = 5;

fn direction(entries: &[(crate::enrich::cilium::layout::PolicyKey, crate::enrich::cilium::layout::PolicyValue)], egress: bool) -> String {
    let mine: Vec<_> = entries.iter().filter(|(k, _)| k.egress == egress).collect();
    let allow_all = mine.iter().any(|(k, v)| k.identity == 0 && k.protocol == 0 && k.dport == 0 && !v.deny);
    format!("{} {} ({} entries)", if egress { "egress" } else { "ingress" }, if allow_all { "not enforced" } else { "enforced" }, mine.len())
}

pub fn check_policy(bpffs: &Path) -> Outcome {
    let pinned = match maps::detect(bpffs) {
        Ok(Some(p)) => p,
        Ok(None) => return Outcome::Skipped(format!("no cilium_metrics pinned under {}", bpffs.join(maps::GLOBALS).display())),
        Err(e) => return Outcome::Error(e),
    };
    let mut endpoints: Vec<String> = Vec::new();
    for e in maps::endpoints(&pinned).iter().filter(|e| !e.is_host()) {
        let what = match maps::policy_entries(&pinned, e.lxc_id) {
            Ok((name, entries)) => format!("{}, {} in {name}", direction(&entries, false), direction(&entries, true)),
            Err(err) => format!("policy map unreadable: {err}"),
        };
        endpoints.push(format!("endpoint {} ({}, identity {}): {what}", e.lxc_id, e.ip, e.sec_id));
    }
    let counters = match maps::open_metrics(&pinned.globals.join(crate::enrich::cilium::layout::METRICS_PIN)).and_then(|m| maps::read_metrics(&m)) {
        Ok(c) => c,
        Err(e) => return Outcome::Error(e),
    };
    let mut drops: Vec<(MetricsKey, u64)> = counters.iter().filter(|(k, (n, _))| k.is_drop() && *n > 0).map(|(k, (n, _))| (*k, *n)).collect();
    drops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = drops.iter().map(|d| d.1).sum();
    let policy: u64 = drops.iter().filter(|(k, _)| [tables::DROP_POLICY, tables::DROP_POLICY_DENY, tables::DROP_POLICY_AUTH_REQUIRED].contains(&k.reason)).map(|d| d.1).sum();
    let top: Vec<String> = drops
        .iter()
        .take(TOP)
        .map(|(k, n)| format!("{n} × {}", crate::model::render::cilium_reason(&crate::enrich::cilium::reason_of(*k, pinned.generation, None))))
        .collect();
    let mut findings = Vec::new();
    if policy > 0 {
        findings.push(Finding::new(
            "cilium.policy-denied-drops",
            Severity::Warning,
            format!("Cilium's policy dropped {policy} packets since the agent started ({total} Cilium drops in all); top reasons:"),
            top.clone(),
            "Find the flows: `tracer capture --cilium-bpffs DIR` names the endpoint, the identities and the policy entry of each policy drop; then check the network policies selecting that endpoint (`cilium-dbg endpoint list`, `cilium-dbg policy get`).",
        ));
    }
    let detail = format!(
        "Cilium {} layout; {} endpoints{}{}; {total} drops counted in cilium_metrics{}",
        pinned.generation.releases(),
        endpoints.len(),
        if endpoints.is_empty() { "" } else { ": " },
        endpoints.join("; "),
        if top.is_empty() || policy > 0 { String::new() } else { format!(" ({})", top.join(", ")) }
    );
    Outcome::checked(detail, findings)
}
