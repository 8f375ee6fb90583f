//! The soak (issue 13): `tracer watch` left running for `--soak` minutes while drop floods come
//! and go (one every `EVERY`, `SOAK_PACKETS` into the node's DROP rule), its RSS read after each
//! flood. The agent is meant to stay on every node: its memory must stay flat once the flight
//! recorder is full, and its count exact. Start, middle and end go into the report.
use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Ctx, INTERRUPTED,
    node::FLOOD_PORT,
    peer::{self, Kind, Outputs},
    traffic,
};

/// A flood every this long (the first at once).
const EVERY: Duration = Duration::from_secs(30);
/// Packets per flood: enough to fill the recorder's 64 MiB within the first minutes at watch's
/// default event rate, bounded by `FLOOD_S`.
const SOAK_PACKETS: u64 = 300_000;
const FLOOD_S: f64 = 5.0;

/// What the soak saw.
#[derive(Debug, Clone, Default)]
pub struct Soak {
    pub minutes: f64,
    /// (seconds since start, `VmRSS` KiB) after each flood.
    pub samples: Vec<(f64, u64)>,
    /// What the flight recorder held then, by its own count (`tracer_recorder_bytes`), KiB:
    /// tells a recorder still filling from memory that grows for another reason.
    pub recorder_kib: Vec<u64>,
    /// Drops the rule counted during the soak, and what watch's `/metrics` said at the end.
    pub rule_drops: u64,
    pub counted: Option<u64>,
    pub peak_kib: u64,
    pub cpu_s: f64,
    pub error: Option<String>,
}

impl Soak {
    /// The samples at the start (after the first flood), middle and end.
    pub fn start_middle_end(&self) -> Option<[(f64, u64); 3]> {
        let n = self.samples.len();
        (n >= 3).then(|| [self.samples[0], self.samples[n / 2], self.samples[n - 1]])
    }

    /// The recorder's own count at the same three samples, KiB.
    fn recorder_at(&self) -> Option<[u64; 3]> {
        let n = self.recorder_kib.len();
        (n >= 3 && n == self.samples.len()).then(|| [self.recorder_kib[0], self.recorder_kib[n / 2], self.recorder_kib[n - 1]])
    }

    pub fn to_json(&self) -> Value {
        json!({
            "minutes": self.minutes, "samples": self.samples.iter().map(|(t, r)| json!([super::stats::round(*t, 1), r])).collect::<Vec<_>>(),
            "recorder_kib": self.recorder_kib,
            "rule_drops": self.rule_drops, "counted": self.counted, "peak_rss_kib": self.peak_kib,
            "cpu_s": super::stats::round(self.cpu_s, 2), "error": self.error,
        })
    }
}

pub fn run(ctx: &Ctx, minutes: f64) -> Soak {
    let mut soak = Soak { minutes, ..Soak::default() };
    if let Err(e) = measure(ctx, &mut soak) {
        soak.error = Some(format!("{e:#}"));
    }
    soak
}

fn measure(ctx: &Ctx, soak: &mut Soak) -> Result<()> {
    let b = &ctx.node.pods[1];
    let expression = format!("udp and dst host {} and dst port {FLOOD_PORT}", b.ip);
    let dir = ctx.work.join("soak");
    let start = peer::Start { tracer: ctx.tracer, dir: &dir, expression: &expression, outputs: Outputs::Summary, cpu: ctx.plan.peer_cpu };
    let running = peer::start(Kind::Tracer { netfilter: true, path: false, watch: true, stack: false }, &start)?;
    let pid = running.pid();
    let before = ctx.node.rule_packets()?;
    let t0 = Instant::now();
    let length = Duration::from_secs_f64(soak.minutes * 60.0);
    // Bounded by the soak's length: one flood per EVERY.
    while t0.elapsed() < length {
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("interrupted");
        }
        let next = t0.elapsed() + EVERY;
        traffic::flood(ctx.node, ctx.blast, SOAK_PACKETS, FLOOD_S)?;
        soak.samples.push((t0.elapsed().as_secs_f64(), rss_kib(pid).context("the watch process is gone")?));
        soak.recorder_kib.push(running.watch_metric("tracer_recorder_bytes")? / 1024);
        if let Some(wait) = next.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait.min(length.saturating_sub(t0.elapsed())));
        }
    }
    soak.rule_drops = ctx.node.rule_packets()?.saturating_sub(before);
    let stopped = running.stop()?;
    soak.counted = stopped.summary_u64("drops");
    soak.peak_kib = stopped.rss_kib;
    soak.cpu_s = stopped.cpu_s;
    Ok(())
}

/// `VmRSS` of a running process, KiB.
fn rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// The report's lines for the soak.
pub fn markdown(s: &Soak) -> String {
    #[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
    let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
    let mut out = format!(
        "\n**Soak**: `tracer watch` (flight recorder 64 MiB) for {} min, a {SOAK_PACKETS}-packet drop flood every {} s; `VmRSS` after each flood (and what the recorder held by its own count, `tracer_recorder_bytes`):\n\n",
        s.minutes,
        EVERY.as_secs()
    );
    if let Some(e) = &s.error {
        let _ = writeln!(out, "failed: {e}");
        return out;
    }
    out.push_str("| start | middle | end | peak | floods | CPU, s | counted = rule's drops |\n|---|---|---|---|---|---|---|\n");
    let rec = s.recorder_at().map(|r| r.map(|k| format!(" (recorder {})", mib(k))));
    let cell = |(t, k): (f64, u64), i: usize| format!("{} MiB at {t:.0} s{}", mib(k), rec.as_ref().map_or("", |r| r[i].as_str()));
    let (first, middle, last) = s.start_middle_end().map_or_else(|| ("–".into(), "–".into(), "–".into()), |[f, m, l]| (cell(f, 0), cell(m, 1), cell(l, 2)));
    let exact = match s.counted {
        Some(c) if c == s.rule_drops => format!("yes ({c})"),
        Some(c) => format!("**no** ({c} of {})", s.rule_drops),
        None => "–".into(),
    };
    let _ = writeln!(out, "| {first} | {middle} | {last} | {} MiB | {} | {:.2} | {exact} |", mib(s.peak_kib), s.samples.len(), s.cpu_s);
    out
}
