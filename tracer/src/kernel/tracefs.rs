//! tracefs access. `ip netns exec` remounts /sys, leaving tracefs unmounted inside; then we
//! mount it on a private directory just long enough to read, and unmount it again (no debris).
use std::{ffi::CString, path::Path};

use anyhow::{Result, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// Test-only: read tracepoint formats under this directory only (tests/tests/robust/ gives a
/// kernel without drop reasons this way). Not for production use.
pub const TEST_TRACEFS_ENV: &str = "TRACER_TEST_TRACEFS";

/// The `format` file of a tracepoint, e.g. `("skb", "kfree_skb")`.
pub fn format(category: &str, name: &str) -> Result<String> {
    let rel = format!("events/{category}/{name}/format");
    if let Ok(dir) = std::env::var(TEST_TRACEFS_ENV)
        && !dir.is_empty()
    {
        return std::fs::read_to_string(Path::new(&dir).join(&rel))
            .map_err(|e| anyhow::anyhow!("cannot read the {category}:{name} tracepoint format under {dir}: {e}"));
    }
    for c in CANDIDATES {
        if let Ok(s) = std::fs::read_to_string(Path::new(c).join(&rel)) {
            return Ok(s);
        }
    }
    let dir = std::env::temp_dir().join(format!("tracer-tracefs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let target = CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid NUL-terminated strings; a plain tracefs mount.
    let mounted = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) } == 0;
    let text = if mounted { std::fs::read_to_string(dir.join(&rel)).ok() } else { None };
    if mounted {
        // SAFETY: unmounting what we just mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir(&dir);
    match text {
        Some(t) => Ok(t),
        None => bail!("cannot read the {category}:{name} tracepoint format: tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"),
    }
}
