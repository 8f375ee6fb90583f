//! Progress on stderr while capturing: a rewritten line on a terminal, a line every few
//! seconds otherwise (logs stay readable).
use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

pub struct Progress {
    tty: bool,
    last: Instant,
    last_drops: u64,
    every: Duration,
}

impl Progress {
    #[expect(clippy::new_without_default, reason = "new() probes the terminal and starts the clock: not a default value")]
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        Self { tty, last: Instant::now(), last_drops: 0, every: if tty { Duration::from_secs(1) } else { Duration::from_secs(5) } }
    }

    pub fn tick(&mut self, drops: u64, lost: u64) {
        let dt = self.last.elapsed();
        if dt < self.every {
            return;
        }
        #[expect(clippy::cast_precision_loss, reason = "a drop count far below 2^52, for display")]
        let rate = (drops.saturating_sub(self.last_drops)) as f64 / dt.as_secs_f64();
        self.last = Instant::now();
        self.last_drops = drops;
        let line = format!("{drops} drops ({rate:.0}/s), {lost} lost");
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
    }

    pub fn finish(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// The counts so far, as `--progress-file` holds them (one JSON object, replaced atomically).
#[derive(Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Drops that passed every filter (the in-kernel counter).
    pub drops: u64,
    /// Events read from the ring (readable or not).
    pub read: u64,
    /// Events that did not fit in the ring.
    pub lost: u64,
    /// Events held back by `--max-event-rate`.
    pub rate_limited: u64,
    /// Events committed to every output (flushed at least every second).
    pub written: u64,
}

/// `--progress-file`: rewritten only when a count changed, so a reader waiting for "every drop
/// sent has been read" (`read + lost + rate_limited >= drops >= N`) never has to sleep.
pub struct ProgressFile {
    path: std::path::PathBuf,
    last: Option<Counts>,
}

impl ProgressFile {
    #[must_use]
    pub fn new(path: std::path::PathBuf) -> Self {
        Self { path, last: None }
    }

    /// Writes `now` when it differs from what the file holds.
    pub fn update(&mut self, now: Counts) -> anyhow::Result<()> {
        if self.last == Some(now) {
            return Ok(());
        }
        let mut bytes = serde_json::to_vec(&now)?;
        bytes.push(b'\n');
        super::write_atomic(&self.path, &bytes)?;
        self.last = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_only_when_a_count_changes() {
        let dir = std::env::temp_dir().join(format!("tracer-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("progress.json");
        let mut file = ProgressFile::new(path.clone());
        let counts = Counts { drops: 3, read: 2, lost: 1, rate_limited: 0, written: 2 };
        file.update(counts).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"drops": 3, "read": 2, "lost": 1, "rate_limited": 0, "written": 2}));
        // Unchanged counts: the file is not rewritten (a reader may have removed it).
        std::fs::remove_file(&path).unwrap();
        file.update(counts).unwrap();
        assert!(!path.exists());
        file.update(Counts { read: 3, ..counts }).unwrap();
        assert!(path.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
