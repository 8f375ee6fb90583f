//! Runs the real `tracer` binary: start a capture, wait for its ready file, let the test make
//! traffic, stop it with SIGINT, and hand back its parsed outputs.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::{TempDir, cmd, progress::{self, Progress}, wait};

/// Bound on the tracer's start-up (BTF parsing and program loading; slow on a busy machine).
pub const READY_TIMEOUT: Duration = Duration::from_mins(5);
/// Bound on the tracer's shutdown after SIGINT (detach, drain, write outputs).
pub const STOP_TIMEOUT: Duration = Duration::from_mins(5);

/// The symbol of a `location` (`symbol+0xoff` → `symbol`).
#[must_use]
pub fn symbol(location: &str) -> &str {
    location.split('+').next().unwrap_or(location)
}

/// The source function of a `location`, without the compiler's clone suffixes
/// (`__netif_receive_skb_core.constprop.0+0x4dc` → `__netif_receive_skb_core`).
#[must_use]
pub fn function(location: &str) -> &str {
    let s = symbol(location);
    s.split('.').next().unwrap_or(s)
}

/// The tracer binary under test.
#[derive(Debug, Clone)]
pub struct Tracer {
    pub bin: PathBuf,
}

impl Tracer {
    /// `$TRACER_BIN`, else `<workspace>/target/release/tracer` when it exists.
    pub fn from_env() -> Result<Self> {
        let bin = match std::env::var_os("TRACER_BIN") {
            Some(p) if !p.is_empty() => {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    bail!("TRACER_BIN={} does not exist: build it with `cargo build --release`", p.display());
                }
                p
            }
            _ => {
                let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer");
                if !p.is_file() {
                    bail!(
                        "TRACER_BIN is not set and {} does not exist: run `cargo build --release` first or set TRACER_BIN to the tracer binary",
                        p.display()
                    );
                }
                p
            }
        };
        Ok(Self { bin: bin.canonicalize()? })
    }

    /// A `tracer capture` with `--json`, `--pcap`, `--summary` and `--ready-file` in a fresh
    /// temporary directory, `--quiet`.
    #[must_use]
    pub fn capture(&self) -> Capture {
        Capture { bin: self.bin.clone(), args: Vec::new(), envs: Vec::new(), expression: None, outputs: true, as_nobody: false }
    }
}

/// A capture being set up.
#[derive(Debug, Clone)]
pub struct Capture {
    bin: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    expression: Option<String>,
    outputs: bool,
    as_nobody: bool,
}

/// Output files of a run, inside its temporary directory.
const JSON: &str = "drops.jsonl";
const PCAP: &str = "drops.pcapng";
const SUMMARY: &str = "summary.json";
const READY: &str = "ready";
const PROGRESS: &str = "progress.json";

impl Capture {
    /// The filter expression (one argument; the tracer joins words anyway).
    #[must_use]
    pub fn expression(mut self, e: impl Into<String>) -> Self {
        self.expression = Some(e.into());
        self
    }

    /// An extra option, e.g. `.arg("--iface").arg("lxc1234")`.
    #[must_use]
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// An environment variable for the tracer (e.g. a test-only `TRACER_TEST_*` override, or a
    /// `PATH` without some tool).
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Leaves out the default `--json/--pcap/--summary/--ready-file` (the test passes its own).
    #[must_use]
    pub fn no_default_outputs(mut self) -> Self {
        self.outputs = false;
        self
    }

    /// Runs the binary as user nobody (uid/gid 65534, no groups) via setpriv.
    #[must_use]
    pub fn as_nobody(mut self) -> Self {
        self.as_nobody = true;
        self
    }

    fn command(&self, dir: &TempDir, progress: Option<&Path>) -> Command {
        let mut c = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        c.arg("capture").arg("--quiet");
        if self.outputs {
            c.arg("--json").arg(dir.join(JSON));
            c.arg("--pcap").arg(dir.join(PCAP));
            c.arg("--summary").arg(dir.join(SUMMARY));
            c.arg("--ready-file").arg(dir.join(READY));
        }
        if let Some(p) = progress {
            c.arg("--progress-file").arg(p);
        }
        c.args(&self.args);
        c.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(e) = &self.expression {
            c.arg(e);
        }
        c.current_dir(dir.path());
        c
    }

    fn dir(&self) -> Result<TempDir> {
        let dir = TempDir::new("tb-tracer")?;
        if self.as_nobody {
            // Let nobody write there, so "no file was created" means the tracer refused.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        Ok(dir)
    }

    /// Starts the capture and waits (bounded) for its ready file.
    pub fn start(self) -> Result<RunningCapture> {
        if !self.outputs {
            bail!("start() needs the default outputs (it waits for the ready file); use run() instead");
        }
        let dir = self.dir()?;
        // Beside the outputs' directory, whose listing tests check.
        let progress_dir = TempDir::new("tb-progress")?;
        let mut command = self.command(&dir, Some(&progress_dir.join(PROGRESS)));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let mut run = RunningCapture { child: Some(child), dir: Some(dir), progress: progress_dir, stdout: Some(stdout), stderr: Some(stderr) };
        let ready = run.dir()?.join(READY);
        let waited = wait::until("the tracer's ready file", READY_TIMEOUT, Duration::from_millis(20), || {
            if ready.exists() {
                return Ok(Some(()));
            }
            match run.child.as_mut().map(Child::try_wait).transpose()? {
                Some(Some(status)) => Err(anyhow!("the tracer exited before it was ready ({status})")),
                _ => Ok(None),
            }
        });
        if let Err(e) = waited {
            let finished = run.finish(None);
            let stderr = finished.map(|f| f.stderr).unwrap_or_default();
            bail!("{e:#}; stderr:\n{stderr}");
        }
        Ok(run)
    }

    /// Runs to the end on its own (bad input, or `--duration`), bounded by `timeout`.
    pub fn run(self, timeout: Duration) -> Result<Finished> {
        let dir = self.dir()?;
        let out = cmd::output(&mut self.command(&dir, None), None, timeout)?;
        Finished::collect(dir, out.status, out.stdout, out.stderr)
    }
}

type Reader = JoinHandle<String>;

fn reader(pipe: Option<impl std::io::Read + Send + 'static>) -> Reader {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// A capture that is running; stop it with [`RunningCapture::stop`]. Dropping it without
/// stopping interrupts the tracer (then kills it if it does not exit).
pub struct RunningCapture {
    child: Option<Child>,
    dir: Option<TempDir>,
    /// Holds the `--progress-file`.
    progress: TempDir,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
}

impl RunningCapture {
    fn dir(&self) -> Result<&TempDir> {
        self.dir.as_ref().context("capture already finished")
    }

    /// The process id (for tests that signal it themselves).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the tracer has counted and read so far (zeros before its first report).
    pub fn progress(&self) -> Result<Progress> {
        Ok(Progress::read(&self.progress.join(PROGRESS))?.unwrap_or_default())
    }

    /// Waits (bounded) until the tracer has counted at least `n` matching drops and read every
    /// drop it counted from the ring (or accounted it as lost): stopping then loses nothing of
    /// what the test sent, however slow the machine.
    pub fn wait_for_drops(&self, n: u64) -> Result<Progress> {
        progress::until(&self.progress.join(PROGRESS), &format!("the tracer to count and read {n} drops"), |p| p.drops >= n && p.caught_up())
    }

    /// Waits (bounded) until at least `n` events are committed to every output file (they are
    /// flushed at least every second): what a kill must leave readable.
    pub fn wait_for_written(&self, n: u64) -> Result<Progress> {
        progress::until(&self.progress.join(PROGRESS), &format!("{n} events in the tracer's outputs"), |p| p.written >= n)
    }

    /// [`RunningCapture::wait_for_drops`], then [`RunningCapture::stop`].
    pub fn stop_after(self, n: u64) -> Result<Finished> {
        self.wait_for_drops(n)?;
        self.stop()
    }

    /// SIGINT, wait (bounded) for the exit, parse the outputs.
    pub fn stop(mut self) -> Result<Finished> {
        self.finish(Some(libc::SIGINT))
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`), then waits (bounded) and parses the outputs.
    pub fn stop_with(mut self, sig: libc::c_int) -> Result<Finished> {
        self.finish(Some(sig))
    }

    /// Waits (bounded) for the tracer to end by itself (`--duration`).
    pub fn wait(mut self) -> Result<Finished> {
        self.finish(None)
    }

    fn finish(&mut self, sig: Option<libc::c_int>) -> Result<Finished> {
        let mut child = self.child.take().context("capture already finished")?;
        if let Some(sig) = sig {
            signal(&child, sig);
        }
        let status = wait_exit(&mut child, STOP_TIMEOUT);
        let stdout = self.stdout.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        let status = status.map_err(|e| anyhow!("{e:#}; stderr:\n{stderr}"))?;
        Finished::collect(self.dir.take().context("no directory")?, status, stdout, stderr)
    }
}

impl Drop for RunningCapture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGINT);
            if wait_exit(&mut child, Duration::from_secs(5)).is_err() {
                eprintln!("testbed: the tracer did not stop on SIGINT; killed it");
            }
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: a pid of a child we have not reaped yet.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Waits up to `timeout`; kills the process after it.
fn wait_exit(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    match wait::until("the tracer to exit", timeout, Duration::from_millis(10), || Ok(child.try_wait()?)) {
        Ok(s) => Ok(s),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// What a finished run left: exit status, stdout/stderr, parsed JSON Lines events and summary,
/// and the pcapng path (in a temporary directory kept as long as this value lives).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// One value per line of `--json`, in order (empty when the file was not written).
    pub events: Vec<Value>,
    /// The `--summary` object, when the file was written.
    pub summary: Option<Value>,
    /// The `--pcap` file, when it was written.
    pub pcap: Option<PathBuf>,
    pub dir: TempDir,
}

impl Finished {
    fn collect(dir: TempDir, status: ExitStatus, stdout: String, stderr: String) -> Result<Self> {
        let json = dir.join(JSON);
        let events = if json.exists() {
            let mut text = std::fs::read_to_string(&json)?;
            // A kill can cut the last record (outputs are written whole lines at a time, but a
            // write in progress may be cut): that partial line is not an event.
            if let Some(end) = text.rfind('\n') {
                text.truncate(end + 1);
            } else {
                text.clear();
            }
            text.lines()
                .enumerate()
                .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{JSON} line {} is not JSON: {l}", i + 1)))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let summary_path = dir.join(SUMMARY);
        let summary = if summary_path.exists() {
            Some(serde_json::from_str(&std::fs::read_to_string(&summary_path)?).context("summary is not JSON")?)
        } else {
            None
        };
        let pcap = Some(dir.join(PCAP)).filter(|p| p.exists());
        Ok(Self { status, stdout, stderr, events, summary, pcap, dir })
    }

    /// Fails (with stderr) unless the tracer exited 0.
    pub fn ok(self) -> Result<Self> {
        if !self.status.success() {
            bail!("tracer exited with {}; stderr:\n{}", self.status, self.stderr);
        }
        Ok(self)
    }

    pub fn summary(&self) -> Result<&Value> {
        self.summary.as_ref().ok_or_else(|| anyhow!("no summary written; stderr:\n{}", self.stderr))
    }

    /// The summary's exact `drops` total.
    pub fn drops(&self) -> Result<u64> {
        self.summary()?["drops"].as_u64().ok_or_else(|| anyhow!("summary has no drops count"))
    }

    /// The pcapng path, or an error when it was not written.
    pub fn pcap(&self) -> Result<&Path> {
        self.pcap.as_deref().ok_or_else(|| anyhow!("no pcapng written; stderr:\n{}", self.stderr))
    }

    /// stderr lines that are not empty.
    #[must_use]
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}
