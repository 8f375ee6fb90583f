//! What runs next to the load in a traced arm: `tracer capture` (timed from start to its ready
//! file, peak RSS from `VmHWM` and `wait4`, outputs read back) or bpftrace counting
//! `skb:kfree_skb` by reason, the peer tool the reference figures used.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    bpfstats, pcapng,
    proc::{self, Proc},
};

/// Bound on a start (BTF parsing, program loading, ruleset snapshots; slow on a busy machine).
const READY_TIMEOUT: Duration = Duration::from_mins(1);
/// Bound on a stop (detach, drain, write outputs: a flood's pcapng is a few hundred MB).
const STOP_TIMEOUT: Duration = Duration::from_mins(2);
/// bpftrace says "Attaching N probes..." before it attaches; give it this long to finish.
const BPFTRACE_SETTLE: Duration = Duration::from_secs(1);
/// bpftrace's tracepoints need tracefs, which this machine does not mount: bpftrace runs in a
/// private mount namespace with its own tracefs, which vanishes with it. Counted by reason and
/// network namespace (the device's), so the bench's drops are told from other suites' ones.
const BPFTRACE_SCRIPT: &str =
    "tracepoint:skb:kfree_skb { @[args->reason, ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum] = count(); }";
const MOUNT_TRACEFS: &str = "mount -t tracefs nodev /sys/kernel/tracing";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `watch`: `tracer watch` (metrics, flight recorder) instead of `tracer capture`.
    /// `stack`: `capture --stack`.
    Tracer { netfilter: bool, path: bool, watch: bool, stack: bool },
    Bpftrace,
    /// `tracer floor`: an empty program on the drop probe's tracepoint, or (`path`) on every
    /// tracepoint `capture --path` attaches to: what any observer there pays, its dispatch.
    Floor { path: bool },
}

// The `path_floor` arm's label counts them (kfree_skb and the path's).
const _: () = assert!(tracer_common::names::PATH_TRACEPOINTS.len() + 1 == 6);

impl Kind {
    /// The tracepoints of a floor arm.
    fn floor_tracepoints(path: bool) -> Vec<&'static str> {
        let mut tps = vec!["kfree_skb"];
        if path {
            tps.extend(tracer_common::names::PATH_TRACEPOINTS.iter().map(|(_, tp)| *tp));
        }
        tps
    }
}

/// Which outputs a tracer run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outputs {
    /// Summary only (non-matching traffic: nothing else would be written).
    Summary,
    /// pcapng + JSON Lines + summary, all read back after the run.
    All,
}

pub struct Running {
    kind: Kind,
    proc: Proc,
    dir: PathBuf,
    outputs: Outputs,
    pub ready_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Stopped {
    pub ready_s: f64,
    pub stop_s: f64,
    /// Peak RSS, KiB: the larger of `VmHWM` just before the stop and `wait4`'s `ru_maxrss`.
    pub rss_kib: u64,
    pub cpu_s: f64,
    pub summary: Option<Value>,
    pub pcap: Option<pcapng::Counts>,
    pub json_lines: Option<u64>,
    /// bpftrace's `@[reason, netns]: count` map.
    pub by_reason: BTreeMap<(i64, u64), u64>,
    /// Run time of the peer's BPF programs (with `--bpf-stats`).
    pub bpf: Option<bpfstats::Cost>,
    /// The same per program name.
    pub bpf_programs: Vec<(String, bpfstats::Runs)>,
}

impl Stopped {
    pub fn to_json(&self) -> Value {
        let s = self.summary.as_ref();
        let pick = |k: &str| s.map_or(Value::Null, |s| s[k].clone());
        json!({
            "ready_s": super::stats::round(self.ready_s, 3),
            "stop_s": super::stats::round(self.stop_s, 3),
            "rss_kib": self.rss_kib,
            "cpu_s": super::stats::round(self.cpu_s, 3),
            "drops": pick("drops"), "events": pick("events"), "lost_events": pick("lost_events"),
            "seen_drops": pick("seen_drops"), "probe_misses": pick("probe_misses"),
            "pcap_packets": self.pcap.map(|c| c.packets), "pcap_comments": self.pcap.map(|c| c.with_comment),
            "json_lines": self.json_lines,
            "bpf": self.bpf.map(bpfstats::Cost::to_json),
            "bpf_programs": self.bpf_programs.iter().map(|(n, r)| (n.clone(), json!({ "programs": r.programs, "run_cnt": r.run_cnt, "run_time_ns": r.run_time_ns }))).collect::<serde_json::Map<_, _>>(),
            "bpftrace": if self.by_reason.is_empty() { Value::Null } else {
                self.by_reason.iter().map(|((r, ns), v)| (format!("{r},{ns}"), json!(v))).collect::<serde_json::Map<_, _>>().into()
            },
        })
    }

    pub fn summary_u64(&self, k: &str) -> Option<u64> {
        self.summary.as_ref()?[k].as_u64()
    }
}

/// `tracer --help` lists the `watch` command (issue 13).
pub fn tracer_has_watch(bin: &Path) -> Result<bool> {
    let help = proc::output(&bin.to_string_lossy(), &["--help"], Duration::from_secs(30))?;
    Ok(help.lines().any(|l| l.trim_start().starts_with("watch ")))
}

/// `tracer capture --help` lists `--path` (the flag lands with another change).
pub fn tracer_has_path(bin: &Path) -> Result<bool> {
    tracer_has_flag(bin, "--path")
}

/// Whether this tracer has the hidden `floor` command (older binaries are measured too).
pub fn tracer_has_floor(bin: &Path) -> bool {
    proc::output(&bin.to_string_lossy(), &["floor", "--help"], Duration::from_secs(30)).is_ok()
}

/// Whether this tracer's capture takes `flag` (older binaries are measured too).
pub fn tracer_has_flag(bin: &Path, flag: &str) -> Result<bool> {
    let help = proc::output(&bin.to_string_lossy(), &["capture", "--help"], Duration::from_secs(30))?;
    Ok(help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<').any(|w| w == flag))
}

/// How to start a peer.
pub struct Start<'a> {
    pub tracer: &'a Path,
    pub dir: &'a Path,
    pub expression: &'a str,
    pub outputs: Outputs,
    /// Pin the peer to this CPU (taskset); by default it goes where the scheduler puts it.
    pub cpu: Option<usize>,
}

pub fn start(kind: Kind, s: &Start) -> Result<Running> {
    std::fs::create_dir_all(s.dir).with_context(|| format!("cannot create {}", s.dir.display()))?;
    let program: &std::ffi::OsStr = match kind {
        Kind::Tracer { .. } | Kind::Floor { .. } => s.tracer.as_os_str(),
        Kind::Bpftrace => "unshare".as_ref(),
    };
    let c = match s.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    };
    match kind {
        Kind::Tracer { watch: true, .. } => start_watch(kind, c, s),
        Kind::Tracer { .. } => start_tracer(kind, c, s),
        Kind::Bpftrace => start_bpftrace(c, s.dir),
        Kind::Floor { path } => start_floor(kind, c, s.dir, path),
    }
}

fn start_floor(kind: Kind, mut c: Command, dir: &Path, path: bool) -> Result<Running> {
    let ready = dir.join("ready");
    c.args(["floor", "--tracepoint", &Kind::floor_tracepoints(path).join(",")]).arg("--ready-file").arg(&ready);
    wait_ready(kind, c, dir, Outputs::Summary, &ready)
}

fn start_tracer(kind: Kind, mut c: Command, s: &Start) -> Result<Running> {
    let Kind::Tracer { netfilter, path, stack, .. } = kind else { bail!("not a tracer: {kind:?}") };
    let (dir, expression, outputs) = (s.dir, s.expression, s.outputs);
    let ready = dir.join("ready");
    c.arg("capture").arg("--quiet").arg("--ready-file").arg(&ready).arg("--summary").arg(dir.join("summary.json"));
    if outputs == Outputs::All {
        c.arg("--pcap").arg(dir.join("drops.pcapng")).arg("--json").arg(dir.join("drops.jsonl"));
    }
    if !netfilter {
        c.arg("--no-netfilter");
    }
    if path {
        c.arg("--path");
    }
    if stack {
        c.arg("--stack");
    }
    c.arg(expression);
    wait_ready(kind, c, dir, outputs, &ready)
}

/// `tracer watch` on a free port, dumps in its directory; the flight recorder at its default
/// bound (64 MiB: the RSS check is against it).
fn start_watch(kind: Kind, mut c: Command, s: &Start) -> Result<Running> {
    let ready = s.dir.join("ready");
    c.args(["watch", "--listen", "127.0.0.1:0", "--keep-bytes", "64MiB"]).arg("--ready-file").arg(&ready).arg("--dump-dir").arg(s.dir.join("dumps"));
    c.arg(s.expression);
    wait_ready(kind, c, s.dir, Outputs::Summary, &ready)
}

fn wait_ready(kind: Kind, mut c: Command, dir: &Path, outputs: Outputs, ready: &Path) -> Result<Running> {
    let start = Instant::now();
    let mut p = Proc::spawn(&mut c)?;
    loop {
        // Not just "exists": the tracer's start-up check of its output paths creates and removes
        // an empty file at that path before anything is attached; the real one says "ready".
        if std::fs::metadata(ready).is_ok_and(|m| m.len() > 0) {
            break;
        }
        if let Some(e) = p.poll_exit()? {
            bail!("the tracer exited ({}) before it was ready: {}", e.code, p.stderr_text().trim());
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!("the tracer was not ready within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready_s = start.elapsed().as_secs_f64();
    Ok(Running { kind, proc: p, dir: dir.to_path_buf(), outputs, ready_s })
}

/// `c` is `unshare` (or `taskset … unshare`).
fn start_bpftrace(mut c: Command, dir: &Path) -> Result<Running> {
    let start = Instant::now();
    let mut p = Proc::spawn(c.args(["-m", "sh", "-c", &format!("{MOUNT_TRACEFS} && exec bpftrace -e '{BPFTRACE_SCRIPT}'")]))?;
    p.wait_line(|l| l.starts_with("Attaching"), READY_TIMEOUT)?;
    let ready_s = start.elapsed().as_secs_f64();
    std::thread::sleep(BPFTRACE_SETTLE);
    Ok(Running { kind: Kind::Bpftrace, proc: p, dir: dir.to_path_buf(), outputs: Outputs::Summary, ready_s })
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// SIGINT, bounded wait, then the outputs read back (and removed).
    pub fn stop(mut self) -> Result<Stopped> {
        // `tracer watch` writes no summary: its exact count is what /metrics says at the end.
        let watched = matches!(self.kind, Kind::Tracer { watch: true, .. }).then(|| watch_drops(&self.dir)).transpose()?;
        let hwm = self.proc.vm_hwm_kib().unwrap_or(0);
        let cost = bpfstats::of_process(self.proc.pid());
        let bpf = (cost.probes.run_cnt + cost.observers.run_cnt > 0).then_some(cost);
        let bpf_programs = if bpf.is_some() { bpfstats::by_program(self.proc.pid()) } else { Vec::new() };
        let t = Instant::now();
        let exit = self.proc.interrupt(STOP_TIMEOUT)?;
        let stop_s = t.elapsed().as_secs_f64();
        let stdout = self.proc.stdout_lines();
        let stderr = self.proc.stderr_text();
        if !exit.success() {
            bail!("{:?} exited with {}: {}", self.kind, exit.code, tail(&stderr));
        }
        let mut out = Stopped { ready_s: self.ready_s, stop_s, rss_kib: hwm.max(exit.maxrss_kib), cpu_s: exit.cpu_s, bpf, bpf_programs, ..Stopped::default() };
        match self.kind {
            Kind::Floor { .. } => {}
            Kind::Bpftrace => out.by_reason = parse_bpftrace_map(&stdout),
            Kind::Tracer { watch: true, .. } => out.summary = watched.map(|d| json!({ "drops": d })),
            Kind::Tracer { .. } => {
                let s = self.dir.join("summary.json");
                let text = std::fs::read_to_string(&s).with_context(|| format!("the tracer wrote no {}", s.display()))?;
                out.summary = Some(serde_json::from_str(&text).context("the summary is not JSON")?);
                if self.outputs == Outputs::All {
                    out.pcap = Some(pcapng::count(&self.dir.join("drops.pcapng"))?);
                    out.json_lines = Some(count_lines(&self.dir.join("drops.jsonl"))?);
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Outputs of a flood are large; nothing is kept but what `stop` read.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `tracer_drops_total{reason="NETFILTER_DROP"}` summed from `/metrics` (the address is in the
/// ready file) once two scrapes a second apart agree with no drop pending (waiting for its
/// rule: `tracer_drops_pending`): the metrics follow the kernel's totals every second, and
/// the load has ended.
fn watch_drops(dir: &Path) -> Result<u64> {
    let scrape = || -> Result<(u64, u64)> {
        let text = metrics(dir)?;
        let drops = text
            .lines()
            .filter(|l| l.starts_with("tracer_drops_total{") && l.contains("reason=\"NETFILTER_DROP\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        // A tracer without the gauge (an older --tracer) has nothing to wait for.
        Ok((drops, unlabelled(&text, "tracer_drops_pending").unwrap_or(0)))
    };
    let mut last = scrape()?;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(1100));
        let now = scrape()?;
        if now == last && now.1 == 0 {
            return Ok(now.0);
        }
        last = now;
    }
    bail!("tracer watch's count did not settle within 30 s (last {} drops, {} pending)", last.0, last.1)
}

/// `tracer watch`'s `/metrics` text (the address is in the ready file in `dir`).
fn metrics(dir: &Path) -> Result<String> {
    let addr = std::fs::read_to_string(dir.join("ready"))?.trim().to_string();
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).arg(format!("http://{addr}/metrics")).output().context("cannot run curl")?;
    if !out.status.success() {
        bail!("curl {addr}/metrics: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Running {
    /// A label-less gauge or counter of a running `tracer watch` (e.g. `tracer_recorder_bytes`).
    pub fn watch_metric(&self, name: &str) -> Result<u64> {
        unlabelled(&metrics(&self.dir)?, name).with_context(|| format!("no {name} in /metrics"))
    }
}

/// The value of the label-less metric `name` in a `/metrics` text.
fn unlabelled(text: &str, name: &str) -> Option<u64> {
    let value = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "byte and event counts, whole and positive")]
    value.map(|v| v as u64)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn count_lines(p: &Path) -> Result<u64> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        #[expect(clippy::naive_bytecount, reason = "one pass over a file once per flood; no crate for that")]
        let lines = buf[..k].iter().filter(|&&b| b == b'\n').count();
        n += u64::try_from(lines)?;
    }
}

/// `@[12, 4026532389]: 1000000` lines.
fn parse_bpftrace_map(lines: &[String]) -> BTreeMap<(i64, u64), u64> {
    lines
        .iter()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("@[")?.split_once("]: ")?;
            let (reason, ns) = k.split_once(',')?;
            Some(((reason.trim().parse().ok()?, ns.trim().parse().ok()?), v.trim().parse().ok()?))
        })
        .collect()
}

/// The number bpftrace prints for `NETFILTER_DROP`: from the `kfree_skb` tracepoint format, which
/// is what bpftrace reads too (in a private mount namespace with tracefs, as above).
pub fn netfilter_drop_value() -> Result<i64> {
    let fmt = proc::output(
        "unshare",
        &["-m", "sh", "-c", &format!("{MOUNT_TRACEFS} && cat /sys/kernel/tracing/events/skb/kfree_skb/format")],
        Duration::from_secs(30),
    )?;
    let needle = "\"NETFILTER_DROP\"";
    let at = fmt.find(needle).context("NETFILTER_DROP is not in the kfree_skb tracepoint format")?;
    let open = fmt[..at].rfind('{').context("unexpected tracepoint format")?;
    let num = fmt[open + 1..at].trim().trim_end_matches(',').trim();
    num.parse().with_context(|| format!("unexpected NETFILTER_DROP value {num:?}"))
}

/// Whether bpftrace can run here (installed).
pub fn bpftrace_available() -> bool {
    crate::cmd::probe(Command::new("bpftrace").arg("--version")).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_metric_by_its_whole_name() {
        let text = "# TYPE tracer_drops_pending gauge\ntracer_drops_pending_x 9\ntracer_drops_pending 12\ntracer_drops_total{reason=\"X\"} 3\n";
        assert_eq!(unlabelled(text, "tracer_drops_pending"), Some(12));
        assert_eq!(unlabelled(text, "tracer_recorder_bytes"), None);
    }

    #[test]
    fn bpftrace_map_lines() {
        let lines: Vec<String> =
            ["Attaching 1 probe...", "", "@[2, 0]: 17", "@[12, 4026532389]: 1000000", "@[12]: 3", "junk"].map(String::from).into();
        let m = parse_bpftrace_map(&lines);
        assert_eq!(m.get(&(12, 4_026_532_389)), Some(&1_000_000));
        assert_eq!(m.get(&(2, 0)), Some(&17));
        assert_eq!(m.len(), 2);
    }
}
