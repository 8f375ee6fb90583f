//! From ready to summary: the event loop (records from the ring reader into the pipeline,
//! outputs flushed every second, progress), then detach, drain, and the exact totals.
use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result};
use tracer_common::counter;

use super::{Attached, reader::Reader};
use crate::{
    aggregate::KernelRow,
    args::CaptureArgs,
    enrich::{Enricher, ReasonCodes, window::Windows},
    filter::expr::CompiledFilter,
    kernel::{kallsyms::Kallsyms, reasons::Reasons},
    model::{
        time::{Clock, rfc3339},
        wire::ifname,
    },
    pipeline::{Namer, Pipeline},
    pods::Pods,
    probes::loader::Maps,
    sinks::{
        Created, Sinks,
        bundle::BundleSink,
        jsonl::JsonLines,
        pcapng::{PcapSink, Pcapng},
        progress::{Counts, Progress, ProgressFile},
        stdout::StdoutLines,
        summary::{self, RunEnd, SummarySink},
    },
};

/// How often outputs are flushed to disk (and netfilter windows closed).
const FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// What the run needs besides the probes: the user's options and the node's names.
pub struct Inputs<'a> {
    pub args: &'a CaptureArgs,
    pub compiled: &'a CompiledFilter,
    pub reasons: Reasons,
    pub kallsyms: Kallsyms,
    pub ct: crate::model::conntrack::CtNames,
    pub pods: Pods,
    pub bundle: Option<crate::bundle::Bundle>,
}

/// The outputs, in the order they receive records; files are created here (after attach).
fn sinks(args: &CaptureArgs, bundle: Option<crate::bundle::Bundle>, created: &mut Created) -> Result<Sinks> {
    let mut sinks = Sinks::default();
    if let Some(p) = &args.json {
        sinks.push(Box::new(JsonLines::create(p, args.node_name.as_deref())?));
        created.add(p);
    }
    if let Some(p) = &args.pcap {
        sinks.push(Box::new(PcapSink { pcap: Pcapng::create(p, args.snaplen, args.node_name.as_deref())?, all: args.all }));
        created.add(p);
    }
    if !args.quiet && args.json.as_deref() != Some(Path::new("-")) {
        sinks.push(Box::new(StdoutLines));
    }
    sinks.push(Box::new(SummarySink::new(args.summary.clone())));
    if let Some(b) = bundle {
        sinks.push(Box::new(BundleSink::new(b, args.clone())));
    }
    Ok(sinks)
}

/// Enrichment over the probes: pods, the netfilter attributor with its windows, tc programs.
pub fn enricher(pods: Pods, reasons: &Reasons, nf: Option<crate::enrich::netfilter::Attributor>, tc: crate::enrich::tc::TcAttributor) -> Enricher {
    let codes = ReasonCodes { netfilter_drop: reasons.value("NETFILTER_DROP"), tc_ingress: reasons.value("TC_INGRESS"), tc_egress: reasons.value("TC_EGRESS") };
    let mut enrich = Enricher::new(pods, codes);
    // The rules not read at start-up are read at the first drop that needs them.
    enrich.nf = nf.map(|a| (a, Windows::new(std::sync::Arc::new(super::start::ProbeNode))));
    enrich.tc = Some(tc);
    enrich
}

/// Ok carries the outputs that stopped early (their files are kept, cut at a whole record).
pub async fn run(
    inputs: Inputs<'_>,
    attached: Attached,
    mut maps: Maps,
    (mut sigint, mut sigterm): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    created: &mut Created,
) -> Result<Vec<String>> {
    let Inputs { args, compiled, reasons, kallsyms, ct, pods, bundle } = inputs;
    let Attached { ebpf, probe, path, netfilter, tc } = attached;
    let (observers, attributor) = netfilter.map_or((None, None), |(o, a)| (Some(o), Some(a)));
    let (tc_observers, tc_attributor) = tc;
    let mut enrich = enricher(pods, &reasons, attributor, tc_attributor);
    enrich.cilium = cilium_attributor(&args.cilium_bpffs);
    let mut pipe = Pipeline::new(Namer::new(reasons, kallsyms, Clock::new()).with_stacks(maps.stacks.take()).with_conntrack(ct), enrich, sinks(args, bundle, created)?);
    let path_backend = path.as_ref().map(|p| (p.backend, p.functions, p.note.clone(), p.receive_reuse));
    if path.is_some() {
        pipe.path = Some(crate::path::tracker::PathTracker::default());
        pipe.all = args.all;
    }
    // Half the ring queued at most: the ring is mapped twice (its size counts twice in RSS) and
    // drops that wait for their window hold memory too; the 64 MiB budget of a drop storm on a
    // kernel without netfilter links (every drop held) has room for no more.
    let ring_bytes = tracer_common::EVENTS_RING_BYTES as usize;
    let reader = Reader::spawn(maps.ring()?, ring_bytes, ring_bytes / 2).context("cannot start the ring reader thread")?;
    if let Some(p) = &args.ready_file {
        std::fs::write(p, b"ready\n").with_context(|| format!("cannot write {}", p.display()))?;
        created.add(p);
    }
    let panic_after = test_panic_after_events();
    let mut progress_file = args.progress_file.clone().map(ProgressFile::new);

    let start = Instant::now();
    let start_wall = rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut next = super::reader::IDLE;
    let mut last_flush = Instant::now();
    let mut progress = Progress::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = reader.records() => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = sleep_until(deadline) => break,
        }
        next = reader.feed(&mut pipe);
        if last_flush.elapsed() >= FLUSH {
            pipe.flush();
            last_flush = Instant::now();
            progress.tick(maps.counter(counter::MATCHED)?, maps.counter(counter::LOST)?);
        } else {
            pipe.poll();
        }
        report_progress(progress_file.as_mut(), &maps, &pipe)?;
        test_panic(panic_after, pipe.sinks.written());
    }
    progress.finish();
    // Detach first, so the counters stop moving, then read what is left in the ring.
    let backend = probe.backend;
    let program = probe.program_name();
    drop(observers);
    drop(tc_observers);
    drop(path);
    drop(probe);
    let probe_misses = ebpf.program(program).and_then(|p| p.fd().ok()).map(|fd| crate::kernel::bpf::recursion_misses(&fd)).transpose()?.unwrap_or(0);
    drop(ebpf);
    reader.finish_into(&mut pipe);
    pipe.finish();
    report_progress(progress_file.as_mut(), &maps, &pipe)?;
    let duration_s = start.elapsed().as_secs_f64();

    let drops = maps.counter(counter::MATCHED)?;
    let emitted = maps.counter(counter::EMITTED)?;
    let kernel_lost = maps.counter(counter::LOST)?;
    let stats_full = maps.counter(counter::STATS_FULL)?;
    if stats_full > 0 {
        eprintln!("tracer: warning: {stats_full} drops did not fit the per-reason table; by_reason/by_location/by_iface undercount by that much");
    }
    if emitted != pipe.emitted() + pipe.unreadable {
        log::warn!("kernel emitted {emitted} events, userspace read {}", pipe.emitted() + pipe.unreadable);
    }
    let rows = kernel_rows(&maps, &mut pipe)?;
    let totals = summary::Totals::new(drops, pipe.sinks.written(), maps.counter(counter::SEEN)?, probe_misses, maps.counter(counter::RATE_LIMITED)?);
    if probe_misses > 0 {
        eprintln!("tracer: warning: the kernel skipped the drop probe {probe_misses} times (a drop inside a running probe on the same CPU); those drops are not counted");
    }
    debug_assert!(kernel_lost <= totals.lost_events);
    let meta = summary::Meta {
        path: path_summary(path_backend, pipe.path.as_ref(), &maps)?,
        node: args.node_name.clone(),
        duration_s,
        expression: compiled.expression.clone(),
        filter: compiled.mode(),
        probe: backend.to_string(),
        kernel: kernel_release(),
        start: start_wall,
        end: rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?),
    };
    // The event outputs are complete (or cut at a whole record): keep them whatever follows.
    created.keep();
    let failures = pipe.sinks.failures();
    pipe.sinks.finish(&RunEnd { totals, rows, meta })?;
    Ok(failures)
}

/// The summary's `path` section (None without `--path`).
fn path_summary(probes: Option<(&'static str, usize, Option<String>, bool)>, tracker: Option<&crate::path::tracker::PathTracker>, maps: &Maps) -> Result<Option<summary::PathSummary>> {
    let (Some((backend, functions, fallback, receive_reuse)), Some(t)) = (probes, tracker) else { return Ok(None) };
    Ok(Some(summary::PathSummary { backend: backend.into(), functions, fallback, receive_reuse, packets: t.packets, lost_events: maps.counter(counter::PATH_LOST)? }))
}

pub fn kernel_rows(maps: &Maps, pipe: &mut Pipeline) -> Result<Vec<KernelRow>> {
    let stats = maps.drop_stats()?;
    Ok(stats
        .into_iter()
        .map(|(k, count)| {
            let ifname = ifname(&k.ifname);
            let (pod, tc) = pipe.enrich.row_owner(&k, &ifname);
            KernelRow {
                reason: pipe.names.reasons.name(k.reason),
                location: pipe.names.symbolize(k.location),
                ifname,
                ifindex: k.ifindex,
                netns: k.netns,
                count,
                pod,
                tc,
            }
        })
        .collect())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `TRACER_TEST_PANIC_AFTER_EVENTS=N` (tests only): panic once N events are in every output, to
/// prove a panic detaches everything and leaves readable outputs. A count, not a time: a slow
/// machine reaches it later, never with fewer events.
fn test_panic_after_events() -> Option<u64> {
    let v = std::env::var("TRACER_TEST_PANIC_AFTER_EVENTS").ok()?;
    Some(v.trim().parse().unwrap_or(0))
}

/// Panics once `written` reaches `TRACER_TEST_PANIC_AFTER_EVENTS`, when set.
fn test_panic(after: Option<u64>, written: u64) {
    if let Some(n) = after
        && written >= n
    {
        panic!("TRACER_TEST_PANIC_AFTER_EVENTS: test-only panic once {n} events are written");
    }
}

/// `--progress-file`: the counts so far (rewritten only when one changed).
pub fn report_progress(file: Option<&mut ProgressFile>, maps: &Maps, pipe: &Pipeline) -> Result<()> {
    let Some(file) = file else { return Ok(()) };
    file.update(Counts {
        drops: maps.counter(counter::MATCHED)?,
        read: pipe.emitted() + pipe.unreadable,
        lost: maps.counter(counter::LOST)?,
        rate_limited: maps.counter(counter::RATE_LIMITED)?,
        written: pipe.sinks.written(),
    })
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Cilium's reasons when its maps are pinned under `bpffs`; an unknown layout is one warning.
pub fn cilium_attributor(bpffs: &std::path::Path) -> Option<crate::enrich::cilium::CiliumAttributor> {
    crate::enrich::cilium::CiliumAttributor::new(bpffs).unwrap_or_else(|e| {
        eprintln!("tracer: warning: {e}");
        None
    })
}
