//! An output written whole record by record. Records collect in memory and reach the file only
//! at record boundaries (at the periodic flush, or when the buffer fills), so a killed run leaves
//! complete records behind; a write that fails part way (disk full) is cut back to the last whole
//! record, and the sink then takes nothing more. Each sink counts the drop events it really
//! holds: the pipeline's exact `lost_events` comes from those counts, not from what was handed
//! over.
use std::{
    fs::File,
    io::Write as _,
    path::Path,
};

use anyhow::{Result, anyhow};

/// Bytes buffered before a write; a flush happens at least every second anyway.
const CAPACITY: usize = 256 * 1024;

enum Target {
    File(File),
    Stdout,
}

pub struct RecordSink {
    target: Target,
    name: String,
    buf: Vec<u8>,
    /// Drop events in `buf`.
    buf_events: u64,
    /// Bytes and drop events already in the file.
    committed_bytes: u64,
    committed_events: u64,
    /// Why the sink stopped (a write failed); it takes nothing more.
    failed: Option<String>,
}

impl RecordSink {
    /// Creates `path` (`-` is stdout).
    pub fn create(path: &Path) -> Result<Self> {
        let (target, name) = if path.as_os_str() == "-" {
            (Target::Stdout, "stdout".to_string())
        } else {
            let f = File::create(path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
            (Target::File(f), path.display().to_string())
        };
        Ok(Self { target, name, buf: Vec::with_capacity(CAPACITY), buf_events: 0, committed_bytes: 0, committed_events: 0, failed: None })
    }

    /// Appends one whole record; `drop_event` counts it as a drop event. A no-op once the sink
    /// failed (the error was returned then).
    pub fn push(&mut self, record: &[u8], drop_event: bool) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.buf.extend_from_slice(record);
        self.buf_events += u64::from(drop_event);
        if self.buf.len() >= CAPACITY { self.flush() } else { Ok(()) }
    }

    /// Counts one more drop event whose bytes were pushed earlier as part of another record
    /// (`--all`: a dropped packet goes to the pcapng with its path).
    pub fn count_event(&mut self) {
        if self.failed.is_none() {
            self.buf_events += 1;
        }
    }

    /// Writes the buffered records. On failure the file is cut back to its last whole record,
    /// the sink stops, and the error says so (returned once).
    pub fn flush(&mut self) -> Result<()> {
        if self.failed.is_some() || self.buf.is_empty() {
            return Ok(());
        }
        let r = match &mut self.target {
            Target::File(f) => f.write_all(&self.buf),
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&self.buf).and_then(|()| out.flush())
            }
        };
        match r {
            Ok(()) => {
                self.committed_bytes += self.buf.len() as u64;
                self.committed_events += self.buf_events;
                self.buf.clear();
                self.buf_events = 0;
                Ok(())
            }
            Err(e) => {
                // A partial write leaves half a record: take it back off.
                if let Target::File(f) = &self.target {
                    let _ = f.set_len(self.committed_bytes);
                }
                let msg = format!("cannot write {}: {e}", self.name);
                self.failed = Some(msg.clone());
                self.buf = Vec::new();
                self.buf_events = 0;
                Err(anyhow!(msg))
            }
        }
    }

    /// Drop events durably in the output.
    pub fn committed_events(&self) -> u64 {
        self.committed_events
    }

    /// Why the sink stopped, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for RecordSink {
    /// Whole records still buffered reach the file on any exit, a panic's unwinding included.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tracer-record-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn counts_only_flushed_drop_events() {
        let d = dir("count");
        let p = d.join("out");
        let mut s = RecordSink::create(&p).unwrap();
        s.push(b"a\n", true).unwrap();
        s.push(b"b\n", false).unwrap();
        s.count_event();
        assert_eq!(s.committed_events(), 0);
        s.flush().unwrap();
        assert_eq!(s.committed_events(), 2);
        assert_eq!(std::fs::read(&p).unwrap(), b"a\nb\n");
        drop(s);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_full_device_keeps_whole_records_only() {
        // /dev/full fails every write with ENOSPC, like a full disk.
        let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else { return };
        let mut s = RecordSink { target: Target::File(f), name: "/dev/full".into(), buf: Vec::new(), buf_events: 0, committed_bytes: 0, committed_events: 0, failed: None };
        s.push(b"{}\n", true).unwrap();
        let e = s.flush().unwrap_err().to_string();
        assert!(e.contains("cannot write /dev/full") && e.contains("No space left"), "{e}");
        assert_eq!(s.committed_events(), 0);
        assert!(s.failure().is_some());
        // Stopped: later records are ignored, no second error.
        s.push(b"{}\n", true).unwrap();
        s.flush().unwrap();
        assert_eq!(s.committed_events(), 0);
    }
}
