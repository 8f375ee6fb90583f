//! Everything a capture writes, behind one interface: JSON Lines events, the pcapng, stdout
//! lines, the summary (and the tables on stderr), the bundle. The session holds them as a
//! list; records flow into them and nothing flows back but what they committed, from which
//! `lost_events` and `events` are computed here, once. Files are created only once the probes
//! are attached, and flushed at least every second, whole records at a time, so a killed run
//! leaves readable files (record.rs).
pub mod bundle;
pub mod files;
pub mod jsonl;
pub mod pcapng;
pub mod progress;
pub mod record;
pub mod stdout;
pub mod summary;
pub mod table;

use anyhow::Result;

pub use self::files::{Created, check_writable, write_atomic};
use crate::model::{
    drop::DropRecord,
    path::{Finished, HopRecord},
};

/// One output of a capture. Every sink receives every record, in the same order.
pub trait Sink: Send {
    /// What the user calls it in an error ("JSON", "pcapng"…).
    fn name(&self) -> &'static str;
    /// A drop event (the records `lost_events` counts).
    fn drop_event(&mut self, d: &DropRecord) -> Result<()>;
    /// A hop of a followed packet (`--path`).
    fn hop(&mut self, _h: &HopRecord) -> Result<()> {
        Ok(())
    }
    /// A followed packet whose path ended.
    fn packet(&mut self, _p: &Finished) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Drop events durably in this output; None for outputs that keep no events (a line on a
    /// terminal, a tally), which then do not bound `events`.
    fn committed(&self) -> Option<u64> {
        None
    }
    /// Why the output stopped early, if it did.
    fn failure(&self) -> Option<&str> {
        None
    }
    /// The run ended with these exact totals.
    fn finish(&mut self, _end: &summary::RunEnd) -> Result<()> {
        Ok(())
    }
}

/// The outputs of a capture, in the order they receive records.
#[derive(Default)]
pub struct Sinks {
    list: Vec<Box<dyn Sink>>,
    /// Drop events handed to the outputs.
    handed: u64,
}

impl Sinks {
    pub fn push(&mut self, s: Box<dyn Sink>) {
        self.list.push(s);
    }

    pub fn drop_event(&mut self, d: &DropRecord) {
        self.handed += 1;
        self.each(|s| s.drop_event(d));
    }

    pub fn hop(&mut self, h: &HopRecord) {
        self.each(|s| s.hop(h));
    }

    pub fn packet(&mut self, p: &Finished) {
        self.each(|s| s.packet(p));
    }

    pub fn flush(&mut self) {
        self.each(|s| s.flush());
    }

    /// The end of the run, in list order; the first error ends it.
    pub fn finish(&mut self, end: &summary::RunEnd) -> Result<()> {
        self.list.iter_mut().try_for_each(|s| s.finish(end))
    }

    /// An output that fails (disk full, …) is reported once and stops; the others go on.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> Result<()>) {
        for s in &mut self.list {
            if let Err(e) = f(s.as_mut()) {
                eprintln!("tracer: error: {e:#}; {} output stopped (it keeps every whole record written so far), the capture goes on", s.name());
            }
        }
    }

    /// Drop events handed over.
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// Drop events that reached every output that keeps them. Every output receives the drop
    /// events in the same order and one that fails keeps a prefix of them, so the events in
    /// all of them are the shortest prefix. Without such outputs, every event handed over
    /// counts.
    pub fn written(&self) -> u64 {
        self.list.iter().filter_map(|s| s.committed()).min().unwrap_or(self.handed)
    }

    /// The outputs that stopped early, with why.
    pub fn failures(&self) -> Vec<String> {
        self.list.iter().filter_map(|s| s.failure().map(String::from)).collect()
    }
}
