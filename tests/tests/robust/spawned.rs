//! A tracer process run by hand, for runs with outputs in places of the test's choosing, and a
//! small tmpfs to fill.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use integration_tests::{TempDir, cmd, progress, wait};

use crate::tracer;

const PROGRESS: &str = "progress.json";

pub struct Spawned {
    pub child: Child,
    pub stderr: std::thread::JoinHandle<String>,
    pub peak_kb: Arc<AtomicU64>,
    pub stop_poll: Arc<AtomicBool>,
    pub poller: Option<std::thread::JoinHandle<()>>,
    /// Holds the `--progress-file`, apart from the test's outputs.
    progress: TempDir,
}

impl Spawned {
    /// Starts `tracer capture ARGS…` and waits (bounded) for `ready`; polls its `VmHWM` until it
    /// exits.
    pub fn start(args: &[&str], ready: &Path) -> Self {
        let progress = TempDir::new("rb-progress").unwrap();
        let mut child = Command::new(&tracer().bin)
            .arg("capture")
            .arg("--progress-file")
            .arg(progress.join(PROGRESS))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        });
        let (peak_kb, stop_poll) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (pk, sp, pid) = (peak_kb.clone(), stop_poll.clone(), child.id());
        let poller = std::thread::spawn(move || {
            // VmHWM only grows: the last value read before the process is gone is its peak.
            while !sp.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { break };
                if let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()) {
                    pk.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut s = Self { child, stderr, peak_kb, stop_poll, poller: Some(poller), progress };
        let waited = wait::until("the tracer's ready file", integration_tests::tracer::READY_TIMEOUT, Duration::from_millis(20), || {
            if ready.exists() {
                return Ok(Some(()));
            }
            match s.child.try_wait()? {
                Some(st) => anyhow::bail!("the tracer exited before it was ready ({st})"),
                None => Ok(None),
            }
        });
        if let Err(e) = waited {
            let (_, err, _) = s.finish(libc::SIGKILL);
            panic!("{e:#}; stderr:\n{err}");
        }
        s
    }

    /// Waits (bounded) until the tracer has counted `n` drops and read (or accounted as lost)
    /// every drop it counted.
    pub fn wait_for_drops(&self, n: u64) {
        progress::until(&self.progress.join(PROGRESS), &format!("the tracer to count and read {n} drops"), |p| p.drops >= n && p.caught_up()).unwrap();
    }

    /// Signals, waits (bounded), returns (status, stderr, peak `VmHWM` in KiB).
    pub fn finish(&mut self, sig: libc::c_int) -> (ExitStatus, String, u64) {
        // SAFETY: our child, not reaped yet.
        unsafe { libc::kill(libc::pid_t::try_from(self.child.id()).unwrap(), sig) };
        let status = wait::until("the tracer to exit", integration_tests::tracer::STOP_TIMEOUT, Duration::from_millis(10), || Ok(self.child.try_wait()?)).unwrap_or_else(|e| {
            let _ = self.child.kill();
            panic!("{e:#}");
        });
        self.stop_poll.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new)).join().unwrap_or_default();
        (status, stderr, self.peak_kb.load(Ordering::Relaxed))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stop_poll.store(true, Ordering::Relaxed);
    }
}

/// A small tmpfs mounted for the test, unmounted on drop.
pub struct SmallFs(pub PathBuf);

impl SmallFs {
    pub fn mount(at: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        cmd::run("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "rbfull", &at.display().to_string()]).unwrap();
        Self(at)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = cmd::run("umount", &[&self.0.display().to_string()]);
    }
}
