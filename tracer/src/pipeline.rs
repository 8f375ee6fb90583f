//! Per-event work: wire record → rich event → outputs and flow counts. An output that fails
//! (disk full, …) is reported once and dropped; the others keep going.
use std::{
    collections::HashMap,
    io::Write as _,
    time::{Duration, SystemTime},
};

use crate::{
    aggregate::{Flows, Rules},
    attribution::netfilter::Attributor,
    netfilter::packet::PacketInfo,
    events::{self, DropEvent, Wire},
    kernel::{kallsyms::Kallsyms, reasons::Reasons},
    output::{
        jsonl::JsonLines,
        pcapng::{Iface, Pcapng},
    },
};

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Clone, Copy)]
pub struct Clock {
    realtime_minus_mono_ns: i128,
}

impl Clock {
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
    /// Events written to every configured output.
    pub written: u64,
    /// Events that did not reach every configured output.
    pub failed: u64,
    /// An output was dropped after an error: later events miss it.
    degraded: bool,
    /// Netfilter attribution, when observers are attached.
    pub nf: Option<Attributor>,
    /// Drops waiting for the rule counters of their window.
    pending: Vec<Pending>,
    pub rules: Rules,
}

/// Drops waiting for attribution are bounded: past this, the window closes early.
const MAX_PENDING: usize = 20_000;

struct Pending {
    ev: DropEvent,
    iface: Iface,
    ts: Duration,
    data: Vec<u8>,
    slot: u32,
    packet: PacketInfo,
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
        in_iface: if hook <= 2 { dev.clone() } else { None },
        out_iface: if hook >= 3 { dev } else { None },
        // The packet bytes do not say the flow's conntrack state: `--ctstate` stays Maybe.
        ct_state: None,
    }
}

impl Pipeline {
    pub fn new(reasons: Reasons, kallsyms: Kallsyms, clock: Clock) -> Self {
        Self {
            reasons,
            kallsyms,
            symbols: HashMap::new(),
            clock,
            json: None,
            pcap: None,
            text: false,
            flows: Flows::default(),
            written: 0,
            failed: 0,
            degraded: false,
            nf: None,
            pending: Vec::new(),
            rules: Rules::default(),
        }
    }

    pub fn reasons(&self) -> &Reasons {
        &self.reasons
    }

    pub fn symbolize(&mut self, addr: u64) -> String {
        self.symbols.entry(addr).or_insert_with(|| self.kallsyms.symbolize(addr)).clone()
    }

    pub fn handle(&mut self, bytes: &[u8]) {
        let wire = match Wire::parse(bytes) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("{e}");
                self.failed += 1;
                return;
            }
        };
        let h = wire.hdr;
        let ts = self.clock.wall(h.ts_ns);
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
        };
        let iface = Iface { netns: h.netns, ifindex: h.ifindex, ifname: ev.ifname.clone(), linktype: h.linktype };
        if h.nf_slot != 0
            && let Some(nf) = &self.nf
            && let Some(slot) = nf.slot(h.nf_slot)
            // A stale ring entry from another namespace is not this packet's history.
            && slot.netns == h.netns
        {
            let packet = packet_info(&ev, slot.hook);
            match nf.try_exact(h.nf_slot, &packet) {
                Some(info) => ev.netfilter = Some(info),
                None => {
                    self.pending.push(Pending { ev, iface, ts, data: wire.data.to_vec(), slot: h.nf_slot, packet });
                    if self.pending.len() >= MAX_PENDING {
                        self.resolve_pending();
                    }
                    return;
                }
            }
        }
        self.emit(&ev, &iface, ts, wire.data);
    }

    /// Attributes the drops that needed rule counters: one fresh ruleset snapshot per
    /// namespace involved closes their window.
    pub fn resolve_pending(&mut self) {
        let Some(nf) = &mut self.nf else { return };
        if self.pending.is_empty() {
            return;
        }
        let inodes: std::collections::BTreeSet<u32> = self.pending.iter().filter_map(|p| nf.slot(p.slot).map(|s| s.netns)).collect();
        let now = nf.snapshot(inodes);
        let pending = std::mem::take(&mut self.pending);
        let mut done = Vec::with_capacity(pending.len());
        for mut p in pending {
            if let Some(snap) = nf.slot(p.slot).and_then(|s| now.get(&s.netns)) {
                p.ev.netfilter = nf.resolve(p.slot, &p.packet, snap);
            }
            done.push(p);
        }
        nf.advance(now);
        for p in done {
            self.emit(&p.ev, &p.iface, p.ts, &p.data);
        }
    }

    fn emit(&mut self, ev: &DropEvent, iface: &Iface, ts: Duration, data: &[u8]) {
        self.flows.add(ev);
        if let Some(nf) = &ev.netfilter {
            self.rules.add(nf);
        }
        let mut ok = true;
        if let Some(j) = &mut self.json
            && let Err(e) = j.write(ev)
        {
            eprintln!("tracer: error: {e:#}; JSON output stopped, the capture goes on");
            self.json = None;
            ok = false;
        }
        if let Some(p) = &mut self.pcap {
            let mut comment = format!("drop reason={} location={} iface={} netns={}", ev.reason, ev.location, display_if(&ev.ifname), ev.netns);
            if let Some(nf) = &ev.netfilter {
                comment.push_str(&format!(" netfilter=\"{} {} {} {}: {}\"", nf.backend, nf.family, nf.table, nf.chain, nf.rule.as_deref().unwrap_or("?")));
            }
            if let Err(e) = p.write(iface, ts, ev.len, data, comment) {
                eprintln!("tracer: error: {e:#}; pcapng output stopped, the capture goes on");
                self.pcap = None;
                ok = false;
            }
        }
        if self.text {
            let _ = writeln!(std::io::stdout().lock(), "{}", text_line(ev));
        }
        self.degraded |= !ok;
        if self.degraded {
            self.failed += 1;
        } else {
            self.written += 1;
        }
    }

    pub fn flush(&mut self) {
        self.resolve_pending();
        if let Some(j) = &mut self.json
            && let Err(e) = j.flush()
        {
            eprintln!("tracer: error: {e:#}; JSON output stopped");
            self.json = None;
            self.degraded = true;
        }
        if let Some(p) = &mut self.pcap
            && let Err(e) = p.flush()
        {
            eprintln!("tracer: error: {e:#}; pcapng output stopped");
            self.pcap = None;
            self.degraded = true;
        }
    }
}

fn display_if(name: &str) -> &str {
    if name.is_empty() { "(no device)" } else { name }
}

/// tcpdump-like one-liner: time, interface, reason, location, flow.
fn text_line(e: &DropEvent) -> String {
    let h = &e.headers;
    let ep = |a: Option<std::net::IpAddr>, p: Option<u16>| match (a, p) {
        (Some(a), Some(p)) => format!("{a}.{p}"),
        (Some(a), None) => a.to_string(),
        _ => "?".into(),
    };
    let what = match (&h.proto, &h.ethertype) {
        (Some(p), _) => format!("{p} {} > {}", ep(h.src, h.sport), ep(h.dst, h.dport)),
        (None, Some(t)) => t.clone(),
        _ => "?".into(),
    };
    let flags = h.tcp_flags.as_deref().map(|f| format!(" [{f}]")).unwrap_or_default();
    format!("{} {} {} at {}: {what}{flags} len {}", &e.time[11..], display_if(&e.ifname), e.reason, e.location, e.len)
}
