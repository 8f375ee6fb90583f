//! One capture: validate everything, attach, read events until the end, detach, then write
//! exact totals. Nothing is written before the probes are attached; a failure before the end
//! removes what this run created.
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::{Config, MAX_CAPTURE};

pub mod reader;
pub mod run;
pub mod start;

use crate::{
    args::CaptureArgs,
    enrich::{netfilter::Attributor, tc::TcAttributor},
    filter,
    kernel::{btf::KernelBtf, kallsyms::Kallsyms, reasons::Reasons},
    model::conntrack::CtNames,
    probes::{self, netfilter::NfObservers},
    sinks::{self, Created},
};

/// Everything attached in the kernel; dropping it detaches (tc observer filters included).
pub struct Attached {
    pub ebpf: aya::Ebpf,
    pub probe: probes::kfree_skb::DropProbe,
    pub path: Option<probes::path::PathProbes>,
    pub netfilter: Option<(NfObservers, Attributor)>,
    pub tc: (Option<probes::tc::TcObservers>, TcAttributor),
}

/// What `capture` and `watch` check before anything is attached.
pub struct Checked {
    pub compiled: filter::expr::CompiledFilter,
    pub ifaces: Vec<tracer_common::IfacePattern>,
    pub netns: u32,
    pub pods: crate::pods::Pods,
    pub selection: probes::loader::PodSelection,
}

/// The probes attached, with what naming their records needs.
pub struct Loaded {
    pub attached: Attached,
    pub maps: probes::loader::Maps,
    pub reasons: Reasons,
    pub kallsyms: Kallsyms,
    /// The kernel's conntrack state and status names (drops' `ct`).
    pub ct: CtNames,
}

/// How the kernel side counts beyond what `capture` needs.
#[derive(Clone, Copy, Default)]
pub struct KernelOptions {
    /// Keep the netfilter observer slot in `DROP_STATS` keys (exact per-rule totals).
    pub stats_nf_slot: bool,
    /// Size of the event ring in bytes (a power of two, page multiple); `None`: the object's
    /// 8 MiB. Its pages are mapped twice, so it counts double in the RSS.
    pub ring_bytes: Option<u32>,
}

pub async fn capture(mut args: CaptureArgs) -> Result<()> {
    require_root()?;
    // Handle Ctrl-C/SIGTERM from here on: our cls_bpf observers must be removed on the way out.
    let signals = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    // Resolved once: every output records the same name.
    args.node_name = Some(crate::args::node_name(args.node_name.as_deref()));
    // Before the output checks: it points unnamed outputs into the bundle directory.
    let mut bundle = crate::bundle::Bundle::prepare(&mut args)?;
    if let (Some(b), Some(n)) = (&mut bundle, &args.node_name) {
        b.manifest_field("node", serde_json::json!(n));
    }
    let checked = check(&args)?;
    check_outputs(&args)?;
    if let Some(b) = &mut bundle {
        b.start();
    }
    let Loaded { attached, maps, reasons, kallsyms, ct } = attach(&args, &checked, KernelOptions::default())?;

    let mut created = Created::default();
    let inputs = run::Inputs { args: &args, compiled: &checked.compiled, reasons, kallsyms, ct, pods: checked.pods, bundle: bundle.take() };
    let result = run::run(inputs, attached, maps, signals, &mut created).await;
    if result.is_err() {
        created.remove_all();
    }
    let failures = result?;
    if !failures.is_empty() {
        bail!("{} output(s) stopped early ({}); the summary counts their missing drops in lost_events; the other outputs are complete", failures.len(), failures.join("; "));
    }
    Ok(())
}

/// The capture options every run checks before attaching: expression, interfaces, namespace,
/// snaplen, pods.
pub fn check(args: &CaptureArgs) -> Result<Checked> {
    let expression = args.expression.join(" ");
    let compiled = filter::expr::compile(&expression)?;
    let ifaces = filter::iface::parse_all(&args.ifaces)?;
    check_ifaces_exist(&args.ifaces)?;
    let netns = args.netns.as_deref().map(crate::netns::resolve).transpose()?.unwrap_or(0);
    if args.snaplen == 0 || args.snaplen as usize > MAX_CAPTURE {
        bail!("--snaplen must be between 1 and {MAX_CAPTURE}");
    }
    let pods = start::load_pods(args)?;
    let selection = start::select_pods(&pods, &args.pods)?;
    Ok(Checked { compiled, ifaces, netns, pods, selection })
}

/// Loads the programs and attaches every probe and observer.
pub fn attach(args: &CaptureArgs, c: &Checked, opts: KernelOptions) -> Result<Loaded> {
    let Checked { compiled, ifaces, netns, selection, .. } = c;
    let (compiled, netns) = (compiled, *netns);
    // Struct offsets and reasons from the kernel's BTF (mapped, not parsed: see btf.rs), read
    // here and freed before aya parses its own copy.
    mem("start");
    let btf = KernelBtf::load()?;
    mem("btf");
    let mut offsets = btf.offsets()?;
    let conntrack = btf.conntrack();
    conntrack.apply(&mut offsets);
    let ct = CtNames::from_enums(&conntrack.info, &conntrack.status_bits);
    if ct.known() {
        log::info!("conntrack facts read with the layout of {}", conntrack.source);
    } else {
        log::info!("no conntrack layout in this kernel's BTF (nf_conntrack not loaded?): drops carry no ct facts");
    }
    let reasons = Reasons::load(&btf)?;
    let nf_ctx_skb = btf.member_offset("bpf_nf_ctx", "skb").ok();
    let casts = probes::casts::probe(&btf, &offsets).inspect_err(|e| log::info!("filters copy packet bytes with bpf_probe_read_kernel: {e}")).ok();
    drop(btf);
    let kallsyms = Kallsyms::load()?;
    mem("kallsyms");
    // A netfilter drop's route tells a forwarded packet (`Config::forward_input_v4`): where
    // BTF gives `dst_entry.input` and kallsyms the forwarding functions' addresses.
    let forward = if args.no_netfilter || offsets.dst_input == u32::MAX {
        (0, 0)
    } else {
        (kallsyms.address("ip_forward").unwrap_or(0), kallsyms.address("ip6_forward").unwrap_or(0))
    };
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
        copy_len: filter_window(compiled, !args.pods.is_empty()),
        filter_ebpf: u32::from(compiled.is_active() && compiled.ebpf.is_some()),
        // `--pod` reads the copied window too.
        filter_direct: u32::from(compiled.is_active() && compiled.reads_in_place() && casts.is_some_and(|c| c.void) && args.pods.is_empty()),
        stats_nf_slot: u32::from(opts.stats_nf_slot && !args.no_netfilter),
        stack: u32::from(args.stack),
        direct_bytes: u32::from(casts.is_some()),
        direct_facts: u32::from(casts.is_some_and(|c| c.facts.is_some())),
        event_interval_ns: 1_000_000_000u64.checked_div(args.max_event_rate).map_or(0, |ns| ns.max(1)),
        forward_input_v4: forward.0,
        forward_input_v6: forward.1,
        path_reuse: u32::from(args.path && compiled.is_active() && netns == 0 && ifaces.is_empty() && args.pods.is_empty() && !probes::path::xdp_anywhere()),
    };

    let (mut ebpf, maps) = probes::loader::load(&offsets, &config, &probes::loader::Patches { filter: compiled, casts }, ifaces, selection, opts.ring_bytes)?;
    trim_heap();
    mem("loaded");
    let netfilter = if args.no_netfilter { None } else { start::start_netfilter(nf_ctx_skb, &ebpf, netns, args.path.then_some(maps.fds), (forward.0 != 0, forward.1 != 0))? };
    let tc = start::start_tc(&mut ebpf, netns, ifaces, args.no_tc);
    mem("observers");
    // aya's parse of the kernel BTF (the tp_btf/fentry attach targets) is ~16 MB of heap:
    // made after the load (the loader's own copy is gone then, see loader.rs) and dropped
    // once attached, so two copies never coexist.
    let aya_btf = aya::Btf::from_sys_fs().context("cannot read kernel BTF")?;
    let mut path = args.path.then(|| probes::path::attach(&mut ebpf, &aya_btf, args.backend)).transpose()?;
    if let Some(p) = path.as_mut() {
        p.receive_reuse = config.path_reuse != 0;
    }
    let probe = probes::kfree_skb::attach(&mut ebpf, &aya_btf)?;
    drop(aya_btf);
    trim_heap();
    log::info!("drop probe attached with {}", probe.backend);
    mem("attached");
    Ok(Loaded { attached: Attached { ebpf, probe, path, netfilter, tc }, maps, reasons, kallsyms, ct })
}

/// Output paths: creatable (checked without leaving anything), and at most one on stdout.
fn check_outputs(args: &CaptureArgs) -> Result<()> {
    let stdout = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    for (flag, p) in [("--pcap", &args.pcap), ("--ready-file", &args.ready_file), ("--progress-file", &args.progress_file)] {
        if stdout(p) {
            bail!("{flag} -: this output goes to a file, not stdout; give a file name");
        }
    }
    if stdout(&args.json) && stdout(&args.summary) {
        bail!("--json - and --summary - both go to stdout; send one of them to a file");
    }
    for p in [&args.pcap, &args.json, &args.summary, &args.ready_file, &args.progress_file].into_iter().flatten() {
        sinks::check_writable(p)?;
    }
    Ok(())
}

pub fn require_root() -> Result<()> {
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
fn filter_window(compiled: &crate::filter::expr::CompiledFilter, pods: bool) -> u32 {
    // VLAN-tagged Ethernet (18) + the IPv6 addresses (8..40).
    const POD_WINDOW: u32 = 18 + 40;
    let expr = if compiled.is_active() { compiled.window() } else { 0 };
    if pods { expr.max(POD_WINDOW) } else { expr }
}
