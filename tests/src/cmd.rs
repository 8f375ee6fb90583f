//! Running the system tools the testbed drives (`ip`, `iptables`, `nft`, `tc`, `tshark`), each
//! with a time bound and an error that shows the command and its stderr.
use std::{
    ffi::OsStr,
    io::{Read as _, Write as _},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Bound for one tool invocation; these return in milliseconds unless something is wrong.
pub const TIMEOUT: Duration = Duration::from_mins(2);

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args…`, fails unless it exits 0, returns stdout.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = output(Command::new(program).args(args), None, TIMEOUT)?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", show(program, args), out.status, out.stderr.trim());
    }
    Ok(out.stdout)
}

/// Runs `program args…` inside the named network namespace (`ip netns exec`).
pub fn run_in<S: AsRef<OsStr>>(netns: &str, program: &str, args: &[S]) -> Result<String> {
    let mut full: Vec<&OsStr> = vec![OsStr::new("netns"), OsStr::new("exec"), OsStr::new(netns), OsStr::new(program)];
    full.extend(args.iter().map(AsRef::as_ref));
    run("ip", &full)
}

/// Runs `program args…` with `input` on stdin, fails unless it exits 0.
pub fn run_with_input<S: AsRef<OsStr>>(program: &str, args: &[S], input: &str) -> Result<String> {
    let out = output(Command::new(program).args(args), Some(input), TIMEOUT)?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", show(program, args), out.status, out.stderr.trim());
    }
    Ok(out.stdout)
}

/// Runs a prepared command to completion within `timeout` (killed after it), whatever its exit.
pub fn output(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).with_context(|| format!("writing to {what}"))?;
    }
    let mut out_pipe = child.stdout.take().context("stdout")?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

fn show<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Waits (bounded) for a helper process told to stop (its stdin closed) to exit; fails when
/// it exited badly or wrote anything to stderr. Killed when it does not exit in time.
pub fn finish_helper(mut child: std::process::Child, name: &str, timeout: Duration) -> Result<()> {
    let status = crate::wait::until(&format!("{name} to exit"), timeout, Duration::from_millis(10), || Ok(child.try_wait()?));
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    if !status.success() || !stderr.trim().is_empty() {
        bail!("{name} exited with {status}: {}", stderr.trim());
    }
    Ok(())
}
