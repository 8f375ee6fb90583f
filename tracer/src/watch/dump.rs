//! Dumps: the flight recorder's window around a trigger written as a bundle, the same layout
//! as `capture --bundle` (the bundle writer and the capture's sinks do the writing). Written
//! under `.partial-NAME/` in the dump directory and renamed to `NAME.tar.zst` once complete,
//! so a reader never sees half a dump; the directory keeps the newest `--dump-max` dumps.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{
    aggregate::KernelRow,
    args::CaptureArgs,
    model::{drop::DropRecord, time::rfc3339},
    sinks::{
        Sink as _, Sinks,
        jsonl::JsonLines,
        pcapng::{PcapSink, Pcapng},
        summary::{self, SummarySink},
    },
};

/// Dumps in the directory are named `PREFIX<time>-<seq>-<trigger>.tar.zst`.
const PREFIX: &str = "tracer-dump-";
const PARTIAL: &str = ".partial-";

/// Kernel totals over a dump's window (from the counters sampled every second).
#[derive(Clone, Copy, Default)]
pub struct WindowTotals {
    pub drops: u64,
    pub rate_limited: u64,
    pub seen: u64,
}

/// Everything a dump writer thread needs.
pub struct Job {
    pub name: String,
    pub trigger: String,
    /// Wall times (since the Unix epoch).
    pub fired: Duration,
    pub from: Duration,
    pub to: Duration,
    pub records: Vec<std::sync::Arc<DropRecord>>,
    pub totals: WindowTotals,
    pub node: String,
    pub probe: String,
    pub args: CaptureArgs,
}

/// A dump name: sortable by time, unique by `seq`, readable by its trigger.
pub fn name(fired: Duration, seq: u64, trigger: &str) -> String {
    let t = rfc3339(fired);
    let stamp: String = t.chars().take(19).filter(char::is_ascii_digit).collect();
    let slug: String = trigger.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(40).collect();
    format!("{PREFIX}{stamp}-{seq:04}-{slug}")
}

/// Where a dump named `name` ends up.
pub fn archive_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tar.zst"))
}

/// Checks (before anything is attached) that the dump directory exists or can be created and
/// takes files; removes partial dumps a killed earlier run left.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--dump-dir {}: cannot create it; give a writable directory", dir.display()))?;
    let probe = dir.join(format!("{PARTIAL}check-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .and_then(|()| std::fs::remove_dir(&probe))
        .with_context(|| format!("--dump-dir {}: cannot write there; give a writable directory", dir.display()))?;
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(PARTIAL) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// Writes one dump; on any failure nothing of it stays in the directory.
pub fn write(job: &Job, dir: &Path, keep: usize) -> Result<PathBuf> {
    let partial = dir.join(format!("{PARTIAL}{}", job.name));
    let result = write_partial(job, dir, &partial);
    let _ = std::fs::remove_dir_all(&partial);
    let path = result?;
    prune(dir, keep);
    Ok(path)
}

fn write_partial(job: &Job, dir: &Path, partial: &Path) -> Result<PathBuf> {
    std::fs::create_dir(partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut args = job.args.clone();
    args.bundle = Some(partial.join(&job.name));
    let mut bundle = crate::bundle::Bundle::prepare(&mut args)?.context("no bundle directory")?;
    bundle.manifest_field("node", json!(job.node));
    bundle.manifest_field(
        "dump",
        json!({
            "trigger": job.trigger,
            "fired": rfc3339(job.fired),
            "window_start": rfc3339(job.from),
            "window_end": rfc3339(job.to),
            "events": job.records.len(),
            "drops": job.totals.drops,
            "rate_limited": job.totals.rate_limited,
        }),
    );
    bundle.start();
    let (Some(pcap), Some(jsonl), Some(summary_path)) = (&args.pcap, &args.json, &args.summary) else { bail!("bundle outputs missing") };
    let mut sinks = Sinks::default();
    sinks.push(Box::new(JsonLines::create(jsonl, Some(&job.node))?));
    sinks.push(Box::new(PcapSink { pcap: Pcapng::create(pcap, args.snaplen, Some(&job.node))?, all: false }));
    let mut tally = SummarySink::new(None);
    for r in &job.records {
        sinks.drop_event(r);
        tally.drop_event(r)?;
    }
    sinks.flush();
    let failures = sinks.failures();
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    let totals = summary::Totals::new(job.totals.drops, sinks.written(), job.totals.seen, 0, job.totals.rate_limited);
    let meta = summary::Meta {
        path: None,
        node: Some(job.node.clone()),
        duration_s: job.to.saturating_sub(job.from).as_secs_f64(),
        expression: args.expression.join(" "),
        filter: None,
        probe: job.probe.clone(),
        kernel: crate::session::run::kernel_release(),
        start: rfc3339(job.from),
        end: rfc3339(job.to),
    };
    let s = summary::build(&totals, &rows(&job.records), &tally.tallies, meta);
    let mut bytes = serde_json::to_vec_pretty(&s)?;
    bytes.push(b'\n');
    crate::sinks::write_atomic(summary_path, &bytes)?;
    let archive = bundle.finish(&args, &job.probe)?;
    let dest = archive_path(dir, &job.name);
    std::fs::rename(&archive, &dest).with_context(|| format!("cannot move the dump to {}", dest.display()))?;
    Ok(dest)
}

/// The window's tables (by reason, location, interface) from its recorded events: the
/// kernel's per-key totals are cumulative, the window's exact total is `drops`.
fn rows(records: &[std::sync::Arc<DropRecord>]) -> Vec<KernelRow> {
    type Key = (String, String, String, u32, u32, Option<String>);
    let mut m: std::collections::BTreeMap<Key, u64> = std::collections::BTreeMap::new();
    for r in records {
        let e = &r.event;
        *m.entry((e.reason.clone(), e.location.clone(), e.ifname.clone(), e.ifindex, e.netns, e.pod_iface.clone())).or_default() += 1;
    }
    m.into_iter()
        .map(|((reason, location, ifname, ifindex, netns, pod), count)| KernelRow { reason, location, ifname, ifindex, netns, count, pod, tc: None })
        .collect()
}

/// Removes the oldest dumps past `keep`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut dumps: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(PREFIX) && n.to_string_lossy().ends_with(".tar.zst")))
        .collect();
    dumps.sort();
    let excess = dumps.len().saturating_sub(keep);
    for p in dumps.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_file(&p) {
            log::warn!("cannot remove old dump {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_sort_by_time() {
        let a = super::name(std::time::Duration::from_secs(1_700_000_000), 2, "NETFILTER_DROP at 5/s");
        let b = super::name(std::time::Duration::from_secs(1_700_000_001), 1, "http");
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("tracer-dump-20231114221320-0002-NETFILTER_DROP_at_5_s"), "{a}");
    }
}
