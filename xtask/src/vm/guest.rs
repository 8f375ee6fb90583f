//! The guest's root filesystem: busybox as init and shell, the host's own networking tools
//! (iproute2, iptables nft and legacy with their plugins, nftables, tshark, setpriv, kmod) with
//! their libraries, the kernel's modules, the payload, and `/init`.
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use super::{initramfs::Tree, kernel::Kernel, modules, payload::Payload};

const INIT: &str = include_str!("init.sh");

/// Where the guest has the tc fixture (exported as `TC_FIXTURE_BIN` to the tests).
const GUEST_FIXTURE: &str = "/usr/bin/tc-fixture";
/// Where the guest has the Cilium-like datapath (`CILIUM_FIXTURE_BIN`).
const GUEST_CILIUM_FIXTURE: &str = "/usr/bin/cilium-fixture";

/// Host programs and where the guest has them (found on the host's PATH, symlinks followed).
const TOOLS: &[(&str, &str)] = &[
    ("ip", "/usr/sbin/ip"),
    ("tc", "/usr/sbin/tc"),
    ("nft", "/usr/sbin/nft"),
    ("xtables-nft-multi", "/usr/sbin/xtables-nft-multi"),
    ("xtables-legacy-multi", "/usr/sbin/xtables-legacy-multi"),
    ("setpriv", "/usr/bin/setpriv"),
    ("tshark", "/usr/bin/tshark"),
    ("kmod", "/usr/bin/kmod"),
    // The doctor tests: Cilium-like pinned maps, a bash /dev/udp sender, the bundle's
    // tar.zst, bind mounts of pod namespaces (util-linux mount, not busybox's).
    ("bpftool", "/usr/sbin/bpftool"),
    ("bash", "/usr/bin/bash"),
    ("tar", "/usr/bin/tar"),
    ("zstd", "/usr/bin/zstd"),
    ("mount", "/usr/bin/mount"),
    ("umount", "/usr/bin/umount"),
];

/// The names iptables answers to (Debian's alternatives, fixed to one backend each).
const IPTABLES_NFT: &[&str] = &[
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "iptables-nft",
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables-nft",
    "ip6tables-nft-save",
    "ip6tables-nft-restore",
];
const IPTABLES_LEGACY: &[&str] = &[
    "iptables-legacy",
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "ip6tables-legacy",
    "ip6tables-legacy-save",
    "ip6tables-legacy-restore",
];
const KMOD_NAMES: &[&str] = &["modprobe", "depmod", "insmod", "rmmod", "lsmod", "modinfo"];

/// Plugin directories (loaded with dlopen, so ldd of the programs does not list them).
const PLUGIN_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/xtables",
    "/usr/lib/x86_64-linux-gnu/wireshark",
];
/// Data the tools read: protocol and service names (iptables `-p udp`), users (setpriv),
/// iproute2's tables, Wireshark's dissector data.
const DATA: &[&str] = &[
    "/etc/protocols",
    "/etc/services",
    "/etc/ethertypes",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/iproute2",
    "/usr/share/iproute2",
    "/usr/share/wireshark",
];

pub struct Options<'a> {
    pub kernel: &'a Kernel,
    pub payload: &'a Payload,
    pub filter: Option<&'a str>,
    /// Runs of every test binary in one boot (flaky tests show up).
    pub repeat: u32,
    /// How many times failed tests run again (alone) before they count as failed.
    pub retries: u32,
    /// Scratch directory for this kernel (staged modules).
    pub dir: &'a Path,
}

/// The whole tree, and how many modules it holds.
pub fn tree(o: &Options<'_>) -> Result<(Tree, usize)> {
    let mut t = Tree::default();
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/tmp",
        "/root",
        "/var",
        "/etc/vmtest",
        "/etc/vmtest/skip",
        "/vmtest",
    ] {
        t.dir(d);
    }
    t.symlink("/var/run", "/run");
    t.data("/init", INIT, 0o755);
    t.elf("/bin/busybox", Path::new("/bin/busybox"))?;
    // sh for the tests is Debian's dash: busybox's sh runs its own applets (ip, mount, tar…)
    // in place of the real tools. (busybox --install leaves an existing /bin/sh alone.)
    t.elf("/usr/bin/dash", &find("dash")?)?;
    t.symlink("/bin/sh", "/usr/bin/dash");
    for (name, guest) in TOOLS {
        t.elf(guest, &find(name)?)?;
    }
    for n in IPTABLES_NFT {
        t.symlink(&format!("/usr/sbin/{n}"), "xtables-nft-multi");
    }
    for n in IPTABLES_LEGACY {
        t.symlink(&format!("/usr/sbin/{n}"), "xtables-legacy-multi");
    }
    for n in KMOD_NAMES {
        t.symlink(&format!("/sbin/{n}"), "/usr/bin/kmod");
    }
    for dir in PLUGIN_DIRS {
        add_with_libs(&mut t, Path::new(dir))?;
    }
    for p in DATA {
        let p = Path::new(p);
        if p.is_dir() {
            t.tree(&p.to_string_lossy(), p)?;
        } else if p.exists() {
            t.file(&p.to_string_lossy(), p)?;
        }
    }

    let pl = o.payload;
    t.elf("/usr/bin/tracer", &pl.tracer)?;
    t.elf("/usr/bin/kernel-probe", &pl.probe)?;
    // At a fixed path named by TC_FIXTURE_BIN: the build's path (compiled into the tests) may
    // lie under /tmp, which the guest mounts a tmpfs over.
    t.elf(GUEST_FIXTURE, &pl.fixture)?;
    t.elf(GUEST_CILIUM_FIXTURE, &pl.cilium_fixture)?;
    for b in &pl.tests {
        t.elf(&format!("/vmtest/{}", b.name), &b.stripped)?;
        // One libtest argument a line; test names have no spaces.
        t.data(&format!("/etc/vmtest/skip/{}", b.name), b.skip.join("\n"), 0o644);
    }

    let stage = o.dir.join("modules");
    let count = modules::stage(o.kernel, &stage)?;
    t.tree("/lib/modules", &stage.join("lib/modules"))?;

    let names: Vec<&str> = pl.tests.iter().map(|b| b.name.as_str()).collect();
    let env = format!(
        "VMTEST_MODULES={}\nVMTEST_BINARIES={}\nVMTEST_FILTER={}\nVMTEST_REPEAT={}\nVMTEST_RETRIES={}\nexport TC_FIXTURE_BIN={}\nexport CILIUM_FIXTURE_BIN={}\nexport TRACER_TEST_STORM_SECONDS={}\n",
        quote(&modules::BOOT.join(" ")),
        quote(&names.join(" ")),
        quote(o.filter.unwrap_or_default()),
        o.repeat,
        o.retries,
        quote(GUEST_FIXTURE),
        quote(GUEST_CILIUM_FIXTURE),
        // The drop storm sends for at most this long: an emulated guest sends a few thousand
        // datagrams a second, enough to overflow the ring, and a minute of it under a slow host
        // made the storm test alone take four.
        GUEST_STORM_SECONDS,
    );
    t.data("/etc/vmtest/env", env, 0o644);
    Ok((t, count))
}

/// See `TRACER_TEST_STORM_SECONDS` in the robust suite.
const GUEST_STORM_SECONDS: u32 = 5;

/// Every shared object under `dir`, with its own libraries.
fn add_with_libs(t: &mut Tree, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    t.tree(&dir.to_string_lossy(), dir)?;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            if e.file_type()?.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "so") {
                t.libs_of(&p)?;
            }
        }
    }
    Ok(())
}

/// A program on the host's usual PATH directories, symlinks resolved.
fn find(name: &str) -> Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(|| {
            anyhow!("{name} is not installed on this machine; `cargo xtask setup` installs it")
        })
}

/// Single-quoted for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
