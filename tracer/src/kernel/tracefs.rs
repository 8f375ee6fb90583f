//! tracefs access. `ip netns exec` remounts /sys, leaving tracefs unmounted inside; mount it
//! (once, at a private path) when the usual places are empty.
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const PRIVATE: &str = "/run/tracer/tracefs";

pub fn root() -> Result<PathBuf> {
    for c in CANDIDATES {
        if Path::new(c).join("events").is_dir() {
            return Ok(PathBuf::from(c));
        }
    }
    let private = Path::new(PRIVATE);
    if private.join("events").is_dir() {
        return Ok(private.to_path_buf());
    }
    std::fs::create_dir_all(private)?;
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", PRIVATE])
        .status();
    match status {
        Ok(s) if s.success() && private.join("events").is_dir() => Ok(private.to_path_buf()),
        _ => bail!("tracefs is not mounted and could not be mounted at {PRIVATE}: mount it with `mount -t tracefs nodev /sys/kernel/tracing`"),
    }
}

/// The `format` file of a tracepoint, e.g. `("skb", "kfree_skb")`.
pub fn format(category: &str, name: &str) -> Result<String> {
    let p = root()?.join("events").join(category).join(name).join("format");
    Ok(std::fs::read_to_string(p)?)
}
