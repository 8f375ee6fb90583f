//! `--json FILE|-`: one JSON object per line, written whole lines at a time (see record.rs).
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::record::RecordSink;
use crate::model::{
    drop::DropRecord,
    path::{Finished, HopRecord},
};

pub struct JsonLines {
    sink: RecordSink,
    line: Vec<u8>,
    /// `,"node":"NAME"}`: closes every record (the node's name, JSON-escaped once).
    node_tail: Option<Vec<u8>>,
}

impl JsonLines {
    /// `node`: the node's name, added as `"node"` to every record.
    pub fn create(path: &Path, node: Option<&str>) -> Result<Self> {
        let node_tail = node.map(|n| format!(",\"node\":{}}}", serde_json::Value::from(n)).into_bytes());
        Ok(Self { sink: RecordSink::create(path)?, line: Vec::with_capacity(1024), node_tail })
    }

    /// Appends one line; `drop_event` marks a drop event (the records `lost_events` counts).
    pub fn write<T: Serialize>(&mut self, record: &T, drop_event: bool) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).with_context(|| format!("cannot write {}", self.sink.name()))?;
        // Every record is an object: its closing brace becomes `,"node":…}` (cheaper than a
        // flattening wrapper on a million-drop capture).
        if let Some(tail) = &self.node_tail
            && self.line.last() == Some(&b'}')
        {
            self.line.pop();
            if self.line.last() == Some(&b'{') {
                self.line.extend_from_slice(&tail[1..]);
            } else {
                self.line.extend_from_slice(tail);
            }
        }
        self.line.push(b'\n');
        self.sink.push(&self.line, drop_event)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.sink.flush()
    }

    pub fn sink(&self) -> &RecordSink {
        &self.sink
    }
}

impl super::Sink for JsonLines {
    fn name(&self) -> &'static str {
        "JSON"
    }

    fn drop_event(&mut self, d: &DropRecord) -> Result<()> {
        self.write(&d.event, true)
    }

    fn hop(&mut self, h: &HopRecord) -> Result<()> {
        self.write(h, false)
    }

    fn packet(&mut self, p: &Finished) -> Result<()> {
        self.write(&p.record, false)
    }

    fn flush(&mut self) -> Result<()> {
        self.sink.flush()
    }

    fn committed(&self) -> Option<u64> {
        Some(self.sink.committed_events())
    }

    fn failure(&self) -> Option<&str> {
        self.sink.failure()
    }
}
