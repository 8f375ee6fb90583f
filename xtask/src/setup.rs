//! `cargo xtask setup`: installs what building, running and testing tracer need on Debian 12,
//! and only what is missing. Each check runs the tool itself (dpkg, bpf-linker, rustup), so
//! the no-op path is a few fast process runs.
use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, step};

/// Debian packages, in one place so other tasks can add theirs.
/// - llvm-22-dev … libxml2-dev: build bpf-linker against Debian's LLVM 22 (the LLVM of our
///   Rust toolchain); llvm-22 comes from bookworm-security, hence the `apt-get update`.
/// - build-essential, pkg-config, libpcap-dev: link the host binaries (libpcap compiles the
///   tcpdump expressions).
/// - the rest: what the integration tests drive (netns, veths, iptables, tc, traffic, tshark),
///   and what `vm-test` puts in its guests besides those (busybox as init, kmod's modprobe and
///   depmod). QEMU itself comes from bookworm-backports when `vm-test` needs it (vm/qemu.rs).
pub const APT_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zstd",
    "zlib1g-dev",
    "libxml2-dev",
    "libpcap-dev",
    "tshark",
    "iptables",
    "nftables",
    "iproute2",
    "bpftool",
    "socat",
    "ncat",
    "iperf3",
    "util-linux",
    "procps",
    "busybox-static",
    "kmod",
    // `tracer watch` tests parse /metrics with a real exposition parser (Prometheus text and
    // OpenMetrics: prometheus_client.parser / .openmetrics.parser), run by /usr/bin/python3.
    "python3-prometheus-client",
    "curl",
    // `tracer report` tests render the page in a real headless browser.
    "chromium",
    // `cargo xtask image`: the root filesystem (mmdebstrap) and the stripped binary (objcopy);
    // its test runs the image under podman with runc (crun refuses this VM's hybrid cgroups,
    // ../shared/CONTAINERS.md) and reads the archive's Docker and OCI sides with skopeo.
    "mmdebstrap",
    "binutils",
    "podman",
    "runc",
    "skopeo",
    // …and imports it with `ctr` into a containerd of its own, as on a Kubernetes node.
    "containerd",
];

/// bpf-linker must be built against the LLVM major of rustc (22 for Rust 1.95).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_MIN: (u32, u32) = (0, 13);
const BPF_LINKER_FEATURE: &str = "llvm-22";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_MAJOR: u32 = 22;

/// Components of the active toolchain: aya-build compiles `core` for bpfel-unknown-none.
const RUST_COMPONENTS: &[&str] = &["rust-src"];

pub fn run() -> Result<()> {
    let start = Instant::now();
    ensure_apt(APT_PACKAGES)?;
    ensure_bpf_linker()?;
    ensure_components(RUST_COMPONENTS)?;
    check_rustc_llvm();
    step(format!(
        "setup: done in {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Installs the missing ones of `packages` with apt-get (as root).
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        step(format!(
            "setup: Debian packages: all {} present",
            packages.len()
        ));
        return Ok(());
    }
    let list = missing.join(" ");
    if !cmd::is_root() {
        bail!(
            "missing Debian packages: {list}; run `cargo xtask setup` as root or `sudo apt-get install -y {list}`"
        );
    }
    step(format!("setup: Debian packages: installing {list}"));
    let apt = |args: &[&str]| {
        let mut c = cmd::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            // Wait for a boot-time unattended-upgrades instead of failing on the lock.
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args);
        c
    };
    cmd::run(&mut apt(&["update", "-q"]))?;
    cmd::run(apt(&["install", "-y", "-q"]).args(&missing))
        .context("installing Debian packages failed (llvm-22 comes from bookworm-security: check the apt sources)")?;
    let still = missing_packages(&missing)?;
    if !still.is_empty() {
        bail!(
            "apt-get did not install {}; check the apt sources (llvm-22 is in bookworm-security)",
            still.join(" ")
        );
    }
    Ok(())
}

/// Which of `packages` dpkg does not report as installed.
fn missing_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    // Exits 1 when a package is unknown to dpkg; its stdout still lists the known ones.
    let out = cmd::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${db:Status-Status}\n"])
        .args(packages)
        .stderr(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "dpkg-query not found: `cargo xtask setup` installs with apt on Debian 12; elsewhere install: {}",
                packages.join(" ")
            )
        }
        Err(e) => bail!("cannot run dpkg-query: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed = installed_from_dpkg(&stdout);
    Ok(packages
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn installed_from_dpkg(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect()
}

fn ensure_bpf_linker() -> Result<()> {
    let found = cmd::probe(cmd::new("bpf-linker").arg("--version"));
    let version = found.as_deref().and_then(parse_version);
    match (&found, version) {
        (Some(_), Some(v)) if v >= BPF_LINKER_MIN => {
            step(format!("setup: bpf-linker {}.{} present", v.0, v.1));
            return Ok(());
        }
        (Some(out), _) => step(format!(
            "setup: bpf-linker too old or unreadable ({}): reinstalling",
            out.trim()
        )),
        (None, _) => step(format!(
            "setup: bpf-linker missing: cargo install bpf-linker {BPF_LINKER_VERSION} (about 2 min)"
        )),
    }
    if !std::path::Path::new(LLVM_PREFIX)
        .join("bin/llvm-config")
        .exists()
    {
        bail!(
            "{LLVM_PREFIX}/bin/llvm-config not found: install llvm-22-dev first (`cargo xtask setup` as root does)"
        );
    }
    // Pin LLVM 22: without this, llvm-sys finds an older llvm-config and fails to link -lLLVM.
    let mut c = cmd::cargo();
    let mut dirs: Vec<PathBuf> = vec![PathBuf::from(LLVM_PREFIX).join("bin")];
    dirs.extend(cmd::cargo_bin_dir());
    c.env("PATH", cmd::path_with(&dirs))
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            BPF_LINKER_FEATURE,
        ]);
    if found.is_some() {
        c.arg("--force");
    }
    cmd::run(&mut c)?;
    match cmd::probe(cmd::new("bpf-linker").arg("--version")) {
        Some(v) => step(format!("setup: {} installed", v.trim())),
        None => bail!(
            "bpf-linker was installed but does not run from {}; put that directory on PATH",
            cmd::cargo_bin_dir().unwrap_or_default().display()
        ),
    }
    Ok(())
}

/// bpf-linker reads the LLVM bitcode rustc writes: an LLVM older than rustc's cannot.
fn check_rustc_llvm() {
    let Some(out) = cmd::probe(cmd::new("rustc").arg("-vV")) else {
        step("setup: warning: `rustc -vV` failed; cannot check rustc's LLVM version");
        return;
    };
    match rustc_llvm_major(&out) {
        Some(m) if m > LLVM_MAJOR => step(format!(
            "setup: warning: rustc uses LLVM {m}, bpf-linker is built against LLVM {LLVM_MAJOR}; \
             the eBPF build will likely fail: use Rust 1.95 (`rustup default 1.95.0`)"
        )),
        Some(m) => step(format!(
            "setup: rustc uses LLVM {m} (bpf-linker: LLVM {LLVM_MAJOR})"
        )),
        None => step("setup: warning: cannot read rustc's LLVM version from `rustc -vV`"),
    }
}

/// `LLVM version: 22.1.2` in `rustc -vV` → 22.
fn rustc_llvm_major(out: &str) -> Option<u32> {
    let v = out.lines().find_map(|l| l.strip_prefix("LLVM version: "))?;
    v.trim().split('.').next()?.parse().ok()
}

/// `bpf-linker 0.13.0` → (0, 13).
fn parse_version(out: &str) -> Option<(u32, u32)> {
    let v = out.split_whitespace().nth(1)?;
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Adds the missing ones of `components` to the active toolchain (the one running us:
/// rustup's proxy sets `RUSTUP_TOOLCHAIN`, and the children inherit it).
pub fn ensure_components(components: &[&str]) -> Result<()> {
    let Some(list) = cmd::probe(cmd::new("rustup").args(["component", "list", "--installed"]))
    else {
        bail!(
            "`rustup component list` failed: tracer needs a rustup toolchain (https://rustup.rs), not Debian's rustc"
        );
    };
    let toolchain =
        std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "the active toolchain".into());
    for comp in components {
        if has_component(&list, comp) {
            step(format!(
                "setup: rustup component {comp} present ({toolchain})"
            ));
        } else {
            step(format!(
                "setup: rustup component {comp} missing ({toolchain}): adding"
            ));
            cmd::run(cmd::new("rustup").args(["component", "add", comp]))?;
        }
    }
    Ok(())
}

/// rust-src is listed bare, clippy with the host triple (`clippy-x86_64-unknown-linux-gnu`).
fn has_component(list: &str, comp: &str) -> bool {
    list.lines().map(str::trim).any(|l| {
        l == comp
            || l.strip_prefix(comp)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|triple| triple.starts_with(std::env::consts::ARCH))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_parsing() {
        let out = "tshark\tinstalled\nncat\tconfig-files\nlibpcap-dev:amd64\tinstalled\n";
        assert_eq!(installed_from_dpkg(out), vec!["tshark", "libpcap-dev"]);
    }

    #[test]
    fn bpf_linker_version_parsing() {
        assert_eq!(parse_version("bpf-linker 0.13.0\n"), Some((0, 13)));
        assert_eq!(parse_version("bpf-linker 0.9.15"), Some((0, 9)));
        assert!(parse_version("bpf-linker 0.9.15").unwrap() < BPF_LINKER_MIN);
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn rustc_llvm_parsing() {
        let out = "rustc 1.95.0 (abc 2026-04-01)\nbinary: rustc\nLLVM version: 22.1.2\n";
        assert_eq!(rustc_llvm_major(out), Some(22));
        assert_eq!(rustc_llvm_major("rustc 1.95.0\n"), None);
    }

    #[test]
    fn component_matching() {
        let a = std::env::consts::ARCH;
        let list = format!("cargo-{a}-unknown-linux-gnu\nclippy-{a}-unknown-linux-gnu\nrust-src\n");
        assert!(has_component(&list, "rust-src"));
        assert!(has_component(&list, "clippy"));
        assert!(!has_component(&list, "rust"));
        assert!(!has_component(&list, "rustfmt"));
        assert!(!has_component("rust-src-extra\n", "rust-src"));
        assert!(!has_component(
            "rust-std-x86_64-unknown-linux-gnu\n",
            "rust"
        ));
    }
}
