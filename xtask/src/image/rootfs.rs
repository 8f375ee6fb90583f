//! The image's root filesystem: Debian packages unpacked by mmdebstrap into a tarball (no
//! container registry, no base image). The `essential` variant (Essential: yes packages, no
//! apt) plus what the tracer links against and shells out to.
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::cmd;

/// The Debian release the host builds the tracer on (its glibc and libpcap ABI).
pub const SUITE: &str = "bookworm";

/// What the tracer needs at run time besides the essential set:
/// - libpcap0.8: linked (tcpdump expressions are compiled by libpcap);
/// - iptables: `iptables-nft-save`, `ip6tables-nft-save`, `iptables-legacy-save`,
///   `ip6tables-legacy-save` (netfilter attribution, `doctor`, dumps), tracer/src/netfilter;
/// - nftables: `nft -j list ruleset` (native nft rules);
/// - iproute2: `ip` (node state in `doctor`, bundles and dumps), tracer/src/doctor/node.rs.
pub const PACKAGES: &[&str] = &["libpcap0.8", "iptables", "nftables", "iproute2"];

/// Paths dpkg leaves out of the tree: documentation, manual pages and translations are not
/// read in a container (the copyright files stay: the licences travel with the binaries).
const EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/bash-completion/*",
    "path-exclude=/usr/share/zsh/*",
];

/// Writes the root filesystem as an uncompressed tarball at `out` (as root: mmdebstrap's
/// `root` mode keeps ownership exact). `epoch` is `SOURCE_DATE_EPOCH` (the commit's time).
pub fn build(out: &Path, epoch: i64) -> Result<()> {
    let mut c = cmd::new("mmdebstrap");
    c.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["--quiet", "--mode=root", "--format=tar", "--variant=essential"])
        .arg(format!("--include={}", PACKAGES.join(",")));
    for e in EXCLUDES {
        c.arg(format!("--dpkgopt={e}"));
    }
    c.arg(SUITE).arg(out);
    cmd::run(&mut c).context("mmdebstrap failed (it needs root and Debian's archive, deb.debian.org, reachable)")
}
