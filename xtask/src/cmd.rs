//! Running tools. Every command that changes something is echoed before it runs, so a CI log
//! says what happened; probes (`--version`, `dpkg-query`) run silently.
use std::{
    env,
    ffi::{OsStr, OsString},
    fmt::{Display, Write as _},
    io::{BufRead as _, BufReader, ErrorKind, IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// One line of progress on stderr (stdout belongs to the tracer in `cargo xtask run`).
/// Crates built only for bpfel-unknown-none (by build scripts with aya-build): never built,
/// tested or linted for the host.
pub const EBPF_CRATES: &[&str] = &["tracer-ebpf", "fixtures-ebpf"];

pub fn step(msg: impl Display) {
    eprintln!("xtask: {msg}");
}

/// The workspace root: xtask lives one level below it.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
}

/// Where `cargo install` puts binaries (`$CARGO_HOME/bin`, default `~/.cargo/bin`).
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `PATH` with `dirs` in front (skipping those already on it). `sudo` resets PATH, and a
/// freshly installed bpf-linker must be found by the build that follows.
pub fn path_with(dirs: &[PathBuf]) -> OsString {
    prepend(&env::var_os("PATH").unwrap_or_default(), dirs)
}

fn prepend(path: &OsStr, dirs: &[PathBuf]) -> OsString {
    let mut parts: Vec<PathBuf> = env::split_paths(path).collect();
    for d in dirs.iter().rev() {
        if !parts.contains(d) {
            parts.insert(0, d.clone());
        }
    }
    env::join_paths(parts).unwrap_or_else(|_| path.to_owned())
}

/// A command for `program` with `~/.cargo/bin` on its PATH.
pub fn new(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env(
        "PATH",
        path_with(&cargo_bin_dir().into_iter().collect::<Vec<_>>()),
    );
    c
}

/// The cargo that runs us (cargo sets `CARGO`), run from the workspace root.
pub fn cargo() -> Command {
    let mut c = new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// The command line as a user would type it (env assignments are not shown).
pub fn display(c: &Command) -> String {
    let mut s = String::new();
    for (k, v) in c.get_envs() {
        if k != "PATH"
            && let Some(v) = v
        {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s.push_str(
        &Path::new(c.get_program())
            .file_name()
            .unwrap_or(c.get_program())
            .to_string_lossy(),
    );
    for a in c.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|ch: char| ch.is_whitespace() || "'\"$*?".contains(ch)) {
            let _ = write!(s, " '{a}'");
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Echoes and runs `c`, failing with the command line and its exit status.
pub fn run(c: &mut Command) -> Result<()> {
    let line = display(c);
    eprintln!("xtask: $ {line}");
    let status = c.status().map_err(|e| spawn_error(c, &e))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Like [`run`] for a cargo command that may build `tracer`: aya-build forwards the eBPF
/// sub-build's status lines as `cargo:warning`, and cargo replays them on every build, even a
/// no-op one. Those ~40 lines (`warning: tracer@…:    Compiling core …`) are dropped here;
/// everything else, eBPF compile errors included, passes through.
pub fn run_cargo(c: &mut Command) -> Result<()> {
    let line = display(c);
    eprintln!("xtask: $ {line}");
    if std::io::stderr().is_terminal() {
        c.env("CARGO_TERM_COLOR", "always");
    }
    let mut child = c
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(c, &e))?;
    if let Some(err) = child.stderr.take() {
        let mut out = std::io::stderr().lock();
        for l in BufReader::new(err).split(b'\n').map_while(Result::ok) {
            if !is_replayed_ebpf_status(&String::from_utf8_lossy(&l)) {
                let _ = out.write_all(&l);
                let _ = out.write_all(b"\n");
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// `warning: tracer@0.1.0:    Compiling core v0.0.0 (…)` (possibly with colour codes).
fn is_replayed_ebpf_status(line: &str) -> bool {
    let plain = strip_ansi(line);
    let Some(rest) = plain.strip_prefix("warning: ") else {
        return false;
    };
    let Some((_pkg, msg)) = rest.split_once(": ") else {
        return false;
    };
    let msg = msg.trim_start();
    [
        "Compiling ",
        "Finished ",
        "Fresh ",
        "Checking ",
        "Building ",
        "Blocking ",
        "Updating ",
        "Downloading ",
        "Downloaded ",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            // CSI: ESC [ params… final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Runs `c` silently; its stdout when it exits 0, `None` when it is missing or fails.
pub fn probe(c: &mut Command) -> Option<String> {
    let out = c.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_error(c: &Command, e: &std::io::Error) -> anyhow::Error {
    let prog = c.get_program().to_string_lossy();
    if e.kind() == ErrorKind::NotFound {
        anyhow!("`{prog}` not found on PATH")
    } else {
        anyhow!("cannot run `{prog}`: {e}")
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace's target directory, as cargo resolves it (`CARGO_TARGET_DIR`, config…).
pub fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run `cargo metadata`")?;
    if !out.status.success() {
        bail!("`cargo metadata` failed ({})", out.status);
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cannot parse `cargo metadata` output")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("`cargo metadata` reports no target_directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut c = Command::new("/usr/bin/cargo");
        c.args(["test", "--", "udp port 53", ""])
            .env("RUSTC_BOOTSTRAP", "1");
        assert_eq!(
            display(&c),
            "RUSTC_BOOTSTRAP=1 cargo test -- 'udp port 53' ''"
        );
    }

    #[test]
    fn only_replayed_ebpf_status_lines_are_dropped() {
        assert!(is_replayed_ebpf_status(
            "warning: tracer@0.1.0:    Compiling core v0.0.0 (/x)"
        ));
        assert!(is_replayed_ebpf_status(
            "\x1b[1m\x1b[33mwarning\x1b[0m\x1b[1m:\x1b[0m tracer@0.1.0:     Finished `release` profile"
        ));
        assert!(!is_replayed_ebpf_status(
            "warning: tracer@0.1.0: error[E0463]: can't find crate for `core`"
        ));
        assert!(!is_replayed_ebpf_status("warning: unused variable: `x`"));
        assert!(!is_replayed_ebpf_status("   Compiling tracer v0.1.0"));
    }

    #[test]
    fn prepend_adds_missing_dirs_in_order_and_skips_present_ones() {
        let dirs = [PathBuf::from("/a"), PathBuf::from("/usr/bin")];
        assert_eq!(
            prepend(OsStr::new("/usr/bin:/bin"), &dirs),
            OsString::from("/a:/usr/bin:/bin")
        );
        let dirs = [PathBuf::from("/a"), PathBuf::from("/b")];
        assert_eq!(
            prepend(OsStr::new("/bin"), &dirs),
            OsString::from("/a:/b:/bin")
        );
    }
}
