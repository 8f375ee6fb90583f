//! Network namespaces: naming them (`--netns`), listing the ones on this node, and doing work
//! inside one (a thread that `setns`es, the calling thread until a guard drops, or a child
//! process that does before `exec`).
use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

const NAMED: &str = "/var/run/netns";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    pub inode: u32,
    /// A path that opens it (`/proc/self/ns/net`, `/var/run/netns/NAME`).
    pub path: PathBuf,
    /// `host` for ours, the file name for named ones.
    pub name: String,
}

fn inode_of(path: &Path) -> Result<u32> {
    let m = std::fs::metadata(path).with_context(|| format!("cannot open network namespace {}", path.display()))?;
    u32::try_from(m.ino()).map_err(|_| anyhow!("{} is not a network namespace", path.display()))
}

/// The namespace file `spec` names: a path as given, else a name under /var/run/netns.
fn find(spec: &str) -> Option<PathBuf> {
    let direct = Path::new(spec);
    if direct.exists() {
        return Some(direct.to_path_buf());
    }
    let named = Path::new(NAMED).join(spec);
    (!spec.contains('/') && named.exists()).then_some(named)
}

/// `--netns PATH|NAME` → the namespace file.
pub fn path_of(spec: &str) -> Result<PathBuf> {
    find(spec).ok_or_else(|| {
        anyhow!("--netns {spec:?}: no such network namespace; give a path such as /proc/PID/ns/net or /var/run/netns/NAME, or a name listed by `ip netns list`")
    })
}

/// `--netns PATH|NAME|INODE` → namespace inode number.
pub fn resolve(spec: &str) -> Result<u32> {
    if let Ok(inode) = spec.parse::<u32>() {
        if inode == 0 {
            bail!("--netns 0 is not a namespace inode");
        }
        return Ok(inode);
    }
    match find(spec) {
        Some(path) => inode_of(&path),
        None => bail!("unknown network namespace {spec:?}: give a path such as /proc/PID/ns/net or /var/run/netns/NAME, a name under /var/run/netns, or an inode number"),
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("cannot open network namespace {}", path.display()))
}

/// Moves the calling thread into the namespace open at `ns`. Async-signal-safe (`pre_exec`).
fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns(2) on an open descriptor; it affects only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Ours plus every named namespace (where CNI plugins put pods' namespaces), by inode.
pub fn known() -> Vec<Netns> {
    let mut out = Vec::new();
    if let Ok(inode) = inode_of(Path::new("/proc/self/ns/net")) {
        out.push(Netns { inode, path: "/proc/self/ns/net".into(), name: "host".into() });
    }
    if let Ok(dir) = std::fs::read_dir(NAMED) {
        let mut named: Vec<_> = dir.flatten().collect();
        named.sort_by_key(std::fs::DirEntry::file_name);
        for e in named {
            let path = e.path();
            if let Ok(inode) = inode_of(&path)
                && !out.iter().any(|n: &Netns| n.inode == inode)
            {
                out.push(Netns { inode, path, name: e.file_name().to_string_lossy().into_owned() });
            }
        }
    }
    out
}

/// Runs `f` on a thread that has entered the namespace at `path`.
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = open(path)?;
    let handle = std::thread::spawn(move || setns(&file).map(|()| f()));
    let r = handle.join().map_err(|_| anyhow!("namespace worker panicked"))?;
    r.with_context(|| format!("cannot enter network namespace {}", path.display()))
}

/// A command that runs inside the namespace at `path` (like `ip netns exec`, without the /sys
/// remount, which the tools we run do not need).
pub fn command_in(path: &Path, program: &str) -> Result<Command> {
    let file = open(path)?;
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || setns(&file));
    }
    Ok(cmd)
}

/// The calling thread is in another namespace until this drops (`enter`).
pub struct Entered {
    original: File,
}

/// Moves the calling thread into the namespace at `path` until the guard drops. The mount
/// namespace stays, so the bpffs and files such as the CNI cache are still the host's.
pub fn enter(path: &Path) -> Result<Entered> {
    let original = File::open("/proc/thread-self/ns/net").context("cannot open this thread's network namespace")?;
    setns(&open(path)?).map_err(|e| anyhow!("cannot enter network namespace {}: {e} (is it a network namespace? are you root?)", path.display()))?;
    Ok(Entered { original })
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original) {
            log::warn!("cannot return to the original network namespace: {e}");
        }
    }
}

/// True when an interface of that name exists in this namespace or in a named one (pods'
/// devices are often all `eth0`).
pub fn iface_exists_anywhere(name: &str) -> bool {
    if Path::new("/sys/class/net").join(name).exists() {
        return true;
    }
    known().iter().skip(1).any(|ns| {
        let name = name.to_string();
        run_in(&ns.path, move || {
            // SAFETY: a NUL-terminated name; if_nametoindex reads it only.
            let c = std::ffi::CString::new(name).unwrap_or_default();
            unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
        })
        .unwrap_or(false)
    })
}
