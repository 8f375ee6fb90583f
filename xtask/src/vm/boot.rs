//! Boots one guest under QEMU (TCG: KVM is not available here), streams its console, follows its
//! result port for live progress, and kills it when the time bound passes.
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::report::{Event, Outcome, event};
use crate::cmd;

/// What QEMU left.
pub struct Guest {
    pub results: String,
    pub console: String,
    pub wall: Duration,
    pub timed_out: bool,
    pub status: String,
    /// CPU time QEMU used (user + system, its last reading before it exited).
    pub cpu: Duration,
}

pub struct Boot<'a> {
    pub label: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Where console.log and results.log go.
    pub dir: &'a Path,
    pub timeout: Duration,
    /// Echo the console to stderr.
    pub echo_console: bool,
}

/// Kernel command line: serial console, no reboot loop on panic, quiet console (results do
/// not travel there anyway), no speculative-execution mitigations (they only slow TCG down).
const APPEND: &str = "console=ttyS0 panic=-1 loglevel=4 mitigations=off";

impl Boot<'_> {
    pub fn run(&self) -> Result<Guest> {
        let results_path = self.dir.join("results.log");
        let console_path = self.dir.join("console.log");
        let _ = std::fs::remove_file(&results_path);
        std::fs::write(&results_path, "")?;
        let mut c = cmd::new("qemu-system-x86_64");
        // No network card: the tests build their own in namespaces (and its boot ROM costs time).
        c.args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "2G",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(self.kernel)
        .arg("-initrd")
        .arg(self.initrd)
        .args(["-append", APPEND])
        // ttyS0: console, multiplexed with the monitor on stdio; ttyS1: the result port.
        .args(["-serial", "mon:stdio", "-serial"])
        .arg(format!("file:{}", results_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        eprintln!("xtask: $ {}", cmd::display(&c));
        let start = Instant::now();
        let mut child = c
            .spawn()
            .context("cannot run qemu-system-x86_64 (`cargo xtask vm-test` installs it)")?;
        let console = self.console_readers(&mut child, &console_path)?;
        let mut follow = Follow {
            path: results_path.clone(),
            offset: 0,
            partial: String::new(),
            label: self.label.to_string(),
            skips: HashMap::new(),
            unchecked: HashMap::new(),
        };
        let mut timed_out = false;
        let mut cpu = Duration::ZERO;
        let status = loop {
            follow.poll();
            cpu = cpu_time(child.id()).unwrap_or(cpu);
            if let Some(s) = child.try_wait()? {
                break s.to_string();
            }
            if start.elapsed() > self.timeout {
                timed_out = true;
                // Our own child: kill it by its handle.
                let _ = child.kill();
                break format!("killed after {:.0} s", self.timeout.as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let _ = child.wait();
        let wall = start.elapsed();
        follow.poll();
        for h in console {
            let _ = h.join();
        }
        let results = std::fs::read_to_string(&results_path).unwrap_or_default();
        let console = std::fs::read_to_string(&console_path).unwrap_or_default();
        Ok(Guest {
            results,
            console,
            wall,
            timed_out,
            status,
            cpu,
        })
    }

    /// Threads copying QEMU's stdout and stderr into console.log (and to our stderr).
    fn console_readers(
        &self,
        child: &mut Child,
        path: &Path,
    ) -> Result<Vec<std::thread::JoinHandle<()>>> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let sink = std::sync::Arc::new(std::sync::Mutex::new(file));
        let mut handles = Vec::new();
        let pipes: Vec<Box<dyn std::io::Read + Send>> = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for pipe in pipes {
            let sink = sink.clone();
            let (label, echo) = (self.label.to_string(), self.echo_console);
            handles.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                    let text = printable(&String::from_utf8_lossy(&line));
                    if let Ok(mut f) = sink.lock() {
                        use std::io::Write as _;
                        let _ = writeln!(f, "{text}");
                    }
                    if echo {
                        eprintln!("[{label} console] {text}");
                    }
                }
            }));
        }
        Ok(handles)
    }
}

/// User + system CPU time of process `pid` (`/proc/PID/stat` fields 14 and 15, in clock ticks).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = stat.rsplit_once(')')?.1;
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|h| *h > 0)?;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// The line without terminal control sequences (the firmware clears the screen).
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ params final, or ESC and one character.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// Tails results.log and prints one progress line per finished test.
struct Follow {
    path: PathBuf,
    offset: u64,
    partial: String,
    label: String,
    skips: HashMap<String, String>,
    unchecked: HashMap<String, Vec<String>>,
}

impl Follow {
    fn poll(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.show(line.trim_end());
        }
    }

    fn show(&mut self, line: &str) {
        let l = &self.label;
        match event(line) {
            Event::Begin(b) => eprintln!("[{l}] running {b}"),
            Event::Retry(b) => eprintln!("[{l}] running the failed tests of {b} again, alone"),
            Event::End { name, status } => {
                eprintln!(
                    "[{l}] {name} exited with status {}",
                    status.map_or("?".into(), |s| s.to_string())
                );
            }
            Event::Skip { name, reason } => {
                self.skips.insert(name, reason);
            }
            Event::Unchecked { name, what } => {
                self.unchecked.entry(name).or_default().push(what);
            }
            Event::Test {
                name,
                outcome,
                secs,
            } => {
                let secs = secs.map_or(String::new(), |s| format!(" ({s:.1} s)"));
                match (outcome, self.skips.remove(&name)) {
                    (Outcome::Passed, Some(why)) => {
                        eprintln!("[{l}]   skipped {name}{secs}: {why}");
                    }
                    (o, _) => {
                        let partly = self.unchecked.remove(&name).map_or(String::new(), |w| {
                            format!("; not checked here: {}", w.join("; "))
                        });
                        eprintln!("[{l}]   {:<7} {name}{secs}{partly}", o.label());
                    }
                }
            }
            Event::Probe(name, ok, detail) => eprintln!(
                "[{l}] probe {name}: {} ({detail})",
                if ok { "yes" } else { "NO" }
            ),
            Event::Done => eprintln!("[{l}] tests done, powering off"),
            Event::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_dropped() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(printable("[  1.0] ok\tdone"), "[  1.0] ok\tdone");
    }
}
