//! Per-event work: wire record → rich event → outputs and flow counts. An output that fails
//! (disk full, …) is reported once and stops; the others keep going, and each output's count of
//! the drop events it really holds makes `lost_events` exact.
use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Write as _,
    time::{Duration, SystemTime},
};

use tracer_common::hook;

use crate::{
    aggregate::{Flows, PodCounts, Rules},
    path::{
        story::End,
        tracker::{Captured, Finished, HopIn, PathTracker},
    },
    attribution::{netfilter::Attributor, tc::TcAttributor},
    pods::Pods,
    netfilter::packet::PacketInfo,
    events::{self, DropEvent, Wire},
    kernel::{kallsyms::Kallsyms, reasons::Reasons},
    output::{
        jsonl::JsonLines,
        pcapng::{Iface, Pcapng},
    },
};

/// Converts `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) to wall-clock time.
#[derive(Clone, Copy)]
pub struct Clock {
    realtime_minus_mono_ns: i128,
}

impl Clock {
    #[expect(clippy::new_without_default, reason = "new() samples the system clocks: not a default value")]
    pub fn new() -> Self {
        let ts = |clock| {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: valid pointer to a timespec.
            unsafe { libc::clock_gettime(clock, &raw mut t) };
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        let mono = ts(libc::CLOCK_MONOTONIC);
        let real = ts(libc::CLOCK_REALTIME);
        Self { realtime_minus_mono_ns: real - mono }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn wall(&self, mono_ns: u64) -> Duration {
        let ns = (i128::from(mono_ns) + self.realtime_minus_mono_ns).max(0);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

pub fn rfc3339(since_epoch: Duration) -> String {
    humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

pub struct Pipeline {
    reasons: Reasons,
    kallsyms: Kallsyms,
    symbols: HashMap<u64, String>,
    clock: Clock,
    pub json: Option<JsonLines>,
    pub pcap: Option<Pcapng>,
    /// A line per drop on stdout (unless quiet or JSON goes to stdout).
    pub text: bool,
    pub flows: Flows,
    /// Drop events handed to the outputs.
    pub emitted: u64,
    /// Ring records that could not be read (never reached an output).
    pub unreadable: u64,
    /// Netfilter attribution, when observers are attached.
    pub nf: Option<Attributor>,
    /// Drops waiting for the rule counters of their window.
    pending: Vec<Pending>,
    pub rules: Rules,
    /// tc/BPF program attribution (`TC_INGRESS`/`TC_EGRESS` drops).
    pub tc: Option<TcAttributor>,
    /// Reason values of `TC_INGRESS` and `TC_EGRESS` on this kernel.
    pub tc_reasons: (Option<u32>, Option<u32>),
    pub pods: Pods,
    pub by_pod: PodCounts,
    /// `--path`: packets followed hook by hook.
    pub path: Option<PathTracker>,
    /// `--all`: followed packets go to the pcapng too.
    pub all: bool,
}

/// Drops waiting for attribution are bounded: past this, the window closes early. Each holds
/// its event and bytes (~2 KiB): 4096 keep a storm of counter-attributed drops (every
/// `NETFILTER_DROP` on kernels without observers) within the memory budget.
const MAX_PENDING: usize = 4096;

struct Pending {
    ev: DropEvent,
    iface: Iface,
    ts: Duration,
    data: Vec<u8>,
    slot: crate::probes::netfilter::Slot,
    packet: PacketInfo,
    /// `--all`: the packet already went to the pcapng with its path.
    in_pcap: bool,
}

/// What rule evaluation needs from an event; the device at the drop point is the input
/// interface up to FORWARD and the output interface from OUTPUT on.
fn packet_info(ev: &DropEvent, hook: u32) -> PacketInfo {
    let h = &ev.headers;
    let dev = (!ev.ifname.is_empty()).then(|| ev.ifname.clone());
    let proto = h.proto.as_ref().map(|p| match p {
        events::Proto::Name("icmp") => 1,
        events::Proto::Name("tcp") => 6,
        events::Proto::Name("udp") => 17,
        events::Proto::Name("icmpv6") => 58,
        events::Proto::Name(_) => 0,
        events::Proto::Number(n) => *n,
    });
    PacketInfo {
        src: h.src,
        dst: h.dst,
        proto,
        sport: h.sport,
        dport: h.dport,
        icmp_type: h.icmp_type,
        icmp_code: h.icmp_code,
        // An unobserved drop (any hook) may have happened on either side of the route.
        in_iface: if hook <= 2 { dev.clone() } else { None },
        out_iface: if (3..=4).contains(&hook) { dev } else { None },
        // The packet bytes do not say the flow's conntrack state: `--ctstate` stays Maybe.
        ct_state: None,
    }
}

impl Pipeline {
    pub fn new(reasons: Reasons, kallsyms: Kallsyms, clock: Clock) -> Self {
        Self {
            kallsyms,
            symbols: HashMap::new(),
            clock,
            json: None,
            pcap: None,
            text: false,
            flows: Flows::default(),
            emitted: 0,
            unreadable: 0,
            nf: None,
            pending: Vec::new(),
            rules: Rules::default(),
            tc_reasons: (reasons.value("TC_INGRESS"), reasons.value("TC_EGRESS")),
            reasons,
            tc: None,
            pods: Pods::default(),
            by_pod: PodCounts::default(),
            path: None,
            all: false,
        }
    }

    pub fn reasons(&self) -> &Reasons {
        &self.reasons
    }

    pub fn symbolize(&mut self, addr: u64) -> String {
        self.symbols.entry(addr).or_insert_with(|| self.kallsyms.symbolize(addr)).clone()
    }

    /// Direction of a `TC_INGRESS` (false) / `TC_EGRESS` (true) reason; None for other reasons.
    fn tc_direction(&self, reason: u32) -> Option<bool> {
        match self.tc_reasons {
            (Some(r), _) if r == reason => Some(false),
            (_, Some(r)) if r == reason => Some(true),
            _ => None,
        }
    }

    /// Pod and tc program of a row of the kernel's exact statistics.
    pub fn row_owner(&mut self, k: &tracer_common::DropKey, ifname: &str) -> (Option<String>, Option<crate::attribution::tc::TcInfo>) {
        let pod = self.pods.by_iface(k.netns, k.ifindex).map(|p| p.key.clone());
        let tc = match (self.tc_direction(k.reason), &mut self.tc) {
            (Some(egress), Some(tc)) => Some(tc.resolve(k.netns, k.ifindex, ifname, egress, k.tc_slot)),
            _ => None,
        };
        (pod, tc)
    }

    pub fn handle(&mut self, bytes: &[u8]) {
        let wire = match Wire::parse(bytes) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("{e}");
                self.unreadable += 1;
                return;
            }
        };
        let h = wire.hdr;
        let ts = self.clock.wall(h.ts_ns);
        if h.kind == tracer_common::kind::PATH {
            self.handle_path(&h, wire.data, ts);
            return;
        }
        let mut ev = DropEvent {
            kind: "drop",
            time: rfc3339(ts),
            reason: self.reasons.name(h.reason),
            location: self.symbolize(h.location),
            ifname: events::ifname(&h.ifname),
            ifindex: h.ifindex,
            netns: h.netns,
            headers: events::parse_headers(h.linktype, wire.data),
            len: h.len,
            caplen: h.cap_len,
            link: events::link_name(h.linktype),
            skb: format!("{:#x}", h.skb),
            reason_code: h.reason,
            netfilter: None,
            tc: None,
            src_pod: None,
            dst_pod: None,
            pod_iface: None,
            packet_id: (h.packet_id != 0).then_some(h.packet_id),
        };
        if let (Some(egress), Some(tc)) = (self.tc_direction(h.reason), &mut self.tc) {
            ev.tc = Some(tc.resolve(h.netns, h.ifindex, &ev.ifname, egress, h.tc_slot));
        }
        ev.src_pod = ev.headers.src.and_then(|a| self.pods.by_ip(a)).map(|p| p.key.clone());
        ev.dst_pod = ev.headers.dst.and_then(|a| self.pods.by_ip(a)).map(|p| p.key.clone());
        ev.pod_iface = self.pods.by_iface(h.netns, h.ifindex).map(|p| p.key.clone());
        let iface = Iface { netns: h.netns, ifindex: h.ifindex, ifname: ev.ifname.clone(), linktype: h.linktype, pod: ev.pod_iface.clone() };
        let in_pcap = h.packet_id != 0 && self.end_path(h.packet_id, End::Dropped { reason: ev.reason.clone(), location: ev.location.clone() });
        // Where the packet died: the observer slot it passed last (a stale ring entry from
        // another namespace is not this packet's history), else, on kernels without observers,
        // any hook of its namespace.
        let slot = self.nf.as_ref().and_then(|nf| match nf.slot(h.nf_slot) {
            Some(s) if s.netns == h.netns => Some(s.clone()),
            _ if h.nf_slot == 0 && nf.unobserved_drops && Some(h.reason) == self.reasons.value("NETFILTER_DROP") => {
                Some(Attributor::unobserved(h.netns, ev.headers.src.is_some_and(|a| a.is_ipv6())))
            }
            _ => None,
        });
        if let (Some(nf), Some(slot)) = (&self.nf, slot) {
            let packet = packet_info(&ev, slot.hook);
            if let Some(info) = nf.try_exact_at(&slot, &packet) {
                ev.netfilter = Some(info);
            } else {
                self.pending.push(Pending { ev, iface, ts, data: wire.data.to_vec(), slot, packet, in_pcap });
                if self.pending.len() >= MAX_PENDING {
                    self.resolve_pending();
                }
                return;
            }
        }
        self.emit(&ev, &iface, ts, wire.data, in_pcap);
    }

    /// Attributes the drops that needed rule counters: one fresh ruleset snapshot per
    /// namespace involved closes their window.
    pub fn resolve_pending(&mut self) {
        let Some(nf) = &mut self.nf else { return };
        if self.pending.is_empty() {
            return;
        }
        let inodes: std::collections::BTreeSet<u32> = self.pending.iter().map(|p| p.slot.netns).collect();
        let now = nf.snapshot(inodes);
        let pending = std::mem::take(&mut self.pending);
        let mut done = Vec::with_capacity(pending.len());
        for mut p in pending {
            if let Some(snap) = now.get(&p.slot.netns) {
                p.ev.netfilter = nf.resolve_at(&p.slot, &p.packet, snap);
            }
            done.push(p);
        }
        nf.advance(now);
        for p in done {
            self.emit(&p.ev, &p.iface, p.ts, &p.data, p.in_pcap);
        }
    }

    /// Writes one drop event to every output. `in_pcap`: with `--all`, its packet already went
    /// to the pcapng (once, with its path) and only counts here.
    fn emit(&mut self, ev: &DropEvent, iface: &Iface, ts: Duration, data: &[u8], in_pcap: bool) {
        self.flows.add(ev);
        self.by_pod.add(ev);
        if let Some(nf) = &ev.netfilter {
            self.rules.add(nf);
        }
        self.emitted += 1;
        if let Some(j) = &mut self.json
            && let Err(e) = j.write(ev, true)
        {
            stopped("JSON", &e);
        }
        if in_pcap {
            if let Some(p) = &mut self.pcap {
                p.count_event();
            }
        } else if let Some(p) = &mut self.pcap {
            let mut comment = format!("drop reason={} location={} iface={} netns={}", ev.reason, ev.location, display_if(&ev.ifname), ev.netns);
            if let Some(nf) = &ev.netfilter {
                let _ = write!(comment, " netfilter=\"{} {} {} {}: {}\"", nf.backend, nf.family, nf.table, nf.chain, nf.rule.as_deref().unwrap_or("?"));
            }
            if let Some(tc) = &ev.tc {
                let _ = write!(comment, " tc=\"{} {} {}", tc.attach.unwrap_or("?"), tc.direction, tc.prog.as_deref().unwrap_or("?"));
                if let Some(id) = tc.prog_id {
                    let _ = write!(comment, " id {id}");
                }
                let _ = write!(comment, " {}\"", tc.verdict);
            }
            for (k, v) in [("pod_iface", &ev.pod_iface), ("src_pod", &ev.src_pod), ("dst_pod", &ev.dst_pod)] {
                if let Some(v) = v {
                    let _ = write!(comment, " {k}={v}");
                }
            }
            if let Err(e) = p.write(iface, ts, ev.len, data, comment, true) {
                stopped("pcapng", &e);
            }
        }
        if self.text {
            let _ = writeln!(std::io::stdout().lock(), "{}", text_line(ev));
        }
    }

    /// Drop events that reached every configured output. Every output receives the drop events
    /// in the same order and one that fails keeps a prefix of them, so the events in all of them
    /// are the shortest prefix. Without file outputs, every event handed over counts.
    pub fn written(&self) -> u64 {
        let counts = [self.json.as_ref().map(|j| j.sink().committed_events()), self.pcap.as_ref().map(|p| p.sink().committed_events())];
        counts.into_iter().flatten().min().unwrap_or(self.emitted)
    }

    /// The outputs that stopped early, with why.
    pub fn output_failures(&self) -> Vec<String> {
        let sinks = [self.json.as_ref().map(JsonLines::sink), self.pcap.as_ref().map(Pcapng::sink)];
        sinks.into_iter().flatten().filter_map(|s| s.failure().map(String::from)).collect()
    }

    fn handle_path(&mut self, h: &tracer_common::PacketEvent, data: &[u8], ts: Duration) {
        let Some(mut tracker) = self.path.take() else { return };
        let location = self.symbolize(h.location);
        let ifname = events::ifname(&h.ifname);
        match h.hook {
            hook::CONSUME => {
                if let Some(f) = tracker.end(h.packet_id, End::Consumed { location }) {
                    self.write_finished(&f);
                }
            }
            hook::DELIVER => {
                if let Some(f) = tracker.end(h.packet_id, End::Delivered { netns: h.netns }) {
                    self.write_finished(&f);
                }
            }
            hook::DROP => {
                let end = End::Dropped { reason: self.reasons.name(h.reason), location };
                if let Some(f) = tracker.end(h.packet_id, end) {
                    self.write_finished(&f);
                }
            }
            _ => {
                let (name, netns) = self.hop_name(h, &location);
                let first = (h.cap_len > 0).then(|| {
                    let headers = events::parse_headers(h.linktype, data);
                    let payload = headers.payload_len.map(|n| format!(" payload {n}")).unwrap_or_default();
                    let summary = format!("{}{payload}", headers.summary());
                    let pod = self.pods.by_iface(h.netns, h.ifindex).map(|p| p.key.clone());
                    let iface = Iface { netns: h.netns, ifindex: h.ifindex, ifname: ifname.clone(), linktype: h.linktype, pod };
                    (headers, summary, Captured { iface, ts, len: h.len, data: data.to_vec() })
                });
                let hop = HopIn { packet_id: h.packet_id, mono_ns: h.ts_ns, hook: name, ifname, ifindex: h.ifindex, netns, time: rfc3339(ts), first };
                let (rec, done) = tracker.hop(hop);
                self.write_json(&rec);
                for f in done {
                    self.write_finished(&f);
                }
            }
        }
        self.path = Some(tracker);
    }

    /// How a hop is named in the path, and its namespace.
    fn hop_name(&self, h: &tracer_common::PacketEvent, location: &str) -> (String, u32) {
        match h.hook {
            hook::FUNCTION => (location.split('+').next().unwrap_or_default().to_string(), h.netns),
            hook::TC => {
                let (egress, _) = tracer_common::tc::decode(h.tc_slot);
                (format!("tc {}", if egress { "egress" } else { "ingress" }), h.netns)
            }
            hook::NETFILTER => match self.nf.as_ref().and_then(|nf| nf.slot(h.nf_slot)) {
                Some(s) => (
                    format!(
                        "netfilter {} {} (prio {})",
                        crate::netfilter::family_of_pf(s.pf),
                        crate::netfilter::HOOKS.get(s.hook as usize).copied().unwrap_or("?"),
                        s.priority
                    ),
                    s.netns,
                ),
                None => ("netfilter".into(), h.netns),
            },
            other => (hook::name(other).to_string(), h.netns),
        }
    }

    /// Ends a followed packet's path; true when its packet went to the pcapng (`--all`).
    fn end_path(&mut self, packet_id: u64, end: End) -> bool {
        let Some(mut tracker) = self.path.take() else { return false };
        let in_pcap = tracker.end(packet_id, end).is_some_and(|f| self.write_finished(&f));
        self.path = Some(tracker);
        in_pcap
    }

    /// Writes every packet still being followed (the capture ends).
    pub fn finish_paths(&mut self) {
        let Some(mut tracker) = self.path.take() else { return };
        for f in tracker.drain() {
            self.write_finished(&f);
        }
        self.path = Some(tracker);
    }

    /// Writes a finished packet record; true when its packet went to the pcapng (`--all`).
    fn write_finished(&mut self, f: &Finished) -> bool {
        self.write_json(&f.record);
        if self.text {
            let _ = write!(std::io::stdout().lock(), "{}", f.timeline);
        }
        let (true, Some(p), Some(c)) = (self.all, &mut self.pcap, &f.packet) else { return false };
        let written = p.write(&c.iface, c.ts, c.len, &c.data, crate::path::tracker::comment(&f.record), false);
        if let Err(e) = &written {
            stopped("pcapng", e);
        }
        written.is_ok()
    }

    fn write_json<T: serde::Serialize>(&mut self, record: &T) {
        if let Some(j) = &mut self.json
            && let Err(e) = j.write(record, false)
        {
            stopped("JSON", &e);
        }
    }

    pub fn flush(&mut self) {
        self.resolve_pending();
        if let Some(j) = &mut self.json
            && let Err(e) = j.flush()
        {
            stopped("JSON", &e);
        }
        if let Some(p) = &mut self.pcap
            && let Err(e) = p.flush()
        {
            stopped("pcapng", &e);
        }
    }
}

/// An output stopped (its sink reports an error once): say so, the capture goes on.
fn stopped(what: &str, e: &anyhow::Error) {
    eprintln!("tracer: error: {e:#}; {what} output stopped (it keeps every whole record written so far), the capture goes on");
}

fn display_if(name: &str) -> &str {
    if name.is_empty() { "(no device)" } else { name }
}

/// tcpdump-like one-liner: time, interface, reason, location, flow.
fn text_line(e: &DropEvent) -> String {
    let what = e.headers.summary();
    let pod = e.pod_iface.as_deref().map(|p| format!(" (pod {p})")).unwrap_or_default();
    let by = e.tc.as_ref().map(|t| format!(" by {}", t.who())).unwrap_or_default();
    format!("{} {}{pod} {} at {}: {what} len {}{by}", &e.time[11..], display_if(&e.ifname), e.reason, e.location, e.len)
}
