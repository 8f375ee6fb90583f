//! `--path` records: a hop per path event, a packet record when its path ends.
use tracer_common::{PacketEvent, hook};

use super::Pipeline;
use crate::{
    model::{
        drop::Iface,
        headers::parse_headers,
        path::{Captured, End, Finished},
        time::rfc3339,
        wire::ifname,
    },
    path::tracker::HopIn,
};

impl Pipeline {
    pub(super) fn path_event(&mut self, h: &PacketEvent, data: &[u8]) {
        let Some(mut tracker) = self.path.take() else { return };
        let location = self.names.symbolize(h.location);
        let end = match h.hook {
            hook::CONSUME => Some(End::Consumed { location: location.clone() }),
            hook::DELIVER => Some(End::Delivered { netns: h.netns }),
            hook::DROP => Some(End::Dropped { reason: self.names.reasons.name(h.reason), location: location.clone() }),
            _ => None,
        };
        if let Some(end) = end {
            if let Some(f) = tracker.end(h.packet_id, end) {
                self.write_finished(&f);
            }
        } else {
            let ts = self.names.wall(h.ts_ns);
            let (name, netns) = self.hop_name(h, &location);
            let ifname = ifname(&h.ifname);
            let first = (h.cap_len > 0).then(|| {
                let headers = parse_headers(h.linktype, data);
                let pod = self.enrich.pods.by_iface(h.netns, h.ifindex).map(|p| p.key.clone());
                let iface = Iface { netns: h.netns, ifindex: h.ifindex, ifname: ifname.clone(), linktype: h.linktype, pod };
                (headers, Captured { iface, ts, len: h.len, data: data.to_vec() })
            });
            let hop = HopIn { packet_id: h.packet_id, mono_ns: h.ts_ns, hook: name, ifname, ifindex: h.ifindex, netns, time: rfc3339(ts), first };
            let (rec, done) = tracker.hop(hop);
            self.sinks.hop(&rec);
            for f in done {
                self.write_finished(&f);
            }
        }
        self.path = Some(tracker);
    }

    /// How a hop is named in the path, and its namespace.
    fn hop_name(&self, h: &PacketEvent, location: &str) -> (String, u32) {
        match h.hook {
            hook::FUNCTION => (location.split('+').next().unwrap_or_default().to_string(), h.netns),
            hook::TC => {
                let (egress, _) = tracer_common::tc::decode(h.tc_code);
                (format!("tc {}", if egress { "egress" } else { "ingress" }), h.netns)
            }
            hook::NETFILTER => match self.enrich.nf.as_ref().and_then(|(nf, _)| nf.slot(h.nf_slot)) {
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
    pub(super) fn end_path(&mut self, packet_id: u64, end: End) -> bool {
        let Some(mut tracker) = self.path.take() else { return false };
        let in_pcap = tracker.end(packet_id, end).is_some_and(|f| self.write_finished(&f));
        self.path = Some(tracker);
        in_pcap
    }

    /// Writes every packet still being followed (the capture ends).
    pub(super) fn finish_paths(&mut self) {
        let Some(mut tracker) = self.path.take() else { return };
        for f in tracker.drain() {
            self.write_finished(&f);
        }
        self.path = Some(tracker);
    }

    /// Hands a finished packet to the sinks; true when its packet goes to the pcapng (`--all`).
    fn write_finished(&mut self, f: &Finished) -> bool {
        self.sinks.packet(f);
        self.all && f.packet.is_some()
    }
}
