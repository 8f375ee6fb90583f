//! Starts and stops the `tc-fixture` binary: test tc programs named like Cilium's on one hook
//! of one interface, with a policy map the test edits while it runs (see src/bin/tc-fixture.rs).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::{TempDir, wait};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// tcx links (≥ 6.6); they go away with the fixture process.
    Tcx,
    /// A `cls_bpf` filter on a clsact qdisc (netlink); the fixture removes both when it ends.
    ClsBpf,
}

impl Attach {
    /// For tests whose subject is not tcx itself: tcx where the kernel has it, else `cls_bpf`
    /// (the test then runs with what the kernel offers).
    #[must_use]
    pub fn tcx_or_cls_bpf() -> Self {
        if crate::Feature::Tcx.probe().is_ok() { Self::Tcx } else { Self::ClsBpf }
    }
}

#[derive(Debug, Clone)]
pub struct TcFixtureOptions {
    /// The `tc-fixture` binary; default: [`TcFixture::default_bin`].
    pub bin: Option<PathBuf>,
    /// Namespace of the interface (e.g. `node.netns_path()`); default: the root namespace.
    pub netns: Option<PathBuf>,
    pub iface: String,
    pub direction: Direction,
    pub attach: Attach,
    /// Programs in the order they run: `cil_from_container` (drops destinations in
    /// `POLICY_DENY`), `cil_to_container` (passes).
    pub programs: Vec<String>,
    /// `cls_bpf` priority of the first program (lower runs first).
    pub priority: u16,
    /// Destinations `cil_from_container` drops (IPv4 or IPv6).
    pub deny: Vec<IpAddr>,
}

impl TcFixtureOptions {
    /// `cil_from_container` on the ingress of `iface`, denying `deny`.
    #[must_use]
    pub fn from_container(netns: Option<PathBuf>, iface: &str, attach: Attach, deny: &[Ipv4Addr]) -> Self {
        Self {
            bin: None,
            netns,
            iface: iface.into(),
            direction: Direction::Ingress,
            attach,
            programs: vec!["cil_from_container".into()],
            priority: 1,
            deny: deny.iter().map(|&d| d.into()).collect(),
        }
    }
}

/// Verdict counters of the fixture programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FixtureStats {
    pub from_shot: u64,
    pub from_passed: u64,
    pub to_passed: u64,
}

/// A loaded program as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    pub name: String,
    pub id: u32,
    /// 16 hex digits, as bpftool prints it.
    pub tag: String,
}

/// A running `tc-fixture`. Dropping it closes its stdin: it detaches and exits.
pub struct TcFixture {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    programs: Vec<ProgInfo>,
    _dir: TempDir,
}

/// Bound on load + attach, and on each command reply.
const TIMEOUT: Duration = Duration::from_mins(2);

/// The fixture binary: `$TC_FIXTURE_BIN` when set (the kernel guests of `cargo xtask vm-test`
/// put it elsewhere than the build's path), else `compiled`, the path cargo compiled into the
/// test (`env!("CARGO_BIN_EXE_tc-fixture")`).
#[must_use]
pub fn fixture_bin(compiled: &str) -> PathBuf {
    std::env::var_os("TC_FIXTURE_BIN").map_or_else(|| PathBuf::from(compiled), PathBuf::from)
}

impl TcFixture {
    /// `$TC_FIXTURE_BIN`, else `tc-fixture` in the target directory of the running test
    /// binary (integration tests of this crate may pass `env!("CARGO_BIN_EXE_tc-fixture")`).
    pub fn default_bin() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("TC_FIXTURE_BIN") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe()?;
        let mut dir = exe.parent().context("no parent of the test binary")?;
        if dir.ends_with("deps") {
            dir = dir.parent().context("no target directory")?;
        }
        let p = dir.join("tc-fixture");
        if !p.is_file() {
            bail!("{} not found: build it with `cargo build -p integration-tests --release` or set TC_FIXTURE_BIN", p.display());
        }
        Ok(p)
    }

    pub fn start(opts: &TcFixtureOptions) -> Result<Self> {
        let bin = match &opts.bin {
            Some(b) => b.clone(),
            None => Self::default_bin()?,
        };
        let dir = TempDir::new("tb-tcfix")?;
        let ready = dir.join("ready.json");
        let mut c = Command::new(&bin);
        c.arg("--iface").arg(&opts.iface);
        if let Some(ns) = &opts.netns {
            c.arg("--netns").arg(ns);
        }
        c.arg("--direction").arg(match opts.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        });
        c.arg("--attach").arg(match opts.attach {
            Attach::Tcx => "tcx",
            Attach::ClsBpf => "cls_bpf",
        });
        c.arg("--priority").arg(opts.priority.to_string());
        for p in &opts.programs {
            c.arg("--prog").arg(p);
        }
        for d in &opts.deny {
            c.arg("--deny").arg(d.to_string());
        }
        c.arg("--ready-file").arg(&ready);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut f = Self { child: Some(child), stdin, lines, programs: Vec::new(), _dir: dir };
        let waited = wait::until("tc-fixture's ready file", TIMEOUT, Duration::from_millis(20), || {
            if ready.exists() {
                return Ok(Some(()));
            }
            match f.child.as_mut().map(Child::try_wait).transpose()? {
                Some(Some(status)) => Err(anyhow!("tc-fixture exited ({status})")),
                _ => Ok(None),
            }
        });
        if let Err(e) = waited {
            let stderr = f.finish().err().map(|e| format!("{e:#}")).unwrap_or_default();
            bail!("{e:#}: {stderr}");
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&ready)?)?;
        f.programs = v["programs"]
            .as_array()
            .context("ready file without programs")?
            .iter()
            .map(|p| {
                Ok(ProgInfo {
                    name: p["name"].as_str().context("name")?.into(),
                    id: u32::try_from(p["id"].as_u64().context("id")?)?,
                    tag: p["tag"].as_str().context("tag")?.into(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(f)
    }

    /// The fixture's process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The attached programs, in order.
    #[must_use]
    pub fn programs(&self) -> &[ProgInfo] {
        &self.programs
    }

    fn request(&mut self, line: &str) -> Result<String> {
        let stdin = self.stdin.as_mut().context("tc-fixture stopped")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        let reply = self.lines.recv_timeout(TIMEOUT).map_err(|_| anyhow!("tc-fixture did not answer {line:?}"))?;
        if let Some(e) = reply.strip_prefix("error ") {
            bail!("tc-fixture: {e}");
        }
        Ok(reply)
    }

    /// Adds `ip` to `POLICY_DENY`: `cil_from_container` drops packets to it from now on.
    pub fn deny(&mut self, ip: impl Into<IpAddr>) -> Result<()> {
        let ip = ip.into();
        self.request(&format!("deny {ip}")).map(drop)
    }

    pub fn allow(&mut self, ip: impl Into<IpAddr>) -> Result<()> {
        let ip = ip.into();
        self.request(&format!("allow {ip}")).map(drop)
    }

    pub fn stats(&mut self) -> Result<FixtureStats> {
        let reply = self.request("stats")?;
        let mut s = FixtureStats::default();
        for kv in reply.split_whitespace().skip(1) {
            let (k, v) = kv.split_once('=').with_context(|| format!("bad stats reply {reply:?}"))?;
            let v: u64 = v.parse()?;
            match k {
                "from_shot" => s.from_shot = v,
                "from_passed" => s.from_passed = v,
                "to_passed" => s.to_passed = v,
                _ => {}
            }
        }
        Ok(s)
    }

    /// Detaches and waits for the process to exit; fails if it reported an error.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        drop(self.stdin.take());
        let Some(child) = self.child.take() else { return Ok(()) };
        crate::cmd::finish_helper(child, "tc-fixture", TIMEOUT)
    }
}

impl Drop for TcFixture {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("testbed: {e:#}");
        }
    }
}
