//! Entering named network namespaces from this process: a fresh thread calls
//! `setns(CLONE_NEWNET)` and does its socket work there, so no helper binary (socat, …) stands
//! between a test and its exact packet counts. The thread ends with its work; the rest of the
//! process never changes namespace.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// Where `ip netns` keeps the handle of a named namespace.
#[must_use]
pub fn path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// Inode of the named namespace: the number the tracer reports as `netns`.
pub fn inode(name: &str) -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path(name)).with_context(|| format!("no network namespace {name}"))?.ino())
}

/// Moves the calling thread into the network namespace at `ns` (a file such as
/// /var/run/netns/NAME or /proc/PID/ns/net).
pub fn enter(ns: &Path) -> Result<()> {
    let f = File::open(ns).with_context(|| format!("cannot open network namespace {}", ns.display()))?;
    // SAFETY: a valid fd and a namespace type; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({}) failed: {}", ns.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread inside the named namespace and returns its result.
pub fn run<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = path(name);
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("a thread working in netns {name} panicked"))?
    })
}

/// Spawns a long-lived thread inside the named namespace (listeners).
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let ns = path(name);
    std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || {
            enter(&ns)?;
            f()
        })
        .context("cannot spawn a thread")
}

/// Writes a sysctl of the named namespace (`/proc/sys/net/…` follows the writer's namespace).
pub fn sysctl(name: &str, key: &str, value: &str) -> Result<()> {
    let file = Path::new("/proc/sys").join(key.replace('.', "/"));
    let value = value.to_string();
    run(name, move || std::fs::write(&file, &value).with_context(|| format!("cannot set {key}={value} in netns {name}")))
}

/// Reads a sysctl of the named namespace.
pub fn read_sysctl(name: &str, key: &str) -> Result<String> {
    let file = Path::new("/proc/sys").join(key.replace('.', "/"));
    run(name, move || Ok(std::fs::read_to_string(&file).with_context(|| format!("cannot read {key} in netns {name}"))?.trim().to_string()))
}

/// An SNMP counter (`/proc/net/snmp`, e.g. `Udp`/`NoPorts`) of the named namespace.
pub fn snmp(name: &str, group: &str, field: &str) -> Result<u64> {
    counter(name, "snmp", group, field)?.ok_or_else(|| anyhow!("no {group} {field} in /proc/net/snmp of netns {name}"))
}

/// An IPv6 SNMP counter (`/proc/net/snmp6`, one `Name value` per line, e.g. `Udp6NoPorts`) of
/// the named namespace.
pub fn snmp6(name: &str, field: &str) -> Result<u64> {
    let text = run(name, || Ok(std::fs::read_to_string("/proc/thread-self/net/snmp6")?))?;
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(field)).ok_or_else(|| anyhow!("no {field} in /proc/net/snmp6 of netns {name}"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or_default().parse()?)
}

/// A `/proc/net/netstat` counter (`TcpExt` and the like) in namespace `name`; 0 when this
/// kernel does not have that field.
pub fn netstat(name: &str, group: &str, field: &str) -> Result<u64> {
    Ok(counter(name, "netstat", group, field)?.unwrap_or(0))
}

/// What a slow machine does to clean TCP connections of pods in `netns`, summed: segments
/// retransmitted (`Tcp RetransSegs`), segments rejected by PAWS as reordered (`TcpExt
/// PAWSEstab`, `PAWSOldAck`), and resets sent (`Tcp OutRsts`: a segment that reaches a
/// connection its receiver has already closed, such as an ACK late on an emulated guest, is
/// dropped there and answered with a reset, which the sender, closed too, drops). A copy of a
/// retransmitted segment, a reply to it, a reordered ACK or such a late segment and its reset
/// is a real drop; tests that expect none allow these, bounded by these counts.
pub fn tcp_noise(netns: &[&str]) -> Result<TcpNoise> {
    let mut n = TcpNoise::default();
    for ns in netns {
        n.retrans += snmp(ns, "Tcp", "RetransSegs")?;
        n.paws += netstat(ns, "TcpExt", "PAWSEstab")? + netstat(ns, "TcpExt", "PAWSOldAck")?;
        n.resets += snmp(ns, "Tcp", "OutRsts")?;
    }
    Ok(n)
}

/// `tcp_noise`'s counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpNoise {
    pub retrans: u64,
    pub paws: u64,
    pub resets: u64,
}

impl TcpNoise {
    /// The counts since `before`.
    #[must_use]
    pub fn since(self, before: Self) -> Self {
        Self { retrans: self.retrans - before.retrans, paws: self.paws - before.paws, resets: self.resets - before.resets }
    }

    /// Drops other than PAWS's these counts explain: three per retransmitted segment (the
    /// copy, a reply, a reset), two per reset sent (the late segment and the reset).
    #[must_use]
    pub fn explains(self) -> u64 {
        3 * self.retrans + 2 * self.resets
    }
}

/// `field` of `group` in `/proc/net/FILE` (header line, then values) of namespace `name`.
fn counter(name: &str, file: &str, group: &str, field: &str) -> Result<Option<u64>> {
    let path = format!("/proc/thread-self/net/{file}");
    let text = run(name, || Ok(std::fs::read_to_string(&path)?))?;
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
    let (Some(header), Some(values)) = (lines.next(), lines.next()) else { return Ok(None) };
    let Some(idx) = header.split_whitespace().position(|h| h == field) else { return Ok(None) };
    let v = values.split_whitespace().nth(idx).ok_or_else(|| anyhow!("short {group} line in /proc/net/{file}"))?;
    Ok(Some(v.parse()?))
}
