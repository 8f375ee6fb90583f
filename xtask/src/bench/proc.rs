//! Child processes of the bench: stdout read line by line on a thread (so a readiness line can
//! be awaited with a bound), reaped with `wait4` for the peak RSS the kernel measured, and
//! never left running (interrupted, then killed, on drop).
use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// How a child ended, with what `wait4` reported.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Exit code, or `128 + signal` when a signal ended it.
    pub code: i32,
    /// `ru_maxrss`: the peak resident set, KiB.
    pub maxrss_kib: u64,
    pub cpu_s: f64,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

pub struct Proc {
    what: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
    exit: Option<Exit>,
}

impl Proc {
    /// Starts `c` with stdout and stderr piped (stdin closed).
    pub fn spawn(c: &mut Command) -> Result<Self> {
        let what = crate::cmd::display(c);
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{what}`"))?;
        let out = child.stdout.take().context("stdout")?;
        let mut err = child.stderr.take().context("stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok(Self { what, child, lines, seen: Vec::new(), stderr: Some(stderr), exit: None })
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Waits (bounded) for a stdout line satisfying `pred`; fails if the process exits first.
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return Ok(l);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let exit = self.wait(Duration::from_secs(5))?;
                    let err = self.stderr_text();
                    bail!("`{}` exited ({}) before it was ready: {}", self.what, exit.code, err.trim());
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if start.elapsed() > timeout {
                bail!("`{}` was not ready within {timeout:?}", self.what);
            }
        }
    }

    /// True once the process has exited (reaps it).
    pub fn poll_exit(&mut self) -> Result<Option<Exit>> {
        if self.exit.is_none() {
            self.exit = reap(self.pid(), false)?;
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` for the exit; kills the process after that and fails.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.poll_exit()? {
                return Ok(e);
            }
            if start.elapsed() > timeout {
                self.signal(libc::SIGKILL);
                self.exit = reap(self.pid(), true)?;
                bail!("`{}` did not exit within {timeout:?}; killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: the pid of a child not reaped yet (so not reused).
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// SIGINT, then a bounded wait.
    pub fn interrupt(&mut self, timeout: Duration) -> Result<Exit> {
        self.signal(libc::SIGINT);
        self.wait(timeout)
    }

    /// Every stdout line (call after the exit: the reader thread has then seen EOF).
    pub fn stdout_lines(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.clone()
    }

    /// Everything written to stderr (after the exit).
    pub fn stderr_text(&mut self) -> String {
        self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }

    /// `VmHWM` of the running process (peak RSS so far), KiB.
    pub fn vm_hwm_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() && self.interrupt(Duration::from_secs(5)).is_err() {
            eprintln!("xtask: bench: `{}` ignored SIGINT; killed", self.what);
        }
    }
}

/// Runs `program args…` to completion within `timeout`; its stdout when it exits 0.
pub fn output<S: AsRef<OsStr>>(program: &str, args: &[S], timeout: Duration) -> Result<String> {
    let mut c = Command::new(program);
    c.args(args);
    let mut p = Proc::spawn(&mut c)?;
    let exit = p.wait(timeout)?;
    let out = p.stdout_lines().join("\n");
    if !exit.success() {
        let err = p.stderr_text();
        bail!("`{}` failed ({}): {}", p.what, exit.code, err.trim());
    }
    Ok(out)
}

/// `wait4` on `pid`: `None` while it runs (unless `block`).
fn reap(pid: i32, block: bool) -> Result<Option<Exit>> {
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointers; pid is our child.
    let r = unsafe { libc::wait4(pid, &raw mut status, if block { 0 } else { libc::WNOHANG }, &raw mut ru) };
    if r == 0 {
        return Ok(None);
    }
    if r < 0 {
        return Err(anyhow!("wait4({pid}): {}", std::io::Error::last_os_error()));
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    #[expect(clippy::cast_precision_loss, reason = "CPU seconds and microseconds, far below 2^52")]
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Some(Exit {
        code,
        maxrss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
    }))
}
