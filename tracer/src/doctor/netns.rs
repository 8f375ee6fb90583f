//! `--netns PATH|NAME`: check another network namespace (a node under test, a pod). The
//! process's thread moves there with setns(2) — the mount namespace stays, so the bpffs and
//! the CNI cache are the host's — and moves back when the guard drops.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

pub struct NetnsGuard {
    original: File,
}

/// The namespace file for `spec`: a path as given, else a name under /var/run/netns.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    let direct = Path::new(spec);
    if direct.exists() {
        return Ok(direct.to_path_buf());
    }
    let named = Path::new("/var/run/netns").join(spec);
    if !spec.contains('/') && named.exists() {
        return Ok(named);
    }
    bail!("--netns {spec:?}: no such network namespace; give a path such as /proc/PID/ns/net or /var/run/netns/NAME, or a name listed by `ip netns list`")
}

pub fn enter(path: &Path) -> Result<NetnsGuard> {
    let original = File::open("/proc/thread-self/ns/net").context("cannot open this thread's network namespace")?;
    let target = File::open(path).with_context(|| format!("cannot open network namespace {}", path.display()))?;
    // SAFETY: setns(2) on an open namespace descriptor; affects only the calling thread.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot enter network namespace {}: {e} (is it a network namespace? are you root?)", path.display());
    }
    Ok(NetnsGuard { original })
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // SAFETY: as above, back to the namespace we came from.
        if unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            log::warn!("cannot return to the original network namespace: {}", std::io::Error::last_os_error());
        }
    }
}
