//! Output files: checked before the probes attach, removed if the run fails before they are
//! complete, and the summary written all or nothing.
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// Checks that `path` can be created, without leaving anything behind (run before the probes
/// attach, so a bad path fails fast and writes nothing).
pub fn check_writable(path: &Path) -> Result<()> {
    if path.as_os_str() == "-" {
        return Ok(());
    }
    if path.is_dir() {
        anyhow::bail!("cannot write {}: it is a directory", path.display());
    }
    if path.exists() {
        // Opening for append changes nothing in an existing file.
        std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(());
    }
    // Never create the file here: a script waiting for `--ready-file` to appear would start
    // too early. Ask whether the directory takes new files instead.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| anyhow::anyhow!("cannot write {}: bad path", path.display()))?;
    // SAFETY: a NUL-terminated path; access() only reads it.
    if !dir.is_dir() || unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let why = if dir.is_dir() { std::io::Error::last_os_error().to_string() } else { "no such directory".to_string() };
        anyhow::bail!("cannot write {}: {why}", path.display());
    }
    Ok(())
}

/// Files this run created, removed again if the run fails before producing them completely.
#[derive(Default)]
pub struct Created(Vec<PathBuf>);

impl Created {
    pub fn add(&mut self, p: &Path) {
        if p.as_os_str() != "-" {
            self.0.push(p.to_path_buf());
        }
    }

    pub fn remove_all(&mut self) {
        for p in self.0.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn keep(&mut self) {
        self.0.clear();
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename): the summary is all or nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return Ok(out.flush()?);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
        .and_then(|()| std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display())));
    if written.is_err() {
        // Nothing half-written stays behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
