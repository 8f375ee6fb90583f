//! One INPUT of `tracer merge`, read through the report's reader (report/source.rs): its
//! node's name, summary, JSON Lines records and pcapng packets.
use std::{io::BufRead, path::Path};

use anyhow::{Context as _, Result};
use serde_json::{Map, Value};

use super::pcap::{self, IfaceDesc, Packet};
use crate::report::{model::time_ns, source};

/// A JSON Lines record with its time (for the merged order).
pub struct Record {
    pub t_ns: Option<i128>,
    pub value: Map<String, Value>,
}

impl Record {
    pub fn kind(&self) -> &str {
        self.value.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

pub struct NodeData {
    pub name: String,
    /// Where the name comes from, in words (an input written before `--node-name` has none).
    pub name_from: &'static str,
    pub input: String,
    pub summary: Option<Value>,
    pub records: Vec<Record>,
    /// Lines that were not JSON objects (e.g. a line cut by a kill).
    pub unreadable: u64,
    pub ifaces: Vec<IfaceDesc>,
    pub packets: Vec<Packet>,
}

pub const NAME_RECORDED: &str = "recorded";
pub const NAME_FROM_DIR: &str = "the input's name (written before --node-name)";

impl NodeData {
    /// Drop events in the JSON Lines.
    pub fn drop_records(&self) -> u64 {
        self.records.iter().filter(|r| r.kind() == "drop").count() as u64
    }
}

/// Reads one INPUT whole (events and packets are held in memory for the time-ordered merge).
pub fn load(path: &Path) -> Result<NodeData> {
    let (mut records, mut unreadable) = (Vec::new(), 0u64);
    let mut on_events = |r: &mut dyn BufRead| -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).with_context(|| format!("{}: cannot read the drop events", path.display()))? == 0 {
                return Ok(());
            }
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(value)) => records.push(Record { t_ns: value.get("time").and_then(Value::as_str).and_then(time_ns), value }),
                _ => unreadable += 1,
            }
        }
    };
    let (mut ifaces, mut packets) = (Vec::new(), Vec::new());
    let mut on_pcap = |r: &mut dyn std::io::Read| pcap::read(r, &mut ifaces, &mut packets).with_context(|| format!("{}: the pcapng is damaged", path.display()));
    let input = source::read_streams(path, &mut on_events, Some(&mut on_pcap))?;
    let summary = match input.files.get("capture/summary.json") {
        Some(b) => Some(serde_json::from_slice::<Value>(b).map_err(|e| anyhow::anyhow!("{}: summary.json is not JSON ({e}); copy the input again", path.display()))?),
        None => None,
    };
    if summary.as_ref().is_some_and(|s| s.get("merge_version").is_some()) {
        anyhow::bail!("{}: already the output of tracer merge; merge the original inputs instead", path.display());
    }
    let recorded = input
        .json("MANIFEST.json")
        .and_then(|m| m["node"].as_str().map(str::to_string))
        .or_else(|| summary.as_ref().and_then(|s| s["node"].as_str().map(str::to_string)))
        .or_else(|| records.iter().find_map(|r| r.value.get("node").and_then(Value::as_str).map(str::to_string)))
        .filter(|n| !n.is_empty());
    let (name, name_from) = match recorded {
        Some(n) => (n, NAME_RECORDED),
        None => (input.name.clone(), NAME_FROM_DIR),
    };
    Ok(NodeData { name, name_from, input: path.display().to_string(), summary, records, unreadable, ifaces, packets })
}
