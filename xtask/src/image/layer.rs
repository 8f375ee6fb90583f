//! The image's one layer: mmdebstrap's tree rewritten to the layout the image promises, plus
//! the tracer binary, gzip-compressed while both digests are computed (diff ID of the tar, blob
//! digest of the gzip).
//!
//! The layout ("not owned by anyone but root"): every file and directory is owned by 0:0
//! (Debian gives a few to groups such as `mail`, `staff`, `shadow`), nothing is setuid or
//! setgid (`su`, `newgrp`, `unix_chkpwd`… lose the bit: nobody logs in here), file
//! capabilities and other extended attributes are dropped, and nothing is writable by group
//! or others except the sticky `/tmp` and `/var/tmp`. The container runs as uid 0 with a
//! capability set (eBPF needs it, Kubernetes gives added capabilities to uid 0 only) and a
//! read-only root filesystem; it writes only to `/var/lib/tracer/dumps` (0700, a hostPath in
//! the `DaemonSet`) and `/tmp`.
use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use flate2::{Compression, write::GzEncoder};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

/// Where the binary goes; the entrypoint names it.
pub const BINARY: &str = "usr/local/bin/tracer";
/// The dump directory `tracer watch` writes to by default.
pub const DUMP_DIR: &str = "var/lib/tracer/dumps";

/// A written layer blob.
pub struct Layer {
    /// `sha256:…` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:…` of the gzip blob.
    pub digest: String,
    pub size: u64,
    /// Entries written, and those left out (device nodes).
    pub entries: usize,
    pub skipped: usize,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing { inner, hash: Sha256::new(), len: 0 }
}

/// `sha256:` and the hash in lower-case hex, as OCI digests are written.
pub fn digest_string(h: Sha256) -> String {
    use std::fmt::Write as _;
    h.finalize().iter().fold(String::from("sha256:"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The mode a tree entry gets: no setuid/setgid, nothing writable by group or others unless
/// it is a sticky directory (`/tmp`).
pub fn normalized_mode(mode: u32, kind: EntryType) -> u32 {
    let mut m = mode & 0o1777;
    let sticky_dir = kind == EntryType::Directory && m & 0o1000 != 0;
    if !sticky_dir {
        m &= !0o1022;
    }
    m
}

/// Rewrites `rootfs` (a tar) into `out` (gzip), adding `binary` at [`BINARY`] and the dump
/// directory; every timestamp becomes `epoch`.
pub fn write(rootfs: &Path, binary: &Path, epoch: u64, out: &Path) -> Result<Layer> {
    let blob = hashing(BufWriter::new(File::create(out).with_context(|| format!("creating {}", out.display()))?));
    let gz = GzEncoder::new(blob, Compression::default());
    let mut tar = tar::Builder::new(hashing(gz));
    let mut archive = tar::Archive::new(BufReader::new(File::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?));
    let (mut entries, mut skipped) = (0, 0);
    let mut seen_dump_parents = [false; 2];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let kind = entry.header().entry_type();
        // Device nodes (mmdebstrap's /dev): the runtime mounts its own /dev.
        if matches!(kind, EntryType::Char | EntryType::Block | EntryType::Fifo) {
            skipped += 1;
            continue;
        }
        let rel = path.strip_prefix("./").unwrap_or(&path).to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        for (i, p) in ["var/lib/tracer", DUMP_DIR].iter().enumerate() {
            seen_dump_parents[i] |= rel == Path::new(p);
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(normalized_mode(entry.header().mode()?, kind));
        set_owner_time(&mut h, epoch)?;
        match kind {
            EntryType::Symlink | EntryType::Link => {
                let target = entry.link_name()?.context("a link without a target")?.into_owned();
                // Hard links name their target as a path in the archive, like the entry itself.
                let target = if kind == EntryType::Link { target.strip_prefix("./").unwrap_or(&target).to_path_buf() } else { target };
                h.set_size(0);
                tar.append_link(&mut h, &rel, &target)?;
            }
            EntryType::Regular | EntryType::Directory => {
                h.set_size(if kind == EntryType::Directory { 0 } else { entry.header().size()? });
                tar.append_data(&mut h, &rel, &mut entry)?;
            }
            other => bail!("{}: unexpected tar entry type {other:?} in the root filesystem", rel.display()),
        }
        entries += 1;
    }
    for (dir, seen) in ["var/lib/tracer", DUMP_DIR].iter().zip(seen_dump_parents) {
        if !seen {
            let mut h = Header::new_gnu();
            h.set_entry_type(EntryType::Directory);
            h.set_mode(0o700);
            h.set_size(0);
            set_owner_time(&mut h, epoch)?;
            tar.append_data(&mut h, dir, io::empty())?;
            entries += 1;
        }
    }
    let mut bin = File::open(binary).with_context(|| format!("opening {}", binary.display()))?;
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(bin.metadata()?.len());
    set_owner_time(&mut h, epoch)?;
    tar.append_data(&mut h, BINARY, &mut bin as &mut dyn Read)?;
    entries += 1;

    let tar_hashing = tar.into_inner()?;
    let diff_id = digest_string(tar_hashing.hash);
    let mut blob = tar_hashing.inner.finish()?;
    blob.flush()?;
    Ok(Layer { diff_id, digest: digest_string(blob.hash), size: blob.len, entries, skipped })
}

fn set_owner_time(h: &mut Header, epoch: u64) -> Result<()> {
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    h.set_mtime(epoch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(normalized_mode(0o4755, EntryType::Regular), 0o755);
        assert_eq!(normalized_mode(0o2755, EntryType::Regular), 0o755);
        assert_eq!(normalized_mode(0o2775, EntryType::Directory), 0o755);
        assert_eq!(normalized_mode(0o1777, EntryType::Directory), 0o1777);
        assert_eq!(normalized_mode(0o666, EntryType::Regular), 0o644);
        assert_eq!(normalized_mode(0o640, EntryType::Regular), 0o640);
    }
}
