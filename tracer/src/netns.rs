//! Network namespaces: naming them (`--netns`), listing the ones on this node, and doing work
//! inside one (a thread that `setns`es, or a child process that does before `exec`).
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

/// `--netns PATH|NAME|INODE` → namespace inode number.
pub fn resolve(spec: &str) -> Result<u32> {
    if let Ok(inode) = spec.parse::<u32>() {
        if inode == 0 {
            bail!("--netns 0 is not a namespace inode");
        }
        return Ok(inode);
    }
    for c in [PathBuf::from(spec), Path::new(NAMED).join(spec)] {
        if c.exists() {
            return inode_of(&c);
        }
    }
    bail!("unknown network namespace {spec:?}: give a path such as /proc/PID/ns/net or /var/run/netns/NAME, a name under /var/run/netns, or an inode number")
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
    let file = File::open(path).with_context(|| format!("cannot open network namespace {}", path.display()))?;
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is valid for the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    });
    let r = handle.join().map_err(|_| anyhow!("namespace worker panicked"))?;
    r.with_context(|| format!("cannot enter network namespace {}", path.display()))
}

/// A command that runs inside the namespace at `path` (like `ip netns exec`, without the /sys
/// remount, which the tools we run do not need).
pub fn command_in(path: &Path, program: &str) -> Result<Command> {
    let file = File::open(path).with_context(|| format!("cannot open network namespace {}", path.display()))?;
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
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
