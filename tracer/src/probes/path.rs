//! `--path` probes. Tracepoint back end: raw tracepoints on the network tracepoints every
//! kernel has; they find packets and follow them. The function back ends add kernel skb
//! functions as hops where the kernel allows them: fentry (BTF-typed, cheapest) or kprobes.
//! Which one runs is chosen by trying, never from the kernel version.
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{BtfTracePoint, FEntry, KProbe, RawTracePoint},
};
use tracer_common::names;

use super::brief;

/// What `--backend` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// Tracepoints, plus function hooks (fentry, else kprobes) where the kernel allows them.
    Auto,
    /// Network tracepoints only.
    Tracepoint,
    /// Tracepoints plus fentry on skb functions (an error where the kernel refuses fentry).
    Fentry,
    /// Tracepoints plus kprobes on skb functions (an error where the kernel has no kprobes).
    Kprobe,
}

/// The attached path probes; dropping them detaches.
pub struct PathProbes {
    /// The back end that runs: `tracepoint`, `fentry` or `kprobe`.
    pub backend: &'static str,
    /// Kernel functions hooked (0 for `tracepoint`).
    pub functions: usize,
    /// Why a function back end is not running, for `auto`.
    pub note: Option<String>,
    /// A veth peer's receive takes the verdict its driver hook gave (`Config::path_reuse`).
    pub receive_reuse: bool,
    links: Vec<Box<dyn std::any::Any>>,
}

impl PathProbes {
    pub fn count(&self) -> usize {
        self.links.len()
    }
}

/// Whether an interface of a known namespace runs an XDP program (or cannot be listed): a
/// veth's XDP program runs between the veth's driver hook and its peer's receive and may
/// change the bytes, so the receive cannot take the verdict the driver hook gave
/// (`Config::path_reuse`).
pub fn xdp_anywhere() -> bool {
    let found = crate::netns::known().iter().find_map(|ns| {
        let links = crate::kernel::rtnl::Rtnl::open_in(&ns.path).ok().and_then(|mut r| r.links().ok());
        match links {
            Some(l) if !l.iter().any(|l| l.xdp) => None,
            Some(l) => Some(format!("an XDP program on {} in {}", l.iter().find(|l| l.xdp).map_or("?", |l| l.name.as_str()), ns.name)),
            None => Some(format!("the interfaces of {} not listed", ns.name)),
        }
    });
    if let Some(why) = &found {
        log::info!("{why}: every receive applies the filters");
    }
    found.is_some()
}

pub fn attach(ebpf: &mut Ebpf, btf: &aya::Btf, choice: BackendChoice) -> Result<PathProbes> {
    let mut links: Vec<Box<dyn std::any::Any>> = Vec::new();
    let last = names::PATH_TRACEPOINTS.len() - 1;
    for (i, (prog, tp)) in names::PATH_TRACEPOINTS.into_iter().enumerate() {
        if let Some(link) = tp_btf_twin(ebpf, btf, tp) {
            links.push(link);
            continue;
        }
        let p: &mut RawTracePoint = ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?;
        let attached = p
            .load()
            .map_err(brief)
            .with_context(|| format!("cannot load the {tp} path probe"))
            .and_then(|()| p.attach(tp).map_err(brief).with_context(|| format!("cannot attach to the {tp} tracepoint")));
        match attached {
            Ok(id) => links.push(Box::new(p.take_link(id)?)),
            // sk_data_ready (Linux ≥ 6.6) only names socket deliveries; paths still end.
            Err(e) if i == last => log::info!("{e:#}: socket deliveries show as the last hop, not as delivered"),
            Err(e) => return Err(e),
        }
    }
    let mut probes = PathProbes { backend: "tracepoint", functions: 0, note: None, receive_reuse: false, links };
    let result = match choice {
        BackendChoice::Tracepoint => return Ok(probes),
        BackendChoice::Fentry => fentry(ebpf, btf).map(|l| ("fentry", l)),
        BackendChoice::Kprobe => kprobe(ebpf).map(|l| ("kprobe", l)),
        BackendChoice::Auto => fentry(ebpf, btf).map(|l| ("fentry", l)).or_else(|fe| {
            kprobe(ebpf).map(|l| ("kprobe", l)).map_err(|kp| anyhow!("fentry: {fe:#}; kprobe: {kp:#}"))
        }),
    };
    match result {
        Ok((backend, links)) => {
            probes.backend = backend;
            probes.functions = links.len();
            probes.links.extend(links);
        }
        Err(e) if choice == BackendChoice::Auto => {
            log::info!("no function hooks for --path ({e:#}); following packets with tracepoints only");
            probes.note = Some(format!("{e:#}"));
        }
        Err(e) => return Err(e.context(format!("--backend {choice:?} is not usable on this kernel; try --backend tracepoint").to_lowercase())),
    }
    Ok(probes)
}

/// The `tp_btf` twin of an entry hook's raw tracepoint program, loaded and attached; None where
/// there is none or the kernel refuses it (the raw program then runs: same work, more reads).
fn tp_btf_twin(ebpf: &mut Ebpf, btf: &aya::Btf, tp: &str) -> Option<Box<dyn std::any::Any>> {
    let (prog, _) = names::PATH_TP_BTF.iter().find(|(_, t)| *t == tp)?;
    let attached = (|| -> Result<Box<dyn std::any::Any>> {
        let p: &mut BtfTracePoint = ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?;
        p.load(tp, btf).map_err(brief)?;
        let id = p.attach().map_err(brief)?;
        Ok(Box::new(p.take_link(id)?))
    })();
    attached.map_err(|e| log::debug!("tp_btf {tp} unavailable ({e:#}); the raw tracepoint program follows packets there")).ok()
}

/// One fentry program per function; functions the kernel does not have are skipped. An error
/// when none attaches (e.g. fentry refused outright).
fn fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<Vec<Box<dyn std::any::Any>>> {
    let mut links: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut first_err = None;
    for (func, _) in names::PATH_FUNCTIONS {
        let name = format!("path_fe_{}", func.trim_start_matches('_'));
        let p: &mut FEntry = ebpf.program_mut(&name).ok_or_else(|| anyhow!("no program {name}"))?.try_into()?;
        let r = p.load(func, btf).map_err(brief).and_then(|()| p.attach().map_err(brief));
        match r {
            Ok(id) => links.push(Box::new(p.take_link(id)?)),
            Err(e) => {
                log::debug!("fentry {func}: {e:#}");
                first_err.get_or_insert(e);
            }
        }
    }
    if links.is_empty() {
        bail!("{}", first_err.map_or_else(|| "no function attached".to_string(), |e| format!("{e:#}")));
    }
    Ok(links)
}

/// kprobes: one program per skb argument position, attached to each function using it.
fn kprobe(ebpf: &mut Ebpf) -> Result<Vec<Box<dyn std::any::Any>>> {
    let mut links: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut first_err = None;
    for arg in [0u8, 1, 2] {
        let name = format!("path_kprobe_a{arg}");
        let p: &mut KProbe = ebpf.program_mut(&name).ok_or_else(|| anyhow!("no program {name}"))?.try_into()?;
        let funcs: Vec<&str> = names::PATH_FUNCTIONS.iter().filter(|(_, a)| *a == arg).map(|(f, _)| *f).collect();
        if funcs.is_empty() {
            continue;
        }
        if let Err(e) = p.load().map_err(brief) {
            first_err.get_or_insert(e);
            continue;
        }
        for func in funcs {
            match p.attach(func, 0).map_err(brief) {
                Ok(id) => links.push(Box::new(p.take_link(id)?)),
                Err(e) => {
                    log::debug!("kprobe {func}: {e:#}");
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if links.is_empty() {
        bail!("{}", first_err.map_or_else(|| "no function attached".to_string(), |e| format!("{e:#}")));
    }
    Ok(links)
}
