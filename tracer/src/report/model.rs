//! The report's model: per node, what its events, summary and node state say, aggregated while
//! the events stream by, so memory stays bounded for a capture of millions of drops.
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{
    event::{Culprit, Event},
    source::{Input, Kind},
    state::Changes,
};

/// Drops kept for the page's table (the rest are counted).
pub const TABLE_ROWS: usize = 2000;
/// Followed packets drawn as swimlanes.
pub const PATHS: usize = 6;
/// Distinct findings tracked per node (the rest are counted in `other_groups`).
const MAX_GROUPS: usize = 100_000;

/// A finding: drops alike in what matters to the reader (who, to where, why, by what).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub reason: String,
    pub culprit: Culprit,
    pub proto: Option<String>,
    /// The source pod, else the source address.
    pub src: Option<String>,
    pub dst: Option<String>,
    pub dport: Option<u16>,
}

#[derive(Debug, Clone, Default)]
pub struct Group {
    pub count: u64,
    /// TCP SYNs (without ACK) among them.
    pub syns: u64,
    pub first_ns: Option<i128>,
    pub last_ns: Option<i128>,
}

/// One drop as the table shows it.
#[derive(Debug, Clone)]
pub struct Row {
    pub node: String,
    pub time: String,
    pub reason: String,
    pub culprit: String,
    pub iface: String,
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub pods: String,
}

/// A followed packet's path.
#[derive(Debug, Clone)]
pub struct Packet {
    pub id: u64,
    pub label: String,
    pub hops: Vec<super::event::Hop>,
    pub fate: String,
}

pub struct Node {
    pub name: String,
    pub input: String,
    pub kind: Kind,
    pub summary: Option<Value>,
    pub manifest: Option<Value>,
    pub versions: Option<Value>,
    pub probes: Option<Value>,
    /// Doctor reports at the start and end of the window (bundles).
    pub doctor_start: Option<Value>,
    pub doctor_end: Option<Value>,
    pub changes: Option<Changes>,
    pub events: u64,
    /// Lines that were not events the report understands (e.g. a line cut by a kill).
    pub unreadable: u64,
    pub first_ns: Option<i128>,
    pub last_ns: Option<i128>,
    /// Drops per second (unix seconds) per reason.
    pub per_sec: BTreeMap<i64, BTreeMap<String, u64>>,
    pub groups: HashMap<GroupKey, Group>,
    pub other_groups: u64,
    pub culprits: HashMap<Culprit, u64>,
    pub pods: HashMap<String, u64>,
    pub ifaces: HashMap<String, u64>,
    pub reasons: HashMap<String, u64>,
    pub rows: Vec<Row>,
    pub packets: Vec<Packet>,
    pub packets_total: u64,
}

pub fn time_ns(t: &str) -> Option<i128> {
    let st = humantime::parse_rfc3339(t).ok()?;
    i128::try_from(st.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()).ok()
}

fn min_opt(a: Option<i128>, b: i128) -> i128 {
    a.map_or(b, |a| a.min(b))
}

fn max_opt(a: Option<i128>, b: i128) -> i128 {
    a.map_or(b, |a| a.max(b))
}

impl Node {
    pub fn new(name: String) -> Self {
        Self {
            name,
            input: String::new(),
            kind: Kind::Capture,
            summary: None,
            manifest: None,
            versions: None,
            probes: None,
            doctor_start: None,
            doctor_end: None,
            changes: None,
            events: 0,
            unreadable: 0,
            first_ns: None,
            last_ns: None,
            per_sec: BTreeMap::new(),
            groups: HashMap::new(),
            other_groups: 0,
            culprits: HashMap::new(),
            pods: HashMap::new(),
            ifaces: HashMap::new(),
            reasons: HashMap::new(),
            rows: Vec::new(),
            packets: Vec::new(),
            packets_total: 0,
        }
    }

    /// Fills in what the input's files say (summary, manifest, node state).
    pub fn attach(&mut self, input: &Input) {
        self.input = input.path.display().to_string();
        self.kind = input.kind;
        self.summary = input.json("capture/summary.json");
        self.manifest = input.json("MANIFEST.json");
        self.versions = input.json("versions.json");
        self.probes = input.json("probes.json");
        self.doctor_start = input.json("start/doctor.json");
        self.doctor_end = input.json("end/doctor.json");
        if input.kind == Kind::Bundle {
            self.changes = Some(super::state::diff(input));
        }
        if let Some(n) = self.summary.as_ref().and_then(|s| s["node"].as_str()) {
            self.name = n.to_string();
        }
    }

    pub fn add(&mut self, e: Event) {
        match e.kind.as_str() {
            "drop" => self.add_drop(e),
            "packet" => self.add_packet(e),
            _ => {}
        }
    }

    fn add_packet(&mut self, e: Event) {
        self.packets_total += 1;
        if self.packets.len() >= PATHS {
            return;
        }
        let Some(hops) = e.path.clone().filter(|h| !h.is_empty()) else { return };
        let label = [e.proto(), Event::endpoint(e.src.as_deref(), e.sport), Event::endpoint(e.dst.as_deref(), e.dport).map(|d| format!("> {d}"))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        self.packets.push(Packet { id: e.packet_id.unwrap_or(0), label, hops, fate: e.fate.unwrap_or_default() });
    }

    #[expect(clippy::needless_pass_by_value, reason = "the event is read once and dropped")]
    fn add_drop(&mut self, e: Event) {
        self.events += 1;
        let t = e.time.as_deref().and_then(time_ns);
        if let Some(t) = t {
            self.first_ns = Some(min_opt(self.first_ns, t));
            self.last_ns = Some(max_opt(self.last_ns, t));
        }
        let reason = e.reason.clone().unwrap_or_else(|| "unknown".into());
        if let Some(t) = t {
            let sec = i64::try_from(t.div_euclid(1_000_000_000)).unwrap_or(0);
            *self.per_sec.entry(sec).or_default().entry(reason.clone()).or_default() += 1;
        }
        *self.reasons.entry(reason.clone()).or_default() += 1;
        let culprit = e.culprit();
        *self.culprits.entry(culprit.clone()).or_default() += 1;
        for p in [&e.src_pod, &e.dst_pod].into_iter().flatten() {
            *self.pods.entry(p.clone()).or_default() += 1;
        }
        if let Some(i) = e.ifname.as_ref().filter(|i| !i.is_empty()) {
            *self.ifaces.entry(i.clone()).or_default() += 1;
        }
        let key = GroupKey {
            reason: reason.clone(),
            culprit: culprit.clone(),
            proto: e.proto(),
            src: e.src_pod.clone().or_else(|| e.src.clone()),
            dst: e.dst_pod.clone().map(|p| format!("{p} ({})", e.dst.as_deref().unwrap_or("?"))).or_else(|| e.dst.clone()),
            dport: e.dport,
        };
        let syn = e.tcp_flags.as_deref() == Some("S");
        if self.groups.len() < MAX_GROUPS || self.groups.contains_key(&key) {
            let g = self.groups.entry(key).or_default();
            g.count += 1;
            g.syns += u64::from(syn);
            if let Some(t) = t {
                g.first_ns = Some(min_opt(g.first_ns, t));
                g.last_ns = Some(max_opt(g.last_ns, t));
            }
        } else {
            self.other_groups += 1;
        }
        if self.rows.len() < TABLE_ROWS {
            let ctx = culprit.context();
            let text = culprit.text();
            self.rows.push(Row {
                node: self.name.clone(),
                time: e.time.clone().unwrap_or_default(),
                reason,
                culprit: if ctx.is_empty() { text } else { format!("{text} ({ctx})") },
                iface: e.ifname.clone().unwrap_or_default(),
                proto: [e.proto(), e.tcp_flags.clone().map(|f| format!("[{f}]"))].into_iter().flatten().collect::<Vec<_>>().join(" "),
                src: Event::endpoint(e.src.as_deref(), e.sport).unwrap_or_default(),
                dst: Event::endpoint(e.dst.as_deref(), e.dport).unwrap_or_default(),
                pods: [e.src_pod.as_deref(), e.dst_pod.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" → "),
            });
        }
    }

    /// The exact total when the summary has it, else the events read.
    pub fn drops(&self) -> u64 {
        self.summary.as_ref().and_then(|s| s["drops"].as_u64()).unwrap_or(self.events)
    }

    /// The window: the capture's start and end (summary, else manifest), else the first and
    /// last drop.
    pub fn window(&self) -> (Option<i128>, Option<i128>) {
        let pick = |k: &str| {
            self.summary.as_ref().and_then(|s| s[k].as_str()).or_else(|| self.manifest.as_ref().and_then(|m| m[k].as_str())).and_then(time_ns)
        };
        (pick("start").or(self.first_ns), pick("end").or(self.last_ns))
    }

    pub fn lost_events(&self) -> Option<u64> {
        self.summary.as_ref().and_then(|s| s["lost_events"].as_u64())
    }
}

/// Every node of the report, in the order given.
pub struct Report {
    pub title: String,
    pub nodes: Vec<Node>,
}

impl Report {
    pub fn drops(&self) -> u64 {
        self.nodes.iter().map(Node::drops).sum()
    }

    pub fn window(&self) -> (Option<i128>, Option<i128>) {
        let s = self.nodes.iter().filter_map(|n| n.window().0).min();
        let e = self.nodes.iter().filter_map(|n| n.window().1).max();
        (s, e)
    }
}
