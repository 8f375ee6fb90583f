//! An output written whole record by record. Records collect in memory and reach the file only
//! at record boundaries (at the periodic flush, or when the buffer fills), so a killed run leaves
//! complete records behind; a write that fails part way (disk full) keeps the whole records that
//! fit and cuts the file back to the last of them, and the sink then takes nothing more. Each sink counts the drop events it really
//! holds: the pipeline's exact `lost_events` comes from those counts, not from what was handed
//! over.
use std::{
    fs::File,
    io::{ErrorKind, Write as _},
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
    /// Where each record in `buf` ends, with the drop events up to and including it.
    bounds: Vec<(usize, u64)>,
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
        Ok(Self::new(target, name))
    }

    fn new(target: Target, name: String) -> Self {
        Self { target, name, buf: Vec::with_capacity(CAPACITY), buf_events: 0, bounds: Vec::new(), committed_bytes: 0, committed_events: 0, failed: None }
    }

    /// Appends one whole record; `drop_event` counts it as a drop event. A no-op once the sink
    /// failed (the error was returned then).
    pub fn push(&mut self, record: &[u8], drop_event: bool) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.buf.extend_from_slice(record);
        self.buf_events += u64::from(drop_event);
        self.bounds.push((self.buf.len(), self.buf_events));
        if self.buf.len() >= CAPACITY { self.flush() } else { Ok(()) }
    }

    /// Counts one more drop event whose bytes were pushed earlier as part of another record
    /// (`--all`: a dropped packet goes to the pcapng with its path).
    pub fn count_event(&mut self) {
        if self.failed.is_none() {
            self.buf_events += 1;
            if let Some(last) = self.bounds.last_mut() {
                last.1 = self.buf_events;
            }
        }
    }

    /// Writes the buffered records. When a write fails part way, the whole records that made it
    /// stay (the file is cut back to the last of them), the sink stops, and the error says so
    /// (returned once).
    pub fn flush(&mut self) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        if self.buf.is_empty() {
            // Events counted after their bytes went out (a drop held for attribution whose
            // packet the pcapng already has): nothing to write, they are in the file.
            self.committed_events += std::mem::take(&mut self.buf_events);
            return Ok(());
        }
        let (written, error) = self.write_out();
        let (keep, events) = match error {
            None => (self.buf.len(), self.buf_events),
            // The last record boundary within what was written.
            Some(_) => self.bounds.iter().rev().find(|(end, _)| *end <= written).copied().unwrap_or((0, 0)),
        };
        self.committed_bytes += keep as u64;
        self.committed_events += events;
        self.buf.clear();
        self.bounds.clear();
        self.buf_events = 0;
        let Some(e) = error else { return Ok(()) };
        if let Target::File(f) = &self.target {
            // Half a record at the end: take it back off.
            let _ = f.set_len(self.committed_bytes);
        }
        let msg = format!("cannot write {}: {e}", self.name);
        self.failed = Some(msg.clone());
        self.buf = Vec::new();
        Err(anyhow!(msg))
    }

    /// Writes `buf` out; returns how many bytes made it and the error that stopped it.
    fn write_out(&mut self) -> (usize, Option<std::io::Error>) {
        let mut stdout = matches!(self.target, Target::Stdout).then(|| std::io::stdout().lock());
        let mut done = 0;
        while done < self.buf.len() {
            let r = match (&mut self.target, &mut stdout) {
                (Target::File(f), _) => f.write(&self.buf[done..]),
                (Target::Stdout, Some(out)) => out.write(&self.buf[done..]),
                (Target::Stdout, None) => unreachable!("stdout is locked above"),
            };
            match r {
                Ok(0) => return (done, Some(ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (done, Some(e)),
            }
        }
        if let Some(Err(e)) = stdout.as_mut().map(std::io::Write::flush) {
            return (done, Some(e));
        }
        (done, None)
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
        // A drop counted after its packet's record went out (it waited for attribution):
        // committed by the next flush, though nothing is left to write.
        s.count_event();
        s.flush().unwrap();
        assert_eq!(s.committed_events(), 3);
        drop(s);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_partial_write_keeps_the_whole_records_that_fit() {
        // A pipe holds 64 KiB: writing 3 records of 40 KiB to a pipe nobody reads (non-blocking)
        // stores the first whole and part of the second; only the first counts.
        let mut fds = [0; 2];
        // SAFETY: a two-int array for pipe2.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        // SAFETY: fresh descriptors we own from here on.
        let (r, w) = unsafe { (<std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]), File::from(<std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]))) };
        let mut s = RecordSink::new(Target::File(w), "pipe".into());
        let rec = vec![b'x'; 40 * 1024];
        s.push(&rec, true).unwrap();
        s.push(&rec, true).unwrap();
        s.push(&rec, false).unwrap();
        s.count_event();
        let e = s.flush().unwrap_err().to_string();
        assert!(e.contains("cannot write pipe"), "{e}");
        assert_eq!(s.committed_events(), 1);
        drop(r);
    }

    #[test]
    fn a_full_device_keeps_whole_records_only() {
        // /dev/full fails every write with ENOSPC, like a full disk.
        let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else { return };
        let mut s = RecordSink::new(Target::File(f), "/dev/full".into());
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
