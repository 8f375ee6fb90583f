//! The tracer's `--progress-file`: what a running capture has counted and read so far, so a
//! test waits for the tracer to have seen its packets instead of sleeping for a while.
use std::{path::Path, time::Duration};

use anyhow::Result;
use serde_json::Value;

use crate::wait;

/// Bound on the tracer catching up with what the kernel counted: generous, since it is only
/// reached when something is wrong (a slow guest reads its ring within a few seconds).
pub const EVENT_TIMEOUT: Duration = Duration::from_mins(2);

/// One reading of the file (absent before the tracer first wrote it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Drops that passed every filter (the in-kernel counter).
    pub drops: u64,
    /// Events read from the ring.
    pub read: u64,
    /// Events lost in the ring.
    pub lost: u64,
    /// Events held back by `--max-event-rate`.
    pub rate_limited: u64,
    /// Events committed to every output.
    pub written: u64,
}

impl Progress {
    /// Reads `path`; `None` while it does not exist yet.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
        let v: Value = serde_json::from_str(&text)?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(Some(Self { drops: n("drops"), read: n("read"), lost: n("lost"), rate_limited: n("rate_limited"), written: n("written") }))
    }

    /// Every counted drop has been read from the ring or accounted as lost or rate-limited.
    #[must_use]
    pub fn caught_up(&self) -> bool {
        self.read + self.lost + self.rate_limited >= self.drops
    }
}

/// Waits (bounded by [`EVENT_TIMEOUT`]) until `done` holds for the file at `path`.
pub fn until(path: &Path, what: &str, done: impl Fn(&Progress) -> bool) -> Result<Progress> {
    let mut last = Progress::default();
    wait::until(what, EVENT_TIMEOUT, Duration::from_millis(10), || {
        if let Some(p) = Progress::read(path)? {
            last = p;
        }
        Ok(done(&last).then_some(last))
    })
    .map_err(|e| e.context(format!("last progress: {last:?}")))
}
