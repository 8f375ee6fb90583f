//! `--path` probes. Tracepoint back end: raw tracepoints on the network tracepoints every
//! kernel has. The function back ends (fentry, kprobe) add skb functions where the kernel
//! allows them; which one runs is chosen by trying, never by version.
use anyhow::{Context as _, Result, anyhow};
use aya::{Ebpf, programs::RawTracePoint};
use tracer_common::names;

use super::brief;

/// What `--backend` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// Tracepoints, plus function hooks where the kernel allows them.
    Auto,
    Tracepoint,
    Fentry,
    Kprobe,
}

/// The attached path probes; dropping them detaches.
pub struct PathProbes {
    /// The back end that runs (`tracepoint`, …), for the summary.
    pub backend: &'static str,
    links: Vec<aya::programs::raw_trace_point::RawTracePointLink>,
}

impl PathProbes {
    pub fn count(&self) -> usize {
        self.links.len()
    }
}

pub fn attach(ebpf: &mut Ebpf, choice: BackendChoice) -> Result<PathProbes> {
    let mut links = Vec::new();
    let last = names::PATH_TRACEPOINTS.len() - 1;
    for (i, (prog, tp)) in names::PATH_TRACEPOINTS.into_iter().enumerate() {
        let p: &mut RawTracePoint = ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?;
        let attached = p
            .load()
            .map_err(brief)
            .with_context(|| format!("cannot load the {tp} path probe"))
            .and_then(|()| p.attach(tp).map_err(brief).with_context(|| format!("cannot attach to the {tp} tracepoint")));
        match attached {
            Ok(id) => links.push(p.take_link(id)?),
            // sk_data_ready (Linux ≥ 6.6) only names socket deliveries; paths still end.
            Err(e) if i == last => log::info!("{e:#}: socket deliveries show as the last hop, not as delivered"),
            Err(e) => return Err(e),
        }
    }
    match choice {
        BackendChoice::Auto | BackendChoice::Tracepoint => Ok(PathProbes { backend: "tracepoint", links }),
        BackendChoice::Fentry | BackendChoice::Kprobe => Err(anyhow!(
            "--backend {} is not available in this build yet; use --backend tracepoint",
            if choice == BackendChoice::Fentry { "fentry" } else { "kprobe" }
        )),
    }
}
