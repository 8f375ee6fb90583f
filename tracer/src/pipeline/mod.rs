//! Per record, one way: wire record → model (names, headers) → enrichment (pods, tc program,
//! netfilter rule; path tracking) → every sink. Runs on the event loop; it never waits for
//! the node except when too many drops wait for their netfilter window (the ring reader
//! thread keeps draining meanwhile, see session/reader.rs).
mod names;
mod path;
#[cfg(test)]
mod tests;

use tracer_common::kind;

pub use self::names::Namer;
use crate::{
    enrich::Enricher,
    model::{
        drop::{DropEvent, DropRecord, Iface},
        path::End,
        wire::Wire,
    },
    path::tracker::PathTracker,
    sinks::Sinks,
};

pub struct Pipeline {
    pub names: Namer,
    pub enrich: Enricher,
    pub sinks: Sinks,
    /// `--path`: packets followed hook by hook.
    pub path: Option<PathTracker>,
    /// `--all`: followed packets go to the pcapng too.
    pub all: bool,
    /// Ring records that could not be read (never reached an output).
    pub unreadable: u64,
}

impl Pipeline {
    /// Wall time before which every drop has been read from the ring into the pipeline (the
    /// reader's last drain that emptied it; None once every record is in).
    pub fn caught_up(&self) -> Option<std::time::Duration> {
        (self.enrich.caught_up != u64::MAX).then(|| self.names.clock.wall(self.enrich.caught_up))
    }

    pub fn new(names: Namer, enrich: Enricher, sinks: Sinks) -> Self {
        Self { names, enrich, sinks, path: None, all: false, unreadable: 0 }
    }

    /// Drop events handed to the outputs (attributed or not).
    pub fn emitted(&self) -> u64 {
        self.sinks.handed()
    }

    /// One ring record.
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
        if h.kind == kind::PATH {
            self.path_event(&h, wire.data);
            return;
        }
        let event = DropEvent::from_wire(&h, wire.data, &mut self.names);
        let iface = Iface { netns: h.netns, ifindex: h.ifindex, ifname: event.ifname.clone(), linktype: h.linktype, pod: None };
        let in_pcap = h.packet_id != 0 && self.end_path(h.packet_id, End::Dropped { reason: event.reason.clone(), location: event.location.clone() });
        let record = DropRecord { event, iface, ts: self.names.wall(h.ts_ns), data: wire.data.to_vec(), in_pcap };
        if let Some(r) = self.enrich.drop(record, &h) {
            self.sinks.drop_event(&r);
        }
        if self.enrich.must_poll() {
            self.poll();
        }
    }

    /// Drops whose netfilter window closed go out.
    pub fn poll(&mut self) {
        for r in self.enrich.poll() {
            self.sinks.drop_event(&r);
        }
    }

    /// Periodic: closed windows out, outputs to disk.
    pub fn flush(&mut self) {
        self.poll();
        self.sinks.flush();
    }

    /// The capture ended (probes detached, ring drained): every held drop and every packet
    /// still followed goes out, and the outputs reach the disk.
    pub fn finish(&mut self) {
        self.finish_paths();
        for r in self.enrich.finish() {
            self.sinks.drop_event(&r);
        }
        self.sinks.flush();
    }
}

impl crate::model::drop::Names for Namer {
    fn reason(&self, code: u32) -> String {
        self.reasons.name(code)
    }

    fn location(&mut self, addr: u64) -> String {
        self.symbolize(addr)
    }

    fn wall(&self, mono_ns: u64) -> std::time::Duration {
        self.clock.wall(mono_ns)
    }

    fn stack(&mut self, id: u32) -> Option<Vec<String>> {
        self.stack_frames(id)
    }

    fn conntrack(&self, h: &tracer_common::PacketEvent, netfilter_drop: bool) -> Option<crate::model::conntrack::Ct> {
        self.ct.of(h, netfilter_drop)
    }
}
