//! Turns path events into records: one `"type": "path"` record per hop as it happens, and one
//! `"type": "packet"` record per packet when its path ends (ordered hops and fate), with the
//! packet's bytes kept from its first sighting for `--all`.
use std::collections::HashMap;

use super::story::Stories;
use crate::model::{
    headers::Headers,
    path::{Captured, End, Finished, HopRecord, PacketRecord, Story},
};

/// Packets followed at once; past this the oldest open ones are closed ("last seen at …").
const MAX_OPEN: usize = 16_384;

struct First {
    headers: Headers,
    time: String,
    captured: Captured,
}

pub struct PathTracker {
    stories: Stories,
    first: HashMap<u64, First>,
    /// Stories completed (or closed) so far.
    pub packets: u64,
}

impl Default for PathTracker {
    fn default() -> Self {
        Self { stories: Stories::new(MAX_OPEN), first: HashMap::new(), packets: 0 }
    }
}

/// One hop as the kernel reported it.
pub struct HopIn {
    pub packet_id: u64,
    pub mono_ns: u64,
    pub hook: String,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: u32,
    pub time: String,
    /// Set on the packet's first hop (its bytes were captured there).
    pub first: Option<(Headers, Captured)>,
}

impl PathTracker {
    /// Records a hop; returns its record and any packets closed to make room.
    pub fn hop(&mut self, h: HopIn) -> (HopRecord, Vec<Finished>) {
        let headers = h.first.as_ref().map(|f| f.0.clone());
        if let Some((headers, captured)) = h.first {
            self.first.insert(h.packet_id, First { headers, time: h.time.clone(), captured });
        }
        let evicted = self.stories.hop(h.packet_id, h.mono_ns, &h.hook, &h.ifname, h.netns);
        let t_ns = self.stories_t(h.packet_id);
        let rec = HopRecord {
            kind: "path",
            packet_id: h.packet_id,
            hook: h.hook,
            ifname: h.ifname,
            ifindex: h.ifindex,
            netns: h.netns,
            t_ns,
            time: h.time,
            headers,
        };
        let done = evicted.into_iter().map(|s| self.finish(s)).collect();
        (rec, done)
    }

    fn stories_t(&self, id: u64) -> u64 {
        self.stories.last_offset(id).unwrap_or(0)
    }

    /// Ends a packet's path (consumed or dropped).
    pub fn end(&mut self, packet_id: u64, end: End) -> Option<Finished> {
        let s = self.stories.end(packet_id, end)?;
        Some(self.finish(s))
    }

    /// Every packet still open (the capture ends).
    pub fn drain(&mut self) -> Vec<Finished> {
        let open = self.stories.drain();
        open.into_iter().map(|s| self.finish(s)).collect()
    }

    fn finish(&mut self, s: Story) -> Finished {
        self.packets += 1;
        let first = self.first.remove(&s.packet_id);
        let (headers, time, captured) = match first {
            Some(f) => (f.headers, f.time, Some(f.captured)),
            None => (Headers::default(), String::new(), None),
        };
        let fate = s.fate();
        Finished { record: PacketRecord { kind: "packet", packet_id: s.packet_id, time, headers, path: s.hops, fate }, packet: captured }
    }
}

