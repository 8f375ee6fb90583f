//! Every second: the kernel's exact totals read, each key's increase labelled (reason and
//! location names, interface, namespace, pod from the CNI cache, rule when certain) and
//! added to the metrics; the increases are what the triggers count.
use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use anyhow::Result;
use tracer_common::{DropKey, counter};

use super::{
    dump::WindowTotals,
    metrics::{DropLabels, Metrics},
    rules::Rules,
};
use crate::{
    model::{time::mono_now, wire::ifname},
    pipeline::Pipeline,
    probes::loader::Maps,
};

/// A sample of the kernel's run totals at a wall time (dump windows use them).
#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    totals: WindowTotals,
}

pub struct Counts {
    last: HashMap<DropKey, u64>,
    last_read: u64,
    pub rules: Option<Rules>,
    netfilter_drop: Option<u32>,
    samples: VecDeque<Sample>,
    /// How long samples are kept (`--keep` + `--after` + slack).
    horizon: Duration,
}

impl Counts {
    pub fn new(rules: Option<Rules>, netfilter_drop: Option<u32>, horizon: Duration) -> Self {
        // The maps are new with this run: its start is a sample of zeros.
        let start = Sample { at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default(), totals: WindowTotals::default() };
        Self { last: HashMap::new(), last_read: mono_now(), rules, netfilter_drop, samples: VecDeque::from([start]), horizon }
    }

    /// Reads the kernel, updates `m`; returns the increases with their full (unfolded)
    /// labels and the time of the read that counted them, for the triggers.
    pub fn update(&mut self, maps: &Maps, pipe: &mut Pipeline, m: &mut Metrics, wall: Duration) -> Result<Vec<(DropLabels, u64, u64)>> {
        let to = mono_now();
        let stats = maps.drop_stats()?;
        let mut added = Vec::new();
        for (k, total) in stats {
            let prev = self.last.insert(k, total).unwrap_or(0);
            let n = total.saturating_sub(prev);
            if n == 0 {
                continue;
            }
            let name = ifname(&k.ifname);
            let labels = DropLabels {
                reason: pipe.names.reasons.name(k.reason),
                location: pipe.names.symbolize(k.location),
                pod: pipe.enrich.pods.by_iface(k.netns, k.ifindex).map(|p| p.key.clone()).unwrap_or_default(),
                ifname: name,
                netns: k.netns.to_string(),
                rule: String::new(),
            };
            let netfilter = Some(k.reason) == self.netfilter_drop;
            let unresolved = match (&mut self.rules, k.nf_slot) {
                (Some(rules), slot) if slot != 0 || netfilter => rules.add(labels, slot, k.netns, n, (self.last_read, to)),
                _ => Some((labels, n)),
            };
            if let Some((labels, n)) = unresolved {
                if netfilter {
                    m.nf_unattributed += n;
                }
                m.add_drops(labels.clone(), n);
                added.push((labels, n, to));
            }
        }
        if let Some(rules) = &mut self.rules {
            for (labels, n, attributed, at) in rules.poll() {
                if !attributed {
                    m.nf_unattributed += n;
                }
                m.add_drops(labels.clone(), n);
                added.push((labels, n, at));
            }
            m.pending = rules.pending();
        }
        self.last_read = to;
        m.lost_events = maps.counter(counter::LOST)? + pipe.unreadable;
        m.rate_limited = maps.counter(counter::RATE_LIMITED)?;
        m.stats_full = maps.counter(counter::STATS_FULL)?;
        let totals = WindowTotals { drops: maps.counter(counter::MATCHED)?, rate_limited: m.rate_limited, seen: maps.counter(counter::SEEN)? };
        self.samples.push_back(Sample { at: wall, totals });
        while self.samples.front().is_some_and(|s| wall.saturating_sub(s.at) > self.horizon) {
            self.samples.pop_front();
        }
        Ok(added)
    }

    /// The kernel's totals between two wall times, from the samples around them (the window
    /// widened to whole samples: at most a second each side).
    pub fn window(&self, from: Duration, to: Duration) -> WindowTotals {
        let start = self.samples.iter().rev().find(|s| s.at <= from).or_else(|| self.samples.front());
        let end = self.samples.iter().find(|s| s.at >= to).or_else(|| self.samples.back());
        match (start, end) {
            (Some(a), Some(b)) => WindowTotals {
                drops: b.totals.drops.saturating_sub(a.totals.drops),
                rate_limited: b.totals.rate_limited.saturating_sub(a.totals.rate_limited),
                seen: b.totals.seen.saturating_sub(a.totals.seen),
            },
            _ => WindowTotals::default(),
        }
    }
}
