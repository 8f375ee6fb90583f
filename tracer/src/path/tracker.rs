//! Turns path events into records: one `"type": "path"` record per hop as it happens, and one
//! `"type": "packet"` record per packet when its path ends (ordered hops and fate), with the
//! packet's bytes kept from its first sighting for `--all`.
use std::{collections::HashMap, time::Duration};

use serde::Serialize;

use super::story::{End, Hop, Stories, Story};
use crate::{events::Headers, output::pcapng::Iface};

/// Packets followed at once; past this the oldest open ones are closed ("last seen at …").
const MAX_OPEN: usize = 16_384;

/// A hop as JSON (`"type": "path"`).
#[derive(Debug, Serialize)]
pub struct HopRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub packet_id: u64,
    pub hook: String,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: u32,
    /// Nanoseconds since the packet was first seen.
    pub t_ns: u64,
    pub time: String,
    /// The first hop of a packet carries its headers.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A packet's whole story (`"type": "packet"`).
#[derive(Debug, Serialize)]
pub struct PacketRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub packet_id: u64,
    pub time: String,
    #[serde(flatten)]
    pub headers: Headers,
    pub path: Vec<Hop>,
    pub fate: String,
}

/// A finished packet: its record, its timeline text, and (for `--all`) its bytes.
pub struct Finished {
    pub record: PacketRecord,
    pub timeline: String,
    pub packet: Option<Captured>,
}

/// A packet's bytes as first seen, for the pcapng.
#[derive(Clone)]
pub struct Captured {
    pub iface: Iface,
    pub ts: Duration,
    pub len: u32,
    pub data: Vec<u8>,
}

struct First {
    headers: Headers,
    summary: String,
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
    pub first: Option<(Headers, String, Captured)>,
}

impl PathTracker {
    /// Records a hop; returns its record and any packets closed to make room.
    pub fn hop(&mut self, h: HopIn) -> (HopRecord, Vec<Finished>) {
        let headers = h.first.as_ref().map(|f| f.0.clone());
        if let Some((headers, summary, captured)) = h.first {
            self.first.insert(h.packet_id, First { headers, summary, time: h.time.clone(), captured });
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
        let (headers, summary, time, captured) = match first {
            Some(f) => (f.headers, f.summary, f.time, Some(f.captured)),
            None => (Headers::default(), "?".into(), String::new(), None),
        };
        let fate = s.fate();
        let timeline = super::timeline::render(&s, &summary);
        Finished { record: PacketRecord { kind: "packet", packet_id: s.packet_id, time, headers, path: s.hops, fate }, timeline, packet: captured }
    }
}

/// The pcapng comment of a packet written by `--all`.
pub fn comment(r: &PacketRecord) -> String {
    let hops: Vec<String> = r
        .path
        .iter()
        .map(|h| if h.ifname.is_empty() { h.hook.clone() } else { format!("{}@{}", h.hook, h.ifname) })
        .collect();
    format!("packet {} path: {}; fate: {}", r.packet_id, hops.join(" > "), r.fate)
}
