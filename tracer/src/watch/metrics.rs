//! The metrics `tracer watch` serves: exact totals from the kernel's counters (never from
//! events, which a flood rate-limits), their label sets bounded by `--max-series`, and the
//! watcher's own state. Encoded by prometheus-client: the Prometheus text format (0.0.4) by
//! default, `OpenMetrics` when the scraper asks for it.
use std::collections::{BTreeMap, HashSet};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

/// Labels of `tracer_drops_total`.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
    pub location: String,
    pub ifname: String,
    pub netns: String,
    /// `namespace/name`, or empty.
    pub pod: String,
    /// The rule as the capture prints it in `netfilter.rule`, or empty.
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct TriggerLabel {
    trigger: String,
}

/// Label value of the series new label sets fold into past `--max-series`.
pub const OTHER: &str = "other";

/// Everything `/metrics` shows; updated by the watch loop, read by the server.
pub struct Metrics {
    drops: BTreeMap<DropLabels, u64>,
    max_series: usize,
    /// Label sets folded into `other` (hashes, bounded), and how many there were.
    folded_seen: HashSet<u64>,
    pub folded: u64,
    pub lost_events: u64,
    pub rate_limited: u64,
    pub recorder_bytes: u64,
    pub recorder_records: u64,
    pub recorder_evicted: u64,
    pub dumps: BTreeMap<String, u64>,
    pub dump_failures: BTreeMap<String, u64>,
    /// 1 while a trigger may fire (not held back by `--dump-interval`).
    pub armed: BTreeMap<String, u64>,
    pub nf_unattributed: u64,
    /// Drops the kernel counted in no key (its per-key table was full).
    pub stats_full: u64,
    /// Netfilter drops counted by the kernel, not yet in `tracer_drops_total`: their rule waits
    /// for a read of the rule counters.
    pub pending: u64,
    pub info: Vec<(String, String)>,
}

/// Folded label sets remembered to count each once; past it every fold counts.
const FOLDED_MEMORY: usize = 1 << 20;

impl Metrics {
    pub fn new(max_series: usize, info: Vec<(String, String)>) -> Self {
        Self {
            drops: BTreeMap::new(),
            max_series,
            folded_seen: HashSet::new(),
            folded: 0,
            lost_events: 0,
            rate_limited: 0,
            recorder_bytes: 0,
            recorder_records: 0,
            recorder_evicted: 0,
            dumps: BTreeMap::new(),
            dump_failures: BTreeMap::new(),
            armed: BTreeMap::new(),
            nf_unattributed: 0,
            stats_full: 0,
            pending: 0,
            info,
        }
    }

    /// Adds `n` drops to a series; a new label set past `--max-series` goes to the series of
    /// its reason whose other labels are `other`. Returns the labels it was counted under.
    pub fn add_drops(&mut self, labels: DropLabels, n: u64) -> DropLabels {
        if let Some(v) = self.drops.get_mut(&labels) {
            *v += n;
            return labels;
        }
        if self.drops.len() < self.max_series {
            self.drops.insert(labels.clone(), n);
            return labels;
        }
        let h = {
            use std::hash::{BuildHasher as _, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(&labels)
        };
        if self.folded_seen.len() >= FOLDED_MEMORY || self.folded_seen.insert(h) {
            self.folded += 1;
        }
        let other = DropLabels {
            reason: labels.reason,
            location: OTHER.into(),
            ifname: OTHER.into(),
            netns: OTHER.into(),
            pod: OTHER.into(),
            rule: OTHER.into(),
        };
        *self.drops.entry(other.clone()).or_default() += n;
        other
    }

    pub fn drop_series(&self) -> impl Iterator<Item = (&DropLabels, &u64)> {
        self.drops.iter()
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        let drops = Family::<DropLabels, Counter>::default();
        for (l, v) in &self.drops {
            drops.get_or_create(l).inc_by(*v);
        }
        r.register("tracer_drops", "Packets the kernel dropped, counted in the kernel (exact)", drops);
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        let gauge = |v: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        r.register("tracer_lost_events", "Drop events lost before userspace read them (ring full or unreadable); the drop totals still count them", counter(self.lost_events));
        r.register("tracer_rate_limited_events", "Drop events held back by --max-event-rate (counted in tracer_drops_total, not recorded)", counter(self.rate_limited));
        r.register(
            "tracer_drops_pending",
            "Netfilter drops counted by the kernel and not yet in tracer_drops_total: their rule waits for the next read of the rule counters (0 once the totals are complete)",
            gauge(self.pending),
        );
        r.register("tracer_recorder_bytes", "Memory held by the flight recorder's drops", gauge(self.recorder_bytes));
        r.register("tracer_recorder_records", "Drops held by the flight recorder", gauge(self.recorder_records));
        r.register("tracer_recorder_evicted", "Drops evicted from the flight recorder (older than --keep or past --keep-bytes)", counter(self.recorder_evicted));
        r.register("tracer_series_folded", "Label sets of tracer_drops_total folded into `other` past --max-series", counter(self.folded));
        r.register(
            "tracer_netfilter_unattributed_drops",
            "Netfilter drops whose rule could not be named exactly (counted with rule=\"\" in tracer_drops_total)",
            counter(self.nf_unattributed),
        );
        r.register(
            "tracer_drops_unkeyed",
            "Drops the kernel counted but could not key (its per-key table was full): tracer_drops_total undercounts by this much",
            counter(self.stats_full),
        );
        for (name, help, map, is_gauge) in [
            ("tracer_dumps", "Dumps written, per trigger", &self.dumps, false),
            ("tracer_dump_failures", "Dumps that failed (disk full, unwritable), per trigger", &self.dump_failures, false),
            ("tracer_trigger_armed", "1 when the trigger may dump now, 0 while --dump-interval holds it back", &self.armed, true),
        ] {
            if is_gauge {
                let f = Family::<TriggerLabel, Gauge>::default();
                for (t, v) in map {
                    f.get_or_create(&TriggerLabel { trigger: t.clone() }).set(i64::try_from(*v).unwrap_or(i64::MAX));
                }
                r.register(name, help, f);
            } else {
                let f = Family::<TriggerLabel, Counter>::default();
                for (t, v) in map {
                    f.get_or_create(&TriggerLabel { trigger: t.clone() }).inc_by(*v);
                }
                r.register(name, help, f);
            }
        }
        r.register("tracer", "This tracer: version, kernel, drop probe, node", Info::new(self.info.clone()));
        r
    }

    /// The Prometheus text exposition (0.0.4), or `OpenMetrics`.
    pub fn encode(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let r = self.registry();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &r)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &r)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(reason: &str, ifname: &str) -> DropLabels {
        DropLabels { reason: reason.into(), ifname: ifname.into(), ..DropLabels::default() }
    }

    #[test]
    fn folding_past_max_series() {
        let mut m = Metrics::new(2, Vec::new());
        m.add_drops(labels("A", "x"), 1);
        m.add_drops(labels("A", "y"), 2);
        assert_eq!(m.add_drops(labels("A", "z"), 3).ifname, OTHER);
        m.add_drops(labels("A", "z"), 3);
        m.add_drops(labels("A", "x"), 1);
        assert_eq!(m.folded, 1);
        let all: Vec<(String, u64)> = m.drop_series().map(|(l, v)| (l.ifname.clone(), *v)).collect();
        assert_eq!(all, vec![("x".into(), 2), ("y".into(), 2), ("other".into(), 6)]);
    }

    #[test]
    fn both_formats() {
        let mut m = Metrics::new(10, vec![("version".into(), "1".into())]);
        m.add_drops(labels("NO_SOCKET", "eth0"), 7);
        m.dumps.insert("signal".into(), 1);
        let text = m.encode(false).unwrap();
        assert!(text.contains("tracer_drops_total{reason=\"NO_SOCKET\",location=\"\",ifname=\"eth0\",netns=\"\",pod=\"\",rule=\"\"} 7"), "{text}");
        assert!(!text.contains("# EOF"));
        let om = m.encode(true).unwrap();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("tracer_info{version=\"1\"} 1"), "{om}");
        assert!(om.contains("tracer_dumps_total{trigger=\"signal\"} 1"), "{om}");
    }
}
