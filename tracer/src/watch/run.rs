//! The watch loop: records from the ring reader into the pipeline (whose one sink is the
//! flight recorder), every second the kernel totals into the metrics and the triggers,
//! dumps when asked, the pod table following the CNI cache; at SIGTERM/SIGINT detach,
//! write what dumps are pending, exit 0.
use std::{
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use tokio::signal::unix::Signal;

use super::{
    counts::Counts,
    dumps::{Dumps, Progress, Settings},
    http::{self, DumpRequest, Shared},
    metrics::Metrics,
    recorder::Recorder,
    rules::Rules,
    trigger::{Rate, Spec},
};
use crate::{
    args::{CaptureArgs, WatchArgs},
    enrich::netfilter::Attributor,
    model::{
        hooks::Slot,
        time::{Clock, mono_now},
    },
    pipeline::{Namer, Pipeline},
    pods::Pods,
    probes::loader::Maps,
    session::{
        Attached, Checked, Loaded,
        reader::{self, Reader},
    },
    sinks::Sinks,
};

/// How often the kernel totals are read (the metrics' and triggers' resolution).
const UPDATE: Duration = Duration::from_secs(1);
/// How often the CNI cache is checked for new pods.
const PODS: Duration = Duration::from_secs(2);

pub struct Signals {
    pub int: Signal,
    pub term: Signal,
    pub usr1: Signal,
}

pub struct Inputs {
    pub args: WatchArgs,
    pub cargs: CaptureArgs,
    pub checked: Checked,
    pub loaded: Loaded,
    pub listener: Option<std::net::TcpListener>,
    pub specs: Vec<Spec>,
    pub token: Option<String>,
}

fn wall() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Least time between two ruleset snapshots for held drops: a watch names rules a second
/// late rather than listing every ruleset continuously during a storm.
const SNAPSHOT_GAP: std::time::Duration = std::time::Duration::from_secs(1);
/// Drops held for their counter window at most (2,048 while a namespace's rules are first
/// read): ~2 KiB each, a second of the default event rate; past it the loop asks for the
/// window's counters at once and waits for them (they are read per chain: milliseconds).
const MAX_HELD: usize = 1024;

/// `tracer_info`'s labels.
fn info(probe: &str, node: &str) -> Vec<(String, String)> {
    vec![
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("kernel".into(), crate::session::run::kernel_release()),
        ("probe".into(), probe.to_string()),
        ("node".into(), node.to_string()),
    ]
}

pub async fn run(inputs: Inputs, mut sig: Signals) -> Result<()> {
    let Inputs { args, cargs, checked, loaded, listener, specs, token } = inputs;
    let Loaded { attached, mut maps, reasons, kallsyms, ct } = loaded;
    let Attached { ebpf, probe, path, netfilter, tc } = attached;
    let (observers, attributor) = netfilter.map_or((None, None), |(o, a)| (Some(o), Some(a)));
    let rules = match &observers {
        Some(o) => Some(Rules::new(rule_attributor(&o.slots), crate::netns::known()).context("cannot start the ruleset snapshot thread")?),
        _ => None,
    };
    let (tc_observers, tc_attributor) = tc;
    let netfilter_drop = reasons.value("NETFILTER_DROP");
    let mut enrich = crate::session::run::enricher(checked.pods, &reasons, attributor, tc_attributor);
    enrich.window_only = true;
    if let Some((_, windows)) = enrich.nf.as_mut() {
        windows.set_min_gap(SNAPSHOT_GAP);
        windows.set_max_held(MAX_HELD);
    }
    enrich.cilium = crate::session::run::cilium_attributor(&args.cilium_bpffs);
    let recorder = Recorder::new(args.keep, args.keep_bytes);
    let mut sinks = Sinks::default();
    sinks.push(Box::new(recorder.clone()));
    let mut pipe = Pipeline::new(Namer::new(reasons, kallsyms, Clock::new()).with_conntrack(ct), enrich, sinks);
    let reader = Reader::spawn(maps.ring()?, super::RING_BYTES as usize, super::RING_BYTES as usize).context("cannot start the ring reader thread")?;

    let node = args.node();
    let metrics = Arc::new(Mutex::new(Metrics::new(args.max_series, info(&probe.backend.to_string(), &node))));
    let ready = Arc::new(AtomicBool::new(false));
    let (dump_tx, mut dump_rx) = tokio::sync::mpsc::channel::<DumpRequest>(8);
    let bound = listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = listener {
        http::spawn(l, Shared { metrics: metrics.clone(), ready: ready.clone(), dumps: dump_tx, token: token.map(Arc::from) })?;
    }
    let dumps = Dumps::new(Settings {
        dir: args.dump_dir.clone(),
        after: args.after,
        interval: args.dump_interval,
        keep: args.keep,
        max: args.dump_max,
        node,
        probe: probe.backend.to_string(),
        args: cargs,
    });
    let mut w = Watcher {
        rates: specs.into_iter().map(Rate::new).collect(),
        counts: Counts::new(rules, netfilter_drop, args.keep + args.after + Duration::from_mins(1)),
        pods: PodWatch::new(&pipe.enrich.pods, args.cni_cache_dir.as_deref()),
        dumps,
        recorder,
        metrics,
    };
    {
        let mut m = w.metrics();
        for r in &w.rates {
            m.armed.insert(r.spec.name.clone(), 1);
            m.dumps.insert(r.spec.name.clone(), 0);
        }
    }
    ready.store(true, std::sync::atomic::Ordering::Release);
    if let Some(p) = &args.ready_file {
        // The address actually bound (scripts and tests may ask for port 0).
        let line = bound.map_or_else(|| "ready\n".to_string(), |a| format!("{a}\n"));
        std::fs::write(p, line).with_context(|| format!("cannot write {}", p.display()))?;
    }
    log::info!("watching; metrics on {}", args.listen);

    let mut next = reader::IDLE;
    let mut last_update = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = reader.records() => {}
            _ = sig.int.recv() => break,
            _ = sig.term.recv() => break,
            _ = sig.usr1.recv() => match w.dumps.request("signal", wall()) {
                Ok(p) => eprintln!("tracer: SIGUSR1: dumping to {} in {}s", p.display(), args.after.as_secs()),
                Err((_, why)) => eprintln!("tracer: SIGUSR1: no dump: {why}"),
            },
            Some(req) = dump_rx.recv() => {
                let _ = req.reply.send(w.dumps.request("http", wall()));
            }
        }
        next = reader.feed(&mut pipe);
        pipe.poll();
        if last_update.elapsed() >= UPDATE {
            last_update = Instant::now();
            w.second(&maps, &mut pipe)?;
        }
    }
    ready.store(false, std::sync::atomic::Ordering::Release);
    // Detach first (observers, then the probe), then read what is left in the ring.
    drop(observers);
    drop(tc_observers);
    drop(path);
    drop(probe);
    drop(ebpf);
    reader.finish_into(&mut pipe);
    pipe.finish();
    w.finish(&maps, &mut pipe)
}

/// The loop's state besides the pipeline.
struct Watcher {
    rates: Vec<Rate>,
    counts: Counts,
    pods: PodWatch,
    dumps: Dumps,
    recorder: Recorder,
    metrics: Arc<Mutex<Metrics>>,
}

impl Watcher {
    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every second: kernel totals into the metrics and triggers, recorder bounds, dumps,
    /// the CNI cache.
    fn second(&mut self, maps: &Maps, pipe: &mut Pipeline) -> Result<()> {
        pipe.flush();
        let now = wall();
        let metrics = self.metrics.clone();
        let mut m = metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let added = self.counts.update(maps, pipe, &mut m, now)?;
        let read = mono_now();
        for rate in &mut self.rates {
            let name = rate.spec.name.clone();
            if !self.dumps.armed(&name) {
                // Held back by --dump-interval: what is counted meanwhile never fires it.
                rate.reset_at(read);
                m.armed.insert(name, 0);
                continue;
            }
            for (l, n, at) in &added {
                if rate.spec.matches(l) {
                    rate.add(*at, *n);
                }
            }
            if rate.reached() {
                rate.reset_at(read);
                match self.dumps.request(&name, now) {
                    Ok(p) => eprintln!("tracer: trigger {name:?} fired: dumping to {} in {}s", p.display(), self.dumps.settings.after.as_secs()),
                    Err((_, why)) => log::info!("trigger {name:?}: {why}"),
                }
            }
            m.armed.insert(name.clone(), u64::from(self.dumps.armed(&name)));
        }
        {
            let mut ring = self.recorder.lock();
            ring.expire(now);
            m.recorder_bytes = ring.bytes;
            m.recorder_records = ring.records() as u64;
            m.recorder_evicted = ring.evicted;
        }
        let progress = Progress { caught_up: pipe.caught_up(), held: pipe.enrich.oldest_held() };
        self.dumps.start_due(&self.recorder, &self.counts, now, progress, false);
        self.dumps.collect(&mut m, false);
        drop(m);
        self.pods.follow(&mut pipe.enrich.pods);
        Ok(())
    }

    /// The run ended: the dumps still pending are written now, with what was recorded.
    fn finish(&mut self, maps: &Maps, pipe: &mut Pipeline) -> Result<()> {
        if !self.dumps.busy() {
            return Ok(());
        }
        eprintln!("tracer: writing the dumps still pending before exiting");
        let metrics = self.metrics.clone();
        let mut m = metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = wall();
        self.counts.update(maps, pipe, &mut m, now)?;
        while self.dumps.busy() {
            self.dumps.start_due(&self.recorder, &self.counts, now, Progress::default(), true);
            self.dumps.collect(&mut m, true);
        }
        Ok(())
    }
}

/// The rules' own attributor: the observers' slots, every namespace's rules still to read
/// (`Rules` lists them after ready; one left without observers has its drops' chain implied
/// by its ruleset).
fn rule_attributor(slots: &[Slot]) -> Attributor {
    Attributor::new(Vec::new(), slots.to_vec(), 0).with_loading(crate::netns::known())
}

/// Follows the CNI cache: reloads the pod table when its files change.
struct PodWatch {
    dir: std::path::PathBuf,
    stamp: Vec<(std::ffi::OsString, Option<SystemTime>)>,
    last: Instant,
}

impl PodWatch {
    fn new(pods: &Pods, dir: Option<&std::path::Path>) -> Self {
        let dir = dir.map_or_else(|| if pods.dir.as_os_str().is_empty() { crate::args::DEFAULT_CNI_CACHE_DIR.into() } else { pods.dir.clone() }, std::path::Path::to_path_buf);
        let stamp = Self::stamp(&dir);
        Self { dir, stamp, last: Instant::now() }
    }

    /// File names and modification times under the cache's `results/` (or the dir itself).
    fn stamp(dir: &std::path::Path) -> Vec<(std::ffi::OsString, Option<SystemTime>)> {
        let results = dir.join("results");
        let d = if results.is_dir() { results } else { dir.to_path_buf() };
        let mut v: Vec<_> = std::fs::read_dir(d).map(|r| r.flatten().map(|e| (e.file_name(), e.metadata().and_then(|m| m.modified()).ok())).collect()).unwrap_or_default();
        v.sort();
        v
    }

    fn follow(&mut self, pods: &mut Pods) {
        if self.last.elapsed() < PODS {
            return;
        }
        self.last = Instant::now();
        let stamp = Self::stamp(&self.dir);
        if stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        match Pods::load(&self.dir) {
            Ok(p) => {
                log::info!("CNI cache changed: {} pods", p.pods.len());
                *pods = p;
            }
            Err(e) => log::warn!("CNI cache changed but cannot be read: {e:#}; keeping the pods known so far"),
        }
    }
}
