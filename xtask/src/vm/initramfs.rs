//! An initramfs assembled in memory as a list of entries (host files, generated text, symlinks,
//! directories) and written as a gzip'd `newc` cpio archive. Dynamic executables bring their
//! shared libraries and the loader, found with `ldd`, at the paths the host uses.
use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File { src: PathBuf, mode: u32 },
    Data { bytes: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// Guest path (absolute, `/`-separated) → what goes there.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

impl Tree {
    fn put(&mut self, guest: &str, node: Node) {
        let guest = normalize(guest);
        let mut parent = Path::new(&guest).parent();
        while let Some(p) = parent.filter(|p| *p != Path::new("/")) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir);
            parent = p.parent();
        }
        self.entries.insert(guest, node);
    }

    pub fn contains(&self, guest: &str) -> bool {
        self.entries.contains_key(&normalize(guest))
    }

    pub fn dir(&mut self, guest: &str) {
        self.put(guest, Node::Dir);
    }

    /// The host file `src` (symlinks followed) at `guest`, with its permission bits.
    pub fn file(&mut self, guest: &str, src: &Path) -> Result<()> {
        let meta =
            std::fs::metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
        self.put(
            guest,
            Node::File {
                src: src.to_path_buf(),
                mode: meta.permissions().mode() & 0o7777,
            },
        );
        Ok(())
    }

    pub fn data(&mut self, guest: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
        self.put(
            guest,
            Node::Data {
                bytes: bytes.into(),
                mode,
            },
        );
    }

    pub fn symlink(&mut self, guest: &str, target: &str) {
        self.put(guest, Node::Symlink(target.into()));
    }

    /// An executable (or shared object) and every library `ldd` says it loads.
    pub fn elf(&mut self, guest: &str, src: &Path) -> Result<()> {
        self.file(guest, src)?;
        self.libs_of(src)
    }

    /// The libraries of `src` (and the loader), each at the path ldd prints.
    pub fn libs_of(&mut self, src: &Path) -> Result<()> {
        let out = cmd::new("ldd")
            .arg(src)
            .output()
            .with_context(|| format!("cannot run ldd on {}", src.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // Static executables: "not a dynamic executable" (exit 1), nothing to add.
            if text.contains("not a dynamic executable")
                || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            {
                return Ok(());
            }
            bail!(
                "ldd {} failed: {}",
                src.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for lib in parse_ldd(&text).map_err(|e| anyhow!("{}: {e}", src.display()))? {
            if !self.contains(&lib) {
                self.file(&lib, Path::new(&lib))?;
            }
        }
        Ok(())
    }

    /// Every file and symlink under the host directory `src`, at `guest`.
    pub fn tree(&mut self, guest: &str, src: &Path) -> Result<()> {
        for e in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
            let e = e?;
            let g = format!("{guest}/{}", e.file_name().to_string_lossy());
            let ty = e.file_type()?;
            if ty.is_symlink() {
                self.symlink(&g, &std::fs::read_link(e.path())?.to_string_lossy());
            } else if ty.is_dir() {
                self.dir(&g);
                self.tree(&g, &e.path())?;
            } else {
                self.file(&g, &e.path())?;
            }
        }
        Ok(())
    }

    /// Writes the archive through `gzip -1` into `out`; returns (uncompressed, compressed) bytes.
    pub fn write_gzip(&self, out: &Path) -> Result<(u64, u64)> {
        let file = std::fs::File::create(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let mut gz = cmd::new("gzip")
            .args(["-1", "-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .context("cannot run gzip")?;
        let mut stdin = gz.stdin.take().context("gzip stdin")?;
        let written = self.write_cpio(&mut std::io::BufWriter::with_capacity(1 << 20, &mut stdin));
        drop(stdin);
        let status = gz.wait()?;
        let raw = written?;
        if !status.success() {
            bail!("gzip failed ({status})");
        }
        Ok((raw, std::fs::metadata(out)?.len()))
    }

    /// The `newc` archive (what the kernel unpacks), parents before children; returns its size.
    pub fn write_cpio(&self, w: &mut impl Write) -> Result<u64> {
        let mut cpio = Cpio {
            w,
            offset: 0,
            ino: 1,
        };
        for (path, node) in &self.entries {
            let name = path.trim_start_matches('/');
            match node {
                Node::Dir => cpio.entry(name, 0o040_755, &[])?,
                Node::Symlink(target) => cpio.entry(name, 0o120_777, target.as_bytes())?,
                Node::Data { bytes, mode } => cpio.entry(name, 0o100_000 | mode, bytes)?,
                Node::File { src, mode } => {
                    let bytes = std::fs::read(src)
                        .with_context(|| format!("cannot read {}", src.display()))?;
                    cpio.entry(name, 0o100_000 | mode, &bytes)?;
                }
            }
        }
        cpio.entry("TRAILER!!!", 0, &[])?;
        cpio.w.flush()?;
        Ok(cpio.offset)
    }
}

fn normalize(guest: &str) -> String {
    let trimmed = guest.trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// Library paths in `ldd` output: `name => /path (0x…)` and the loader's `/path (0x…)`;
/// the vDSO has no file. A `not found` is an error (the guest would fail to run it).
fn parse_ldd(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("=> not found") {
            return Err(format!("missing library: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            out.push(p.to_string());
        }
    }
    Ok(out)
}

struct Cpio<'a, W: Write> {
    w: &'a mut W,
    offset: u64,
    ino: u32,
}

impl<W: Write> Cpio<'_, W> {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        let namesize = name.len() + 1;
        let size = u32::try_from(data.len()).context("file larger than 4 GiB")?;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let ino = if name == "TRAILER!!!" { 0 } else { self.ino };
        self.ino += 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check: all 8 hex digits.
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, 0, 0, 0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = (4 - self.offset % 4) % 4;
        self.write(&[0u8; 3][..usize::try_from(n)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_parsing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibpcap.so.0.8 => /lib/x86_64-linux-gnu/libpcap.so.0.8 (0x00007f36)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3624)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libpcap.so.0.8",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn cpio_is_newc_with_parents_first_and_aligned() {
        let mut t = Tree::default();
        t.data("/usr/bin/x", b"hello".to_vec(), 0o755);
        t.symlink("/bin/sh", "busybox");
        let mut buf = Vec::new();
        let n = t.write_cpio(&mut buf).unwrap();
        assert_eq!(n, buf.len() as u64);
        assert_eq!(buf.len() % 4, 0);
        let text = String::from_utf8_lossy(&buf);
        let names: Vec<&str> = [
            "bin\0",
            "bin/sh\0",
            "usr\0",
            "usr/bin\0",
            "usr/bin/x\0",
            "TRAILER!!!\0",
        ]
        .into_iter()
        .filter(|n| !text.contains(n))
        .collect();
        assert!(names.is_empty(), "missing {names:?}");
        assert!(text.find("usr\0").unwrap() < text.find("usr/bin/x\0").unwrap());
        // First header: magic and a directory mode.
        assert!(buf.starts_with(b"070701"));
        assert_eq!(&buf[14..22], b"000041ed");
        // Every header starts on a 4-byte boundary.
        let mut off = 0;
        while off < buf.len() {
            assert_eq!(&buf[off..off + 6], b"070701", "header at {off}");
            let field = |i: usize| {
                usize::from_str_radix(
                    std::str::from_utf8(&buf[off + 6 + 8 * i..off + 14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (size, namesize) = (field(6), field(11));
            off += (110 + namesize).div_ceil(4) * 4;
            off += size.div_ceil(4) * 4;
        }
        assert_eq!(off, buf.len());
    }
}
