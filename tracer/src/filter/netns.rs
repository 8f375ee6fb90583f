//! `--netns PATH|INODE` → the namespace inode number the kernel programs compare against.
use std::os::unix::fs::MetadataExt as _;

use anyhow::{Result, bail};

pub fn resolve(spec: &str) -> Result<u32> {
    if let Ok(inode) = spec.parse::<u32>() {
        if inode == 0 {
            bail!("--netns 0 is not a namespace inode");
        }
        return Ok(inode);
    }
    let candidates = [spec.to_string(), format!("/var/run/netns/{spec}")];
    for c in &candidates {
        if let Ok(m) = std::fs::metadata(c) {
            return u32::try_from(m.ino()).map_err(|_| anyhow::anyhow!("{c} is not a network namespace"));
        }
    }
    bail!("unknown network namespace {spec:?}: give a path such as /proc/PID/ns/net or /var/run/netns/NAME, a name under /var/run/netns, or an inode number")
}

/// True when an interface of that name exists in this namespace or in one under
/// /var/run/netns (pods' namespaces are usually there, and their devices are often all `eth0`).
pub fn iface_exists_anywhere(name: &str) -> bool {
    if std::path::Path::new("/sys/class/net").join(name).exists() {
        return true;
    }
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else { return false };
    dir.flatten().any(|e| {
        std::process::Command::new("ip")
            .args(["-n", &e.file_name().to_string_lossy(), "link", "show", "dev", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
