//! "Why did Cilium drop it?" For a drop by a Cilium program (`cil_*`): Cilium's own reason,
//! source file and line from the deltas of its pinned metrics map around the drop (read like
//! the netfilter rule counters: snapshots on a worker thread, the baseline the newest one
//! that ended before the drop, closed by the first one that started after it), the endpoint
//! and identities from `cilium_lxc` and the ipcache, and for a policy drop the entry of the
//! endpoint's policy map that decided. Read-only; `cilium_events` is never opened.
pub mod endpoints;
pub mod layout;
pub mod maps;
pub mod policy;
pub mod read;
pub mod tables;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use self::{
    endpoints::Endpoint,
    layout::{MetricsKey, PolicyKey},
    maps::{Counters, Pinned},
};
use crate::{
    enrich::worker::{Answer, Worker},
    model::{
        cilium::{CiliumEndpoint, CiliumInfo, CiliumReason, Identities},
        drop::DropRecord,
        headers::Proto,
        tc::TcInfo,
        time::mono_now,
    },
};

/// Snapshots kept: a drop read late still finds a baseline taken before it.
const HISTORY: usize = 8;
/// With nothing held, a fresh baseline this often keeps windows short.
const REFRESH: Duration = Duration::from_millis(500);
/// Endpoints are read again when this old, or sooner when a drop names an unknown one.
const ENDPOINTS_TTL: Duration = Duration::from_secs(2);
/// Held drops at most, before the run loop waits for the snapshot in flight.
const MAX_HELD: usize = 4096;
/// How long a read waits for drops still upstream (their tc answer) before it is used anyway.
const MAX_DEFER: Duration = Duration::from_secs(2);
/// Drop times kept at most (a window with more calls its counts "window", not "metrics").
const MAX_SEEN: usize = 1 << 20;
/// The program counts the drop a little before the kernel frees the packet: a baseline must
/// have ended this long before the drop's time.
const MARGIN_NS: u64 = 1_000_000;

/// Whether a tc attribution names a Cilium program.
pub fn is_cilium(tc: &TcInfo) -> bool {
    tc.prog.as_deref().is_some_and(|p| p.starts_with("cil_"))
}

struct Timed {
    counters: Counters,
    start: u64,
    end: u64,
}

struct Held {
    record: DropRecord,
    mono: u64,
}

pub struct CiliumAttributor {
    pinned: Pinned,
    history: VecDeque<Timed>,
    held: Vec<Held>,
    /// Times of the drops by Cilium programs this capture saw, oldest first (back to the
    /// oldest snapshot kept): how many a window holds.
    seen: VecDeque<u64>,
    /// Reads the metrics map; at most one request in flight.
    worker: Worker<(), Result<Counters, String>>,
    last_snapshot: Instant,
    endpoints: Vec<Endpoint>,
    endpoints_read: Option<Instant>,
    /// Policy maps read for the current window (endpoint → name, entries).
    policies: HashMap<u16, Option<maps::Policy>>,
    /// Set once: why a read failed (one warning, not one per drop).
    pub warned: Option<String>,
    /// A read kept back (with when) while drops from before it were still upstream, waiting
    /// for their tc answer: its window's count of seen drops would miss them.
    deferred: Option<(Timed, Instant)>,
}

impl CiliumAttributor {
    /// `Ok(None)`: no Cilium maps pinned under `bpffs`. `Err`: one line saying which map has a
    /// layout we do not decode (then nothing of Cilium's is read).
    pub fn new(bpffs: &Path) -> Result<Option<Self>, String> {
        let Some(pinned) = maps::detect(bpffs)? else { return Ok(None) };
        let metrics = maps::open_metrics(&pinned.globals.join(layout::METRICS_PIN))?;
        let start = mono_now();
        let counters = maps::read_metrics(&metrics)?;
        let first = Timed { counters, start, end: mono_now() };
        let worker = Worker::spawn("cilium-metrics", move |()| maps::read_metrics(&metrics));
        Ok(Some(Self {
            pinned,
            history: VecDeque::from([first]),
            held: Vec::new(),
            seen: VecDeque::new(),
            worker,
            last_snapshot: Instant::now(),
            endpoints: Vec::new(),
            endpoints_read: None,
            policies: HashMap::new(),
            warned: None,
            deferred: None,
        }))
    }

    pub fn version(&self) -> &'static str {
        self.pinned.generation.releases()
    }

    /// Waits for its window; comes back from [`Self::poll`].
    pub fn hold(&mut self, record: DropRecord, mono: u64) {
        self.held.push(Held { record, mono });
        self.seen.push_back(mono);
        if !self.worker.busy() {
            self.request();
        }
    }

    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.held.len() >= MAX_HELD
    }

    fn request(&mut self) {
        if self.worker.ask(()).is_some() {
            self.last_snapshot = Instant::now();
        }
    }

    /// Held drops whose window closed; `wait`: block for the snapshot in flight. `upstream`:
    /// the kernel time of the oldest drop by a tc program not here yet (`u64::MAX`: none).
    pub fn poll(&mut self, wait: bool, upstream: u64) -> Vec<DropRecord> {
        let mut done = Vec::new();
        if let Some((now, since)) = self.deferred.take() {
            if upstream < now.start && since.elapsed() < MAX_DEFER {
                self.deferred = Some((now, since));
                return done;
            }
            done = self.apply(now);
        }
        if let Some(a) = self.worker.answer(wait) {
            done.extend(self.resolve(a, upstream));
        }
        if self.deferred.is_none() && !self.worker.busy() && (!self.held.is_empty() || self.last_snapshot.elapsed() >= REFRESH) {
            self.request();
        }
        done
    }

    /// Every held drop, attributed (the capture ends).
    pub fn finish(&mut self) -> Vec<DropRecord> {
        let mut done = Vec::new();
        // Each round either resolves every held drop or asks for a newer snapshot; bounded.
        for _ in 0..16 {
            if self.held.is_empty() {
                break;
            }
            if !self.worker.busy() {
                self.request();
            }
            if !self.worker.busy() {
                break;
            }
            done.extend(self.poll(true, u64::MAX));
        }
        if let Some((now, _)) = self.deferred.take() {
            done.extend(self.apply(now));
        }
        done.extend(self.held.drain(..).map(|h| h.record));
        done
    }

    fn resolve(&mut self, a: Answer<Result<Counters, String>>, upstream: u64) -> Vec<DropRecord> {
        let counters = match a.value {
            Ok(c) => c,
            Err(e) => {
                self.warned.get_or_insert(e);
                return Vec::new();
            }
        };
        let now = Timed { counters, start: a.start, end: a.end };
        if upstream < now.start && self.held.iter().any(|h| h.mono < now.start) {
            self.deferred = Some((now, Instant::now()));
            return Vec::new();
        }
        self.apply(now)
    }

    /// Attributes the held drops `now` closes the window of.
    fn apply(&mut self, now: Timed) -> Vec<DropRecord> {
        let (ready, still): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held).into_iter().partition(|h| h.mono < now.start);
        self.held = still;
        self.policies.clear();
        let mut done = Vec::with_capacity(ready.len());
        for mut h in ready {
            let base = &self.history[self.history.iter().rposition(|t| t.end + MARGIN_NS < h.mono).unwrap_or(0)];
            // The drops this capture saw in the window: what its deltas must account for.
            // Drops during a read may or may not be in it: between those surely in the window
            // and those that may be.
            let seen = self.seen.iter().filter(|&&m| m >= base.start && m <= now.end).fold((0, 0), |(sure, may), &m| (sure + u64::from(m > base.end && m < now.start), may + 1));
            let moved = moved(&base.counters, &now.counters);
            let info = self.info(&h.record, &moved, seen);
            h.record.event.cilium = Some(info);
            done.push(h.record);
        }
        self.history.push_back(now);
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let oldest = self.history.front().map_or(0, |t| t.start);
        while self.seen.front().is_some_and(|&m| m <= oldest) || self.seen.len() > MAX_SEEN {
            self.seen.pop_front();
        }
        done
    }

    fn reason(&self, k: MetricsKey, packets: Option<u64>) -> CiliumReason {
        reason_of(k, self.pinned.generation, packets)
    }

    fn info(&mut self, r: &DropRecord, moved: &[(MetricsKey, u64)], (least, most): (u64, u64)) -> CiliumInfo {
        let ev = &r.event;
        let (drop, candidates, attribution, hint) = match moved {
            [(k, n)] => (Some(self.reason(*k, None)), Vec::new(), if (least..=most).contains(n) { "metrics" } else { "window" }, None),
            [] => (None, Vec::new(), "none", Some("no drop counter of cilium_metrics moved in the window: the program dropped without counting it, or the map is not the one its datapath uses".to_string())),
            many => (
                None,
                many.iter().map(|(k, n)| self.reason(*k, Some(*n))).collect(),
                "ambiguous",
                Some("several Cilium drop reasons were counted in this drop's window; narrow the capture to one flow, or capture when fewer drops happen".to_string()),
            ),
        };
        let egress_hook = ev.tc.as_ref().is_some_and(|t| t.direction == "egress");
        // The endpoint's own address: the source of what leaves the pod (tc ingress on its
        // lxc), the destination of what enters it (tc egress).
        let own = if egress_hook { ev.headers.dst } else { ev.headers.src };
        let endpoint = self.endpoint(ev.ifindex, own);
        let id_of = |ip: Option<IpAddr>, this: &Self| {
            let ip = ip?;
            maps::identity(&this.pinned, ip).or_else(|| endpoint.as_ref().filter(|e| e.ip == ip).map(|e| e.sec_id))
        };
        let (src, dst) = (id_of(ev.headers.src, self), id_of(ev.headers.dst, self));
        let identity = (src.is_some() || dst.is_some()).then(|| Identities {
            src,
            dst,
            src_labels: src.and_then(tables::reserved_labels).map(str::to_string),
            dst_labels: dst.and_then(tables::reserved_labels).map(str::to_string),
        });
        let policy = match (&drop, &endpoint) {
            (Some(d), Some(e)) if [tables::DROP_POLICY, tables::DROP_POLICY_DENY, tables::DROP_POLICY_AUTH_REQUIRED].contains(&d.code) => {
                let egress = d.direction == Some("egress");
                let remote = if egress { dst } else { src };
                remote.and_then(|identity| {
                    let protocol = ev.headers.proto.as_ref().map_or(0, Proto::number);
                    let want = PolicyKey { identity, egress, protocol, dport: ev.headers.dport.unwrap_or(0) };
                    let (name, entries) = self.policy(e.lxc_id)?;
                    Some(policy::decide(name.clone(), entries, want))
                })
            }
            _ => None,
        };
        CiliumInfo {
            drop,
            endpoint: endpoint.map(|e| CiliumEndpoint { id: e.lxc_id, ifname: ev.ifname.clone(), pod: ev.pod_iface.clone() }),
            identity,
            policy,
            version: self.version(),
            attribution,
            candidates,
            hint,
        }
    }

    fn policy(&mut self, endpoint: u16) -> Option<&maps::Policy> {
        if !self.policies.contains_key(&endpoint) {
            let read = match maps::policy_entries(&self.pinned, endpoint) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.warned.get_or_insert(e);
                    None
                }
            };
            self.policies.insert(endpoint, read);
        }
        self.policies.get(&endpoint)?.as_ref()
    }

    /// The endpoint of a drop's interface: by address and interface, else by interface, else
    /// by address (the agent's interface index may be of another namespace's view).
    fn endpoint(&mut self, ifindex: u32, own: Option<IpAddr>) -> Option<Endpoint> {
        let find = |eps: &[Endpoint]| {
            let pods = || eps.iter().filter(|e| !e.is_host());
            pods()
                .find(|e| Some(e.ip) == own && e.ifindex == ifindex)
                .or_else(|| pods().find(|e| e.ifindex == ifindex && ifindex != 0))
                .or_else(|| pods().find(|e| Some(e.ip) == own))
                .cloned()
        };
        let stale = self.endpoints_read.is_none_or(|t| t.elapsed() >= ENDPOINTS_TTL);
        if !stale && let Some(e) = find(&self.endpoints) {
            return Some(e);
        }
        if stale || self.endpoints_read.is_some_and(|t| t.elapsed() >= Duration::from_millis(100)) {
            self.endpoints = maps::endpoints(&self.pinned);
            self.endpoints_read = Some(Instant::now());
        }
        find(&self.endpoints)
    }
}

/// Drop keys whose packet count grew from `base` to `now`, with how much.
fn moved(base: &Counters, now: &Counters) -> Vec<(MetricsKey, u64)> {
    let mut v: Vec<(MetricsKey, u64)> = now
        .iter()
        .filter(|(k, _)| k.is_drop())
        .filter_map(|(k, (n, _))| {
            let d = n.saturating_sub(base.get(k).map_or(0, |b| b.0));
            (d > 0).then_some((*k, d))
        })
        .collect();
    v.sort();
    v
}

/// One metrics key named with the tables of its release (the doctor names its keys so too).
pub fn reason_of(k: MetricsKey, g: layout::Generation, packets: Option<u64>) -> CiliumReason {
    CiliumReason { reason: tables::reason(k.reason), code: k.reason, direction: tables::direction(k.dir), file: tables::file(k.file, g.file_ids()), line: (k.line != 0).then_some(k.line), packets }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_drop_keys_that_grew_move() {
        let k = |reason, line| MetricsKey { reason, dir: 2, line, file: 2 };
        let base: Counters = [(k(133, 10), (5, 500)), (k(0, 1), (100, 1))].into_iter().collect();
        let now: Counters = [(k(133, 10), (7, 700)), (k(0, 1), (200, 1)), (k(151, 20), (1, 60)), (k(181, 30), (0, 0))].into_iter().collect();
        assert_eq!(moved(&base, &now), vec![(k(133, 10), 2), (k(151, 20), 1)]);
    }
}
