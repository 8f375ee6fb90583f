//! Runs `tracer watch`: start it (bounded wait for its ready file, which holds the address
//! it listens on), read `/metrics` through a real exposition parser (Python's
//! `prometheus_client`, Debian's python3-prometheus-client), ask for dumps, stop it.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::{TempDir, cmd, tracer::READY_TIMEOUT, wait};

/// Bound on one HTTP request to the tracer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The parser run over every scrape: Prometheus text or `OpenMetrics`, samples out as JSON.
const PARSER: &str = r"
import sys, json
from prometheus_client.parser import text_string_to_metric_families as prom
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
parse = om if sys.argv[1] == 'openmetrics' else prom
out = []
for fam in parse(sys.stdin.read()):
    for s in fam.samples:
        out.append({'family': fam.name, 'type': fam.type, 'name': s.name, 'labels': s.labels, 'value': s.value})
print(json.dumps(out))
";

/// One sample of a scrape.
#[derive(Debug, Clone)]
pub struct Sample {
    pub family: String,
    pub kind: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value as a count (every metric of the tracer counts whole things).
    #[must_use]
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "counts below 2^53, checked non-negative and whole")]
    pub fn count(&self) -> u64 {
        assert!(self.value >= 0.0 && self.value.fract() == 0.0, "{} is not a count: {}", self.name, self.value);
        self.value as u64
    }
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// Samples named `name` whose labels include every `(key, value)` of `with`.
    pub fn samples<'a>(&'a self, name: &'a str, with: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
    }

    /// Sum of the samples `samples(name, with)` (counters and gauges of counts).
    #[must_use]
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        self.samples(name, with).map(Sample::count).sum()
    }

    /// Sum of `tracer_drops_total` over series whose `label` contains `needle`.
    #[must_use]
    pub fn drops_where(&self, label: &str, needle: &str) -> u64 {
        self.samples("tracer_drops_total", &[]).filter(|s| s.labels.get(label).is_some_and(|v| v.contains(needle))).map(Sample::count).sum()
    }
}

/// Parses an exposition with the real parser; `openmetrics` picks its format.
pub fn parse(text: &str, openmetrics: bool) -> Result<Scrape> {
    let out = cmd::run_with_input("/usr/bin/python3", &["-c", PARSER, if openmetrics { "openmetrics" } else { "prometheus" }], text)
        .with_context(|| format!("the exposition parser rejected /metrics (install python3-prometheus-client):\n{text}"))?;
    let v: Vec<Value> = serde_json::from_str(&out)?;
    let samples = v
        .into_iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap_or_default().into(),
            kind: s["type"].as_str().unwrap_or_default().into(),
            name: s["name"].as_str().unwrap_or_default().into(),
            labels: s["labels"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect();
    Ok(Scrape(samples))
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// One request with curl (`extra`: more curl options, e.g. `-H`).
pub fn http(method: &str, url: &str, extra: &[&str]) -> Result<Answer> {
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", method, "-w", "\n%{http_code}", "--max-time", "20"]).args(extra).arg(url);
    let out = cmd::output(&mut c, None, HTTP_TIMEOUT)?;
    if !out.status.success() {
        bail!("curl {method} {url} failed: {}", out.stderr.trim());
    }
    let (body, code) = out.stdout.rsplit_once('\n').context("no status from curl")?;
    Ok(Answer { status: code.trim().parse().context("bad status from curl")?, body: body.to_string() })
}

/// `tracer watch` being set up.
pub struct Watch {
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Watch {
    /// With `--listen 127.0.0.1:0`, a dump directory of its own and `--ready-file`.
    #[must_use]
    pub fn new(bin: &Path) -> Self {
        Self { bin: bin.to_path_buf(), args: Vec::new(), env: Vec::new() }
    }

    /// An environment variable of its own (e.g. a `PATH` with wrapped listing tools).
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    #[must_use]
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    fn command(&self, dir: &TempDir, dumps: Option<&Path>) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("watch").arg("--ready-file").arg(dir.join("ready"));
        if !self.args.iter().any(|a| a == "--listen") {
            c.args(["--listen", "127.0.0.1:0"]);
        }
        if let Some(d) = dumps {
            c.arg("--dump-dir").arg(d);
        }
        c.args(&self.args);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.current_dir(dir.path());
        c
    }

    fn has_dump_dir(&self) -> bool {
        self.args.iter().any(|a| a == "--dump-dir")
    }

    /// Starts it and waits (bounded) for its ready file.
    pub fn start(self) -> Result<RunningWatch> {
        let dir = TempDir::new("tb-watch")?;
        let dumps = dir.join("dumps");
        let dump_dir = (!self.has_dump_dir()).then_some(dumps.as_path());
        let mut child = self
            .command(&dir, dump_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr"))?)
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        let ready = dir.join("ready");
        let waited = wait::until("tracer watch's ready file", READY_TIMEOUT, Duration::from_millis(20), || {
            if let Ok(s) = std::fs::read_to_string(&ready)
                && s.ends_with('\n')
            {
                return Ok(Some(s.trim().to_string()));
            }
            match child.try_wait()? {
                Some(status) => Err(anyhow!("tracer watch exited before it was ready ({status})")),
                None => Ok(None),
            }
        });
        let addr = match waited {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{e:#}; stderr:\n{}", std::fs::read_to_string(dir.join("stderr")).unwrap_or_default());
            }
        };
        Ok(RunningWatch { child: Some(child), addr, dumps, dir })
    }

    /// Runs it expecting it to end by itself (bad input), bounded by `timeout`.
    pub fn run(self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let dir = TempDir::new("tb-watch")?;
        let dumps = dir.join("dumps");
        let dump_dir = (!self.has_dump_dir()).then_some(dumps.as_path());
        let out = cmd::output(&mut self.command(&dir, dump_dir), None, timeout)?;
        Ok((out.status, out.stderr))
    }
}

/// A running `tracer watch`; dropping it sends SIGTERM (then kills it if it does not exit).
pub struct RunningWatch {
    child: Option<Child>,
    /// `ADDR:PORT` it listens on.
    pub addr: String,
    /// Its `--dump-dir` (unless the test gave its own).
    pub dumps: PathBuf,
    dir: TempDir,
}

impl RunningWatch {
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /metrics` in the Prometheus text format, parsed.
    pub fn metrics(&self) -> Result<Scrape> {
        let a = http("GET", &self.url("/metrics"), &[])?;
        if a.status != 200 {
            bail!("GET /metrics: {} {}", a.status, a.body);
        }
        parse(&a.body, false)
    }

    /// `GET /metrics` asking for `OpenMetrics`, parsed by the `OpenMetrics` parser.
    pub fn openmetrics(&self) -> Result<Scrape> {
        let a = http("GET", &self.url("/metrics"), &["-H", "Accept: application/openmetrics-text; version=1.0.0"])?;
        if a.status != 200 {
            bail!("GET /metrics (OpenMetrics): {} {}", a.status, a.body);
        }
        parse(&a.body, true)
    }

    /// Waits (bounded) until a scrape satisfies `done`; returns it.
    pub fn until(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Scrape) -> bool) -> Result<Scrape> {
        wait::until(what, timeout, Duration::from_millis(100), || {
            let m = self.metrics()?;
            Ok(done(&m).then_some(m))
        })
        .map_err(|e| anyhow!("{e:#}; stderr so far:\n{}", self.stderr()))
    }

    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child
            && let Ok(pid) = libc::pid_t::try_from(c.id())
        {
            // SAFETY: a pid of a child we have not reaped yet.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// What it printed on stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The `.tar.zst` dumps in its dump directory, sorted (oldest first).
    pub fn dump_files(&self) -> Result<Vec<PathBuf>> {
        dump_files(&self.dumps)
    }

    /// SIGTERM, bounded wait; exit status and stderr.
    pub fn stop(mut self) -> Result<(ExitStatus, String)> {
        let mut child = self.child.take().context("already stopped")?;
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: a pid of a child we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let status = wait::until("tracer watch to exit", crate::tracer::STOP_TIMEOUT, Duration::from_millis(10), || Ok(child.try_wait()?));
        let status = status.inspect_err(|_| {
            let _ = child.kill();
            let _ = child.wait();
        })?;
        Ok((status, self.stderr()))
    }
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if wait::until("tracer watch to exit", Duration::from_secs(20), Duration::from_millis(10), || Ok(child.try_wait()?)).is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The `.tar.zst` files of a dump directory, sorted.
pub fn dump_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(r) => r.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".tar.zst")).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    v.sort();
    Ok(v)
}

/// An unpacked dump: its MANIFEST.json and JSON Lines events.
pub struct Dump {
    pub manifest: Value,
    pub events: Vec<Value>,
    pub files: Vec<String>,
    _dir: TempDir,
}

/// Unpacks a dump archive (`tar --zstd`) into a temporary directory.
pub fn unpack(archive: &Path) -> Result<Dump> {
    let dir = TempDir::new("tb-dump")?;
    cmd::run("tar", &[OsString::from("--zstd"), "-xf".into(), archive.into(), "-C".into(), dir.path().into()])?;
    let top = std::fs::read_dir(dir.path())?.flatten().next().context("empty dump archive")?.path();
    let manifest: Value = serde_json::from_slice(&std::fs::read(top.join("MANIFEST.json"))?)?;
    let jsonl = std::fs::read_to_string(top.join("capture/drops.jsonl")).unwrap_or_default();
    let events = jsonl.lines().map(serde_json::from_str).collect::<Result<Vec<Value>, _>>()?;
    let files = manifest["files"].as_array().map(|a| a.iter().filter_map(|f| f["path"].as_str().map(String::from)).collect()).unwrap_or_default();
    Ok(Dump { manifest, events, files, _dir: dir })
}
