//! `tracer watch`: the mode left running on every node. The capture's start-up and pipeline
//! with two more sinks' worth of state: exact metrics from the kernel's counters (served over
//! HTTP), a flight recorder of the newest drops, and dumps (bundles of the recorder's window)
//! on SIGUSR1, `POST /dump` and triggers. Everything the user can get wrong is checked before
//! anything is attached.
mod counts;
mod dump;
mod dumps;
mod http;
pub mod metrics;
mod recorder;
mod rules;
mod run;
pub mod trigger;

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    args::WatchArgs,
    session::{self, KernelOptions},
};

/// The event ring of a watch: 2 MiB (the capture's is 8 MiB), its pages mapped twice and so
/// counted twice in the RSS the agent must keep low. Watch sends at most `--max-event-rate`
/// events per CPU per second (2,000 by default, ~0.5 KiB each at the default snaplen) and drains
/// the ring every 10 ms: 2 MiB hold ten such drains' worth on a 20-CPU node. Past it, events
/// are counted lost; the metrics come from the kernel's counters either way.
pub(crate) const RING_BYTES: u32 = 2 << 20;

pub async fn run(args: WatchArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tracer watch must run as root (it loads eBPF programs): run it with sudo or as a privileged DaemonSet");
    }
    // From here on Ctrl-C/SIGTERM end the run cleanly (observers are removed on the way out).
    let signals = run::Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())?, usr1: signal(SignalKind::user_defined1())? };
    let specs = args.triggers.iter().map(|t| trigger::parse(t)).collect::<Result<Vec<_>>>()?;
    let mut names = std::collections::HashSet::new();
    for s in &specs {
        if !names.insert(s.name.as_str()) || matches!(s.name.as_str(), "signal" | "http") {
            bail!("--trigger {:?}: the name {:?} is already taken; give each trigger its own NAME: prefix", s.name, s.name);
        }
    }
    if args.keep_bytes < recorder::MIN_KEEP_BYTES {
        bail!("--keep-bytes {}: too small to keep the last minutes of drops; give at least 1MiB (e.g. --keep-bytes 64MiB)", args.keep_bytes);
    }
    if args.keep.is_zero() {
        bail!("--keep 0s keeps nothing; give a duration such as 10m");
    }
    if args.max_series == 0 {
        bail!("--max-series 0 would fold every drop into `other`; give at least 1 (default 2000)");
    }
    if args.dump_max == 0 {
        bail!("--dump-max 0 would remove every dump once written; give at least 1");
    }
    let token = args.dump_token_file.as_deref().map(read_token).transpose()?;
    dump::prepare_dir(&args.dump_dir)?;
    if let Some(p) = &args.ready_file {
        crate::sinks::check_writable(p)?;
    }
    let listener = http::bind(&args.listen)?;
    let cargs = args.capture_args();
    let checked = session::check(&cargs)?;
    let loaded = session::attach(&cargs, &checked, KernelOptions { stats_nf_slot: true, ring_bytes: Some(RING_BYTES) })?;
    run::run(run::Inputs { args, cargs, checked, loaded, listener, specs, token }, signals).await
}

fn read_token(p: &std::path::Path) -> Result<String> {
    let t = std::fs::read_to_string(p).with_context(|| format!("--dump-token-file {}: cannot read it", p.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        bail!("--dump-token-file {}: the token must be at least 16 characters", p.display());
    }
    Ok(t)
}
