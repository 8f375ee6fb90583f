//! QEMU for the guests. Bookworm's own QEMU (7.2) crashes Debian's 6.12 kernel under TCG
//! (double faults and oopses in the slab allocator within seconds, with any `-cpu` model), so
//! vm-test wants QEMU ≥ 10 and installs bookworm-backports' build when the machine has less.
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use crate::cmd::{self, step};

const MIN_MAJOR: u32 = 10;

pub fn ensure(work: &Path) -> Result<()> {
    if let Some(v) = version()
        && v >= MIN_MAJOR
    {
        step(format!("vm: qemu-system-x86_64 {v}.x present"));
        return Ok(());
    }
    let codename = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VERSION_CODENAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    if codename != "bookworm" {
        bail!(
            "vm-test needs qemu-system-x86_64 >= {MIN_MAJOR} (found: {}); install it (Debian: apt-get install qemu-system-x86)",
            found()
        );
    }
    if !cmd::is_root() {
        bail!(
            "vm-test needs qemu-system-x86_64 >= {MIN_MAJOR} from bookworm-backports (found: {}); run as root to install it",
            found()
        );
    }
    step(
        "vm: installing qemu-system-x86 from bookworm-backports (bookworm's 7.2 crashes 6.12 guests under TCG)",
    );
    // The machine's dpkg status, a private sources list: backports is not added to the
    // machine's own apt sources.
    let apt = Apt::new(
        &work.join("apt-backports"),
        &["bookworm", "bookworm-updates", "bookworm-backports"],
        true,
    )?;
    apt.update(std::time::Duration::ZERO)?;
    cmd::run(apt.command("apt-get").args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-t",
        "bookworm-backports",
        "qemu-system-x86",
        "qemu-utils",
    ]))
    .context("installing QEMU from bookworm-backports failed")?;
    match version() {
        Some(v) if v >= MIN_MAJOR => Ok(()),
        _ => bail!(
            "qemu-system-x86_64 is still {} after installing from bookworm-backports",
            found()
        ),
    }
}

fn found() -> String {
    version().map_or("none".into(), |v| format!("{v}.x"))
}

/// Major version of `qemu-system-x86_64 --version` ("QEMU emulator version 10.0.2 (…)").
fn version() -> Option<u32> {
    let out = cmd::probe(cmd::new("qemu-system-x86_64").arg("--version"))?;
    parse_major(&out)
}

fn parse_major(out: &str) -> Option<u32> {
    let v = out.lines().next()?.split("version ").nth(1)?;
    v.split('.').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_version() {
        assert_eq!(
            parse_major(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some(10)
        );
        assert_eq!(
            parse_major("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            Some(7)
        );
        assert_eq!(parse_major("garbage"), None);
    }
}
