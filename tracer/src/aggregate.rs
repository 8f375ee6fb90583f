//! Exact totals and top-N tables. Per-(reason, location, interface) totals come from the
//! kernel's own counters; per-flow totals from the events that reached us (bounded memory).
use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

use crate::model::{
    drop::DropEvent,
    headers::Proto,
    netfilter::NetfilterInfo,
    tc::TcInfo,
};

/// Flows tracked before the rest are folded into `other_flows`: keeps memory bounded under
/// floods of random ports.
const MAX_FLOWS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Flow {
    pub proto: Option<Proto>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub reason: String,
}

#[derive(Default)]
pub struct Flows {
    counts: HashMap<Flow, u64>,
    /// Events whose flow arrived after `MAX_FLOWS` distinct flows.
    pub other: u64,
}

impl Flows {
    pub fn add(&mut self, e: &DropEvent) {
        let key = Flow {
            proto: e.headers.proto.clone(),
            src: e.headers.src,
            dst: e.headers.dst,
            sport: e.headers.sport,
            dport: e.headers.dport,
            reason: e.reason.clone(),
        };
        if let Some(c) = self.counts.get_mut(&key) {
            *c += 1;
        } else if self.counts.len() < MAX_FLOWS {
            self.counts.insert(key, 1);
        } else {
            self.other += 1;
        }
    }

    /// Flows by count, largest first (ties in a stable order).
    pub fn sorted(&self) -> Vec<(Flow, u64)> {
        sorted_counts(self.counts.iter().map(|(k, v)| (k.clone(), *v)))
    }
}

/// Drops per netfilter rule, from attributed events.
#[derive(Default)]
pub struct Rules {
    counts: HashMap<(String, String, String, String), u64>,
}

impl Rules {
    pub fn add(&mut self, nf: &NetfilterInfo) {
        let rule = nf.rule.clone().unwrap_or_else(|| format!("({} attribution)", nf.attribution));
        *self.counts.entry((nf.backend.clone(), nf.table.clone(), nf.chain.clone(), rule)).or_default() += 1;
    }

    /// ((backend, table, chain, rule), count), largest first.
    pub fn sorted(&self) -> Vec<((String, String, String, String), u64)> {
        sorted_counts(self.counts.iter().map(|(k, v)| (k.clone(), *v)))
    }
}

/// Drops by Cilium programs per Cilium reason (as the one renderer names it), from events.
#[derive(Default)]
pub struct CiliumReasons {
    counts: HashMap<(String, Option<u8>), u64>,
}

impl CiliumReasons {
    pub fn add(&mut self, c: &crate::model::cilium::CiliumInfo) {
        let key = (crate::model::render::cilium_reason_of(c), c.drop.as_ref().map(|d| d.code));
        *self.counts.entry(key).or_default() += 1;
    }

    /// ((reason text, code), count), largest first.
    pub fn sorted(&self) -> Vec<((String, Option<u8>), u64)> {
        sorted_counts(self.counts.iter().map(|(k, v)| (k.clone(), *v)))
    }
}

/// Drops per pod, from events: each drop counts once for every pod involved (as source,
/// destination, or owner of the interface).
#[derive(Default)]
pub struct PodCounts {
    counts: HashMap<String, PodCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodCount {
    pub pod: String,
    pub count: u64,
    pub as_src: u64,
    pub as_dst: u64,
    pub on_iface: u64,
}

impl PodCounts {
    pub fn add(&mut self, e: &DropEvent) {
        let mut seen: Vec<&str> = Vec::with_capacity(3);
        for (p, which) in [(&e.src_pod, 0), (&e.dst_pod, 1), (&e.pod_iface, 2)] {
            let Some(p) = p else { continue };
            let c = self.counts.entry(p.clone()).or_insert_with(|| PodCount { pod: p.clone(), ..Default::default() });
            match which {
                0 => c.as_src += 1,
                1 => c.as_dst += 1,
                _ => c.on_iface += 1,
            }
            if !seen.contains(&p.as_str()) {
                c.count += 1;
                seen.push(p);
            }
        }
    }

    /// Largest first.
    pub fn sorted(&self) -> Vec<PodCount> {
        let mut v: Vec<PodCount> = self.counts.values().cloned().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.pod.cmp(&b.pod)));
        v
    }
}

/// One row of the kernel's exact drop statistics.
#[derive(Debug, Clone)]
pub struct KernelRow {
    pub reason: String,
    pub location: String,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: u32,
    pub count: u64,
    /// The pod behind the interface.
    pub pod: Option<String>,
    /// Which tc program shot these (TC_* reasons).
    pub tc: Option<TcInfo>,
}

/// Sums `rows` by `key`, largest first.
pub fn group_by<K: Ord + Clone + std::hash::Hash>(rows: &[KernelRow], key: impl Fn(&KernelRow) -> K) -> Vec<(K, u64)> {
    let mut m: HashMap<K, u64> = HashMap::new();
    for r in rows {
        *m.entry(key(r)).or_default() += r.count;
    }
    sorted_counts(m)
}

pub fn sorted_counts<K: Ord>(it: impl IntoIterator<Item = (K, u64)>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = it.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reason: &str, loc: &str, n: u64) -> KernelRow {
        KernelRow { reason: reason.into(), location: loc.into(), ifname: "lxc1".into(), ifindex: 1, netns: 1, count: n, pod: None, tc: None }
    }

    #[test]
    fn groups_and_sorts() {
        let rows = [row("A", "f+0x1", 2), row("B", "g+0x1", 5), row("A", "f+0x2", 4)];
        assert_eq!(group_by(&rows, |r| r.reason.clone()), vec![("A".to_string(), 6), ("B".to_string(), 5)]);
        assert_eq!(group_by(&rows, |r| r.location.clone())[0], ("g+0x1".to_string(), 5));
    }
}
