//! Starts and stops `cilium-fixture` (src/bin/cilium-fixture.rs): a Cilium-like datapath on one
//! pod's lxc with Cilium's maps pinned in a private bpffs mounted on a temporary directory.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{TempDir, tc_fixture::Attach, wait};

/// The "source lines" the fixture's program counts its drops at (file `bpf_lxc.c`, id 2).
pub const LINE_POLICY: u16 = 1412;
pub const LINE_POLICY_DENY: u16 = 1421;
pub const LINE_UNROUTABLE: u16 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiliumLayout {
    /// Cilium 1.14–1.15 (`cilium_policy_*` LPM trie 12 B/24 B; metrics keys without line/file).
    V1_14,
    /// Cilium 1.16 (the same maps; metrics keys with line and file).
    V1_16,
    /// Cilium 1.17 (`cilium_policy_v2_*`, 12 B/24 B).
    V1_17,
    /// Cilium 1.18 (`cilium_policy_v2_*` 12 B/8 B, `cilium_ipcache_v2`).
    V1_18,
    /// The v1.19 development tree (`cilium_policy_v2_*` 12 B/12 B): no release checked, refused.
    V1_19Dev,
    /// A metrics map of no Cilium release (the tracer must refuse it).
    BadMetrics,
}

#[derive(Debug, Clone)]
pub struct CiliumOptions {
    pub bin: PathBuf,
    pub netns: Option<PathBuf>,
    pub iface: String,
    pub attach: Attach,
    pub layout: CiliumLayout,
    /// Cilium's endpoint id, the pod's address and its identity.
    pub endpoint: (u16, Ipv4Addr, u32),
    /// (address, identity) host entries of the ipcache.
    pub ipcache: Vec<(Ipv4Addr, u32)>,
    /// Egress policy entries: (deny, identity, protocol, port), 0 = any.
    pub policy: Vec<(bool, u32, u8, u16)>,
    /// Drops to this port are also counted as "Stale or unroutable IP" (two reasons at once).
    pub also_unroutable_port: u16,
}

/// A running `cilium-fixture`. Dropping it closes its stdin: it detaches, unmounts, exits.
pub struct CiliumFixture {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    bpffs: TempDir,
    _state: TempDir,
}

const TIMEOUT: Duration = Duration::from_mins(2);

impl CiliumFixture {
    pub fn start(o: &CiliumOptions) -> Result<Self> {
        let bpffs = TempDir::new("tb-cilium-bpffs")?;
        let state = TempDir::new("tb-cilium")?;
        let ready = state.join("ready");
        let mut c = Command::new(&o.bin);
        c.arg("--bpffs").arg(bpffs.path()).arg("--iface").arg(&o.iface);
        if let Some(ns) = &o.netns {
            c.arg("--netns").arg(ns);
        }
        c.arg("--attach").arg(if o.attach == Attach::Tcx { "tcx" } else { "cls_bpf" });
        c.arg("--layout").arg(match o.layout {
            CiliumLayout::V1_14 => "1.14",
            CiliumLayout::V1_16 => "1.16",
            CiliumLayout::V1_17 => "1.17",
            CiliumLayout::V1_18 => "1.18",
            CiliumLayout::V1_19Dev => "1.19-dev",
            CiliumLayout::BadMetrics => "bad-metrics",
        });
        let (id, ip, identity) = o.endpoint;
        c.arg("--endpoint").arg(format!("{id},{ip},{identity}"));
        for (ip, id) in &o.ipcache {
            c.arg("--ipcache").arg(format!("{ip}/32={id}"));
        }
        for (deny, id, proto, port) in &o.policy {
            c.arg("--policy").arg(format!("{}:{id}:{proto}:{port}", if *deny { "deny" } else { "allow" }));
        }
        c.arg("--also-unroutable-port").arg(o.also_unroutable_port.to_string());
        c.arg("--ready-file").arg(&ready);
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().with_context(|| format!("cannot run {}", o.bin.display()))?;
        let stdin = child.stdin.take();
        let mut f = Self { child: Some(child), stdin, bpffs, _state: state };
        let waited = wait::until("cilium-fixture's ready file", TIMEOUT, Duration::from_millis(20), || {
            if ready.exists() {
                return Ok(Some(()));
            }
            match f.child.as_mut().map(Child::try_wait).transpose()? {
                Some(Some(status)) => Err(anyhow!("cilium-fixture exited ({status})")),
                _ => Ok(None),
            }
        });
        if let Err(e) = waited {
            let stderr = f.finish().err().map(|e| format!("{e:#}")).unwrap_or_default();
            bail!("{e:#}: {stderr}");
        }
        Ok(f)
    }

    /// The private bpffs (`--cilium-bpffs` for the tracer).
    #[must_use]
    pub fn bpffs(&self) -> &Path {
        self.bpffs.path()
    }

    /// Detaches, unmounts and waits for the process; fails if it reported an error.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        drop(self.stdin.take());
        let Some(child) = self.child.take() else { return Ok(()) };
        crate::cmd::finish_helper(child, "cilium-fixture", TIMEOUT)
    }
}

impl Drop for CiliumFixture {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("testbed: {e:#}");
        }
    }
}
