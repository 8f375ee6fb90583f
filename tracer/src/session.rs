//! One capture: validate everything, attach, read events until the end, detach, then write
//! exact totals. Nothing is written before the probes are attached; a failure before the end
//! removes what this run created.
use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::{Config, MAX_CAPTURE, counter};


use crate::{
    aggregate::KernelRow,
    attribution::{netfilter::Attributor, tc::TcAttributor},
    pods::Pods,
    probes::loader::PodSelection,
    netfilter::snapshot::Snapshot,
    probes::netfilter::Observers,
    cli::CaptureArgs,
    events,
    filter::{self, expr::CompiledFilter},
    kernel::{btf::KernelBtf, kallsyms::Kallsyms, reasons::Reasons},
    output::{self, Created, jsonl::JsonLines, pcapng::Pcapng, progress::Progress, summary, table},
    pipeline::{Clock, Pipeline, rfc3339},
    probes::{self, loader::Maps},
};

/// How often the ring buffer is drained (programs do not wake us; see bench/README).
const POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// How often outputs are flushed to disk.
const FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything attached in the kernel; dropping it detaches (tc observer filters included).
struct Attached {
    ebpf: aya::Ebpf,
    probe: probes::kfree_skb::DropProbe,
    path: Option<probes::path::PathProbes>,
    netfilter: Option<(Observers, Attributor)>,
    tc: (Option<probes::tc::Observers>, TcAttributor),
}

pub async fn capture(mut args: CaptureArgs) -> Result<()> {
    require_root()?;
    // Handle Ctrl-C/SIGTERM from here on: our cls_bpf observers must be removed on the way out.
    let signals = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    // Before the output checks: it points unnamed outputs into the bundle directory.
    let mut bundle = crate::bundle::Bundle::prepare(&mut args)?;
    let expression = args.expression.join(" ");
    let compiled = filter::expr::compile(&expression)?;
    let ifaces = filter::iface::parse_all(&args.ifaces)?;
    check_ifaces_exist(&args.ifaces)?;
    let netns = args.netns.as_deref().map(crate::netns::resolve).transpose()?.unwrap_or(0);
    if args.snaplen == 0 || args.snaplen as usize > MAX_CAPTURE {
        bail!("--snaplen must be between 1 and {MAX_CAPTURE}");
    }
    check_outputs(&args)?;
    let pods = load_pods(&args)?;
    let selection = select_pods(&pods, &args.pods)?;

    // Struct offsets and reasons from the kernel's BTF (mapped, not parsed: see btf.rs), read
    // here and freed before aya parses its own copy.
    mem("start");
    let btf = KernelBtf::load()?;
    mem("btf");
    let offsets = btf.offsets()?;
    let reasons = Reasons::load(&btf)?;
    let nf_ctx_skb = btf.member_offset("bpf_nf_ctx", "skb").ok();
    drop(btf);
    let kallsyms = Kallsyms::load()?;
    mem("kallsyms");
    let config = Config {
        snaplen: args.snaplen,
        filter_eth_len: u32::try_from(compiled.ethernet.len())?,
        filter_raw_len: u32::try_from(compiled.raw_ip.len())?,
        filter_active: u32::from(compiled.is_active()),
        netns,
        iface_patterns: u32::try_from(ifaces.len())?,
        reason_consumed: reasons.consumed.unwrap_or(u32::MAX),
        reason_not_dropped: reasons.not_dropped_yet.unwrap_or(0),
        reason_netfilter_drop: reasons.value("NETFILTER_DROP").unwrap_or(u32::MAX),
        reason_tc_ingress: reasons.value("TC_INGRESS").unwrap_or(u32::MAX),
        reason_tc_egress: reasons.value("TC_EGRESS").unwrap_or(u32::MAX),
        pod_filter: u32::from(!args.pods.is_empty()),
        path: u32::from(args.path),
        copy_len: filter_window(&compiled, !args.pods.is_empty()),
        filter_ebpf: u32::from(compiled.is_active() && compiled.ebpf.is_some()),
        event_interval_ns: 1_000_000_000u64.checked_div(args.max_event_rate).map_or(0, |ns| ns.max(1)),
    };

    if let Some(b) = &mut bundle {
        b.start();
    }
    let (mut ebpf, maps) = probes::loader::load(&offsets, &config, &compiled, &ifaces, &selection)?;
    trim_heap();
    mem("loaded");
    let netfilter = if args.no_netfilter { None } else { start_netfilter(nf_ctx_skb, &ebpf, netns, args.path.then_some(maps.fds))? };
    let tc = start_tc(&mut ebpf, netns, &ifaces, args.no_tc, args.path);
    mem("observers");
    // aya's parse of the kernel BTF (the tp_btf/fentry attach targets) is ~16 MB of heap:
    // made after the load (the loader's own copy is gone then, see loader.rs) and dropped
    // once attached, so two copies never coexist.
    let aya_btf = aya::Btf::from_sys_fs().context("cannot read kernel BTF")?;
    let path = args.path.then(|| probes::path::attach(&mut ebpf, &aya_btf, args.backend)).transpose()?;
    let probe = probes::kfree_skb::attach(&mut ebpf, &aya_btf)?;
    drop(aya_btf);
    trim_heap();
    log::info!("drop probe attached with {}", probe.backend);
    mem("attached");

    let mut created = Created::default();
    let drop_probe = probe.backend.to_string();
    let attached = Attached { ebpf, probe, path, netfilter, tc };
    let mut result = run(&args, &compiled, (reasons, kallsyms, pods), attached, maps, signals, &mut created).await;
    if let (Ok(_), Some(b)) = (&result, bundle.take()) {
        let dir = b.dir().to_path_buf();
        if let Err(e) = b.finish(&args, &drop_probe).map(|archive| eprintln!("tracer: bundle in {} and {}", dir.display(), archive.display())) {
            result = Err(e);
        }
    }
    if result.is_err() {
        created.remove_all();
    }
    let failures = result?;
    if !failures.is_empty() {
        bail!("{} output(s) stopped early ({}); the summary counts their missing drops in lost_events; the other outputs are complete", failures.len(), failures.join("; "));
    }
    Ok(())
}

#[expect(clippy::too_many_lines, reason = "one capture from ready to summary, read top to bottom")]
async fn run(
    args: &CaptureArgs,
    compiled: &CompiledFilter,
    (reasons, kallsyms, pods): (Reasons, Kallsyms, Pods),
    attached: Attached,
    mut maps: Maps,
    (mut sigint, mut sigterm): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    created: &mut Created,
) -> Result<Vec<String>> {
    // Ok carries the outputs that stopped early (their files are kept, cut at a whole record).
    let Attached { ebpf, probe, path, netfilter, tc } = attached;
    let mut pipe = Pipeline::new(reasons, kallsyms, Clock::new());
    let path_backend = path.as_ref().map(|p| (p.backend, p.functions, p.note.clone()));
    if path.is_some() {
        pipe.path = Some(crate::path::tracker::PathTracker::default());
        pipe.all = args.all;
    }
    pipe.pods = pods;
    let observers = netfilter.map(|(o, a)| {
        pipe.nf = Some(a);
        o
    });
    let (tc_observers, tc_attributor) = tc;
    pipe.tc = Some(tc_attributor);
    if let Some(p) = &args.json {
        pipe.json = Some(JsonLines::create(p)?);
        created.add(p);
    }
    if let Some(p) = &args.pcap {
        pipe.pcap = Some(Pcapng::create(p, args.snaplen)?);
        created.add(p);
    }
    pipe.text = !args.quiet && args.json.as_deref() != Some(Path::new("-"));
    if let Some(p) = &args.ready_file {
        std::fs::write(p, b"ready\n").with_context(|| format!("cannot write {}", p.display()))?;
        created.add(p);
    }
    let panic_at = test_panic_after_ready();

    let start = Instant::now();
    let start_wall = rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut poll = tokio::time::interval(POLL);
    let mut last_flush = Instant::now();
    let mut progress = Progress::new();
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = sleep_until(deadline) => break,
        }
        drain(&mut maps, &mut pipe);
        if let Some(at) = panic_at
            && start.elapsed() >= at
        {
            panic!("TRACER_TEST_PANIC_AFTER_READY: test-only panic {} ms after ready", at.as_millis());
        }
        if last_flush.elapsed() >= FLUSH {
            pipe.flush();
            last_flush = Instant::now();
            progress.tick(maps.counter(counter::MATCHED)?, maps.counter(counter::LOST)?);
        }
    }
    progress.finish();
    // Detach first, so the counters stop moving, then read what is left in the ring.
    let backend = probe.backend;
    let program = probe.program_name();
    drop(observers);
    drop(tc_observers);
    drop(path);
    drop(probe);
    let probe_misses = ebpf
        .program(program)
        .and_then(|p| p.fd().ok())
        .map(probes::recursion_misses)
        .transpose()?
        .unwrap_or(0);
    drop(ebpf);
    drain(&mut maps, &mut pipe);
    pipe.finish_paths();
    pipe.flush();
    let duration_s = start.elapsed().as_secs_f64();

    let drops = maps.counter(counter::MATCHED)?;
    let emitted = maps.counter(counter::EMITTED)?;
    let kernel_lost = maps.counter(counter::LOST)?;
    let stats_full = maps.counter(counter::STATS_FULL)?;
    if stats_full > 0 {
        eprintln!("tracer: warning: {stats_full} drops did not fit the per-reason table; by_reason/by_location/by_iface undercount by that much");
    }
    if emitted != pipe.emitted + pipe.unreadable {
        log::warn!("kernel emitted {emitted} events, userspace read {}", pipe.emitted + pipe.unreadable);
    }
    // Exact: the drops whose event is not in every output (lost in the ring, unreadable, or
    // cut off by an output that failed).
    let written = pipe.written();
    let lost_events = drops.saturating_sub(written);
    let rows = kernel_rows(&maps, &mut pipe)?;
    let totals = summary::Totals { drops, lost_events, events: written, seen_drops: maps.counter(counter::SEEN)?, probe_misses, rate_limited: maps.counter(counter::RATE_LIMITED)? };
    if probe_misses > 0 {
        eprintln!("tracer: warning: the kernel skipped the drop probe {probe_misses} times (a drop inside a running probe on the same CPU); those drops are not counted");
    }
    debug_assert!(kernel_lost <= lost_events);
    let path = match (path_backend, &pipe.path) {
        (Some((backend, functions, fallback)), Some(t)) => Some(summary::PathSummary {
            backend: backend.into(),
            functions,
            fallback,
            packets: t.packets,
            lost_events: maps.counter(counter::PATH_LOST)?,
        }),
        _ => None,
    };
    let meta = summary::Meta {
        path,
        duration_s,
        expression: compiled.expression.clone(),
        filter: compiled.mode(),
        probe: backend.to_string(),
        kernel: kernel_release(),
        start: start_wall,
        end: rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?),
    };
    let s = summary::build(&totals, &rows, &pipe.flows, &pipe.rules, &pipe.by_pod, meta);
    // The event outputs are complete (or cut at a whole record): keep them whatever follows.
    created.keep();
    let failures = pipe.output_failures();
    drop(pipe);
    if let Some(p) = &args.summary {
        let mut bytes = serde_json::to_vec_pretty(&s)?;
        bytes.push(b'\n');
        output::write_atomic(p, &bytes)?;
    }
    eprint!("{}", table::render(&s));
    Ok(failures)
}

/// Output paths: creatable (checked without leaving anything), and at most one on stdout.
fn check_outputs(args: &CaptureArgs) -> Result<()> {
    let stdout = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    for (flag, p) in [("--pcap", &args.pcap), ("--ready-file", &args.ready_file)] {
        if stdout(p) {
            bail!("{flag} -: this output goes to a file, not stdout; give a file name");
        }
    }
    if stdout(&args.json) && stdout(&args.summary) {
        bail!("--json - and --summary - both go to stdout; send one of them to a file");
    }
    for p in [&args.pcap, &args.json, &args.summary, &args.ready_file].into_iter().flatten() {
        output::check_writable(p)?;
    }
    Ok(())
}

/// `TRACER_TEST_PANIC_AFTER_READY=MS` (tests only): panic MS milliseconds after the ready file,
/// to prove a panic detaches everything and leaves readable outputs.
fn test_panic_after_ready() -> Option<std::time::Duration> {
    let v = std::env::var("TRACER_TEST_PANIC_AFTER_READY").ok()?;
    Some(std::time::Duration::from_millis(v.trim().parse().unwrap_or(0)))
}

/// Snapshots the rulesets of the namespaces in scope and attaches observers before every hook
/// entry they register. Without BPF netfilter links (< 6.4) there are no observers and drops are
/// attributed by the rule counters alone.
fn start_netfilter(ctx_skb: Option<u32>, ebpf: &aya::Ebpf, only: u32, path: Option<probes::loader::MapFds>) -> Result<Option<(Observers, Attributor)>> {
    let mut spaces = crate::netns::known();
    if only != 0 {
        spaces.retain(|n| n.inode == only);
    }
    let snapshots: Vec<(crate::netns::Netns, Snapshot)> = std::thread::scope(|s| {
        let handles: Vec<_> = spaces.iter().map(|ns| s.spawn(move || (ns.clone(), Snapshot::take(&ns.path)))).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let missing: std::collections::BTreeSet<&str> = snapshots.iter().flat_map(|(_, s)| s.missing.iter().map(String::as_str)).collect();
    if !missing.is_empty() {
        let tools: Vec<&str> = missing.into_iter().collect();
        eprintln!(
            "tracer: warning: not found in PATH: {}; netfilter drops in the rulesets they read are counted but not attributed to a table, chain or rule (install them or fix PATH)",
            tools.join(", ")
        );
    }
    let Some(ctx_skb) = ctx_skb else {
        // No observers: each drop is attributed by the rule counters of its window, any hook.
        log::info!("this kernel has no BPF netfilter programs (Linux < 6.4): netfilter drops are attributed by rule counters only");
        let mut attributor = Attributor::new(snapshots, Vec::new());
        attributor.unobserved_drops = true;
        return Ok(Some((Observers::default(), attributor)));
    };
    let maps = probes::netfilter::asm::Maps {
        ring: probes::loader::fd(ebpf, tracer_common::names::NF_RING)?,
        // With --path the observers also report hops of followed packets.
        path: path.map(|f| probes::netfilter::asm::PathMaps { track: f.path_track, events: f.events, counters: f.counters }),
    };
    let plans = snapshots
        .iter()
        .map(|(ns, snap)| (ns.clone(), probes::netfilter::plan(ns.inode, &crate::netfilter::entries(snap))))
        .collect();
    let observers = probes::netfilter::attach(plans, i16::try_from(ctx_skb)?, maps)?;
    for f in &observers.failures {
        eprintln!("tracer: warning: no netfilter observers in namespace {f}; its netfilter drops carry no rule");
    }
    log::info!("{} netfilter observers in {} namespaces", observers.links(), snapshots.len());
    let attributor = Attributor::new(snapshots, observers.slots.clone());
    Ok(Some((observers, attributor)))
}

/// Places tc observers on every hook in scope that runs BPF programs (after removing leftovers
/// of a killed earlier run). Without observers (`--no-tc`, or the kernel refused them), tc drops
/// are still attributed from the programs on their hook when a drop is seen there.
fn start_tc(ebpf: &mut aya::Ebpf, netns: u32, ifaces: &[tracer_common::IfacePattern], off: bool, path: bool) -> (Option<probes::tc::Observers>, TcAttributor) {
    let spaces = crate::netns::known();
    if off {
        return (None, TcAttributor::new(Vec::new(), spaces));
    }
    let scope = probes::tc::Scope { netns, ifaces: ifaces.to_vec(), path };
    match probes::tc::attach(ebpf, &spaces, &scope) {
        Ok(obs) => {
            if obs.cleaned > 0 {
                eprintln!("tracer: removed {} tc observer filters left by a killed earlier run", obs.cleaned);
            }
            log::info!("{} tc observers on {} hooks", obs.count(), obs.hooks.len());
            let attributor = TcAttributor::new(obs.hooks.clone(), spaces);
            (Some(obs), attributor)
        }
        Err(e) => {
            eprintln!("tracer: warning: no tc observers ({e:#}); a tc drop names its program only when it is alone on its hook");
            (None, TcAttributor::new(Vec::new(), spaces))
        }
    }
}

/// The CNI cache: required (an error when unreadable) with --pod or --cni-cache-dir, else
/// best effort (a node without one just has no pod names).
fn load_pods(args: &CaptureArgs) -> Result<Pods> {
    match &args.cni_cache_dir {
        Some(dir) => Pods::load(dir),
        None if !args.pods.is_empty() => Pods::load(Path::new(crate::pods::DEFAULT_CACHE_DIR)),
        None => Ok(Pods::load(Path::new(crate::pods::DEFAULT_CACHE_DIR)).unwrap_or_else(|e| {
            log::info!("no pod names: {e:#}");
            Pods::default()
        })),
    }
}

/// `--pod` → what the kernel filter matches: namespaces, host-side interfaces, addresses.
fn select_pods(pods: &Pods, specs: &[String]) -> Result<PodSelection> {
    let mut sel = PodSelection::default();
    for spec in specs {
        let p = pods.select(spec)?;
        if p.netns.is_empty() && p.host_ifs.is_empty() && p.ips.is_empty() {
            bail!("pod {spec} has no network namespace, interface or IP in the CNI cache; is it running on this node?");
        }
        if !p.live {
            eprintln!("tracer: warning: pod {spec} has no live network namespace (stale CNI cache entry); matching its IPs only");
        }
        sel.netns.extend(&p.netns);
        sel.ifaces.extend(p.host_ifs.iter().map(|&(_, ifindex, netns)| tracer_common::PodIfKey { netns, ifindex }));
        sel.addrs.extend(p.ips.iter().map(|ip| match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        }));
    }
    if sel.netns.len() > 256 || sel.ifaces.len() > 256 || sel.addrs.len() > 1024 {
        bail!("too many pods selected: at most 256 namespaces, 256 interfaces and 1024 addresses");
    }
    Ok(sel)
}

fn drain(maps: &mut Maps, pipe: &mut Pipeline) {
    while let Some(item) = maps.events.next() {
        pipe.handle(&item);
    }
}

fn kernel_rows(maps: &Maps, pipe: &mut Pipeline) -> Result<Vec<KernelRow>> {
    let stats = maps.drop_stats()?;
    Ok(stats
        .into_iter()
        .map(|(k, count)| {
            let ifname = events::ifname(&k.ifname);
            let (pod, tc) = pipe.row_owner(&k, &ifname);
            KernelRow {
                reason: pipe.reasons().name(k.reason),
                location: pipe.symbolize(k.location),
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

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tracer capture must run as root (it loads eBPF programs): run it with sudo");
    }
    Ok(())
}

/// A plain interface name (no glob) must exist in this namespace or a named one; a typo would
/// otherwise capture nothing, silently.
fn check_ifaces_exist(names: &[String]) -> Result<()> {
    for name in names.iter().filter(|n| !filter::iface::is_glob(n)) {
        if !crate::netns::iface_exists_anywhere(name) {
            bail!("unknown interface {name:?}: not in this network namespace nor in any under /var/run/netns (see `ip link`)");
        }
    }
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Gives freed heap back to the system: the BTF parses of start-up are freed by now, and the
/// peak RSS (bounded, tests/tests/robust/) must not keep them.
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
}

/// Logs this process's memory (`VmRSS`, `VmHWM`) at a start-up phase (`-vv`).
fn mem(phase: &str) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| status.lines().find(|l| l.starts_with(k)).map_or("?", |l| l[k.len()..].trim());
    log::debug!("memory after {phase}: VmRSS {} VmHWM {}", get("VmRSS:"), get("VmHWM:"));
}

/// Packet bytes the kernel filters read (copied for every drop they see; an event's snaplen
/// is copied only for drops that become events): the expression's window, and the link and IP
/// headers' addresses for `--pod`.
fn filter_window(compiled: &CompiledFilter, pods: bool) -> u32 {
    // VLAN-tagged Ethernet (18) + the IPv6 addresses (8..40).
    const POD_WINDOW: u32 = 18 + 40;
    let expr = if compiled.is_active() { compiled.window() } else { 0 };
    if pods { expr.max(POD_WINDOW) } else { expr }
}
