//! tc observers: which BPF program on a hook (tcx link or `cls_bpf` filter, ingress or egress)
//! shot a packet. Before each program of a hook runs one of our observers (`tracer_tc_*`, see
//! tracer-ebpf/src/tc.rs), and one runs after the last; the drop probe records the last
//! observer the packet passed, and the program(s) between that observer and the next are the
//! ones that dropped it. Observers return "continue" (`TC_ACT_UNSPEC` = `TCX_NEXT`): no verdict
//! changes.
//!
//! tcx observers are links (fds): they vanish with us. `cls_bpf` observers are filters, which
//! outlive a killed process: they are named `tracer_tc pid=N`, removed on exit, and filters of
//! a dead earlier run are removed at start.
pub mod plan;

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{ProgramError, SchedClassifier, TcAttachType},
};
use tracer_common::{IfacePattern, names, tc};

use crate::{
    kernel::{
        bpf::{self, ProgInfo},
        rtnl::{CLSACT_EGRESS, CLSACT_INGRESS, Filter, Rtnl},
    },
    model::hooks::Hook,
    netns::Netns,
};
use plan::Placement;

/// Which hooks get observers.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    /// Only this namespace (inode); 0 = every known one.
    pub netns: u32,
    /// Only interfaces matching one of these (none = all).
    pub ifaces: Vec<IfacePattern>,
}

/// The programs found on every tc hook of one namespace, as seen at start.
pub struct RawHook {
    pub ifindex: u32,
    pub ifname: String,
    pub egress: bool,
    /// tcx programs in run order (ours excluded).
    pub tcx: Vec<ProgInfo>,
    /// clsact filters in run order (ours excluded), with program info for `cls_bpf` ones.
    pub filters: Vec<(Filter, Option<ProgInfo>)>,
}

struct Found {
    rtnl: Rtnl,
    hooks: Vec<RawHook>,
    /// Our filters left by a run that is gone: (ifindex, parent, filter).
    leftovers: Vec<(u32, u32, Filter)>,
}

/// The `cls_bpf` filter name of this process's observers.
fn filter_name() -> String {
    format!("{} pid={}", names::TC_OBSERVER_PREFIX.trim_end_matches('_'), std::process::id())
}

/// True for a filter name of ours whose process is gone.
fn is_leftover(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(names::TC_OBSERVER_PREFIX.trim_end_matches('_')) else { return false };
    let Some(pid) = rest.trim().strip_prefix("pid=").and_then(|p| p.parse::<u32>().ok()) else {
        // Ours by name but unparsable: nobody can own it.
        return true;
    };
    if pid == std::process::id() {
        return false;
    }
    // Alive and still a tracer (pid reuse by another program does not keep our filter).
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or(true, |c| !c.trim().starts_with("tracer"))
}

fn ours(info: Option<&ProgInfo>, f: Option<&Filter>) -> bool {
    let by_prog = info.is_some_and(|i| i.name.starts_with(names::TC_OBSERVER_PREFIX));
    let by_filter = f.and_then(|f| f.bpf.as_ref()).and_then(|b| b.name.as_deref()).is_some_and(|n| n.starts_with(names::TC_OBSERVER_PREFIX.trim_end_matches('_')));
    by_prog || by_filter
}

/// Lists the tc hooks of the namespace this thread is in (run inside `netns::run_in`).
fn discover_here(only_ifindex: Option<u32>) -> Result<Found> {
    let mut rtnl = Rtnl::open().context("cannot open a netlink socket")?;
    let links = rtnl.links().context("cannot list interfaces")?;
    let clsact: BTreeSet<u32> = rtnl.qdiscs().context("cannot list qdiscs")?.into_iter().filter(|q| q.kind == "clsact").map(|q| q.ifindex).collect();
    let mut infos: HashMap<u32, Option<ProgInfo>> = HashMap::new();
    let mut info = |id: u32| infos.entry(id).or_insert_with(|| bpf::prog_info(id).ok()).clone();
    let mut hooks = Vec::new();
    let mut leftovers = Vec::new();
    for l in links.iter().filter(|l| only_ifindex.is_none_or(|i| i == l.ifindex)) {
        for egress in [false, true] {
            let tcx: Vec<ProgInfo> = query_tcx(&l.name, egress)
                .with_context(|| format!("cannot query tcx programs of {}", l.name))?
                .into_iter()
                .filter_map(&mut info)
                .filter(|i| !ours(Some(i), None))
                .collect();
            let mut filters = Vec::new();
            if clsact.contains(&l.ifindex) {
                let parent = if egress { CLSACT_EGRESS } else { CLSACT_INGRESS };
                for f in rtnl.filters(l.ifindex, parent).with_context(|| format!("cannot list tc filters of {}", l.name))? {
                    let name = f.bpf.as_ref().and_then(|b| b.name.clone()).unwrap_or_default();
                    if ours(None, Some(&f)) {
                        if is_leftover(&name) {
                            leftovers.push((l.ifindex, parent, f));
                        }
                        continue;
                    }
                    let pi = f.bpf.as_ref().and_then(|b| b.prog_id).and_then(&mut info);
                    filters.push((f, pi));
                }
            }
            // A hook without programs gets no observer, `--path` included: nothing there can
            // drop or change a packet, the device hops already say it passed, and observers on
            // every pod's lxc cost a pod-to-pod stream 5–9 % of its rate (tcx's dispatch on
            // both hooks plus two programs per packet).
            if !tcx.is_empty() || !filters.is_empty() {
                hooks.push(RawHook { ifindex: l.ifindex, ifname: l.name.clone(), egress, tcx, filters });
            }
        }
    }
    Ok(Found { rtnl, hooks, leftovers })
}

/// Program ids on the tcx hook of interface `ifname` (in this thread's namespace), in the
/// order they run. A kernel without tcx (< 6.6) answers EINVAL: no programs there.
fn query_tcx(ifname: &str, egress: bool) -> std::io::Result<Vec<u32>> {
    match SchedClassifier::query_tcx(ifname, if egress { TcAttachType::Egress } else { TcAttachType::Ingress }) {
        Ok((_, programs)) => Ok(programs.iter().map(aya::programs::ProgramInfo::id).collect()),
        Err(ProgramError::SyscallError(e)) if matches!(e.io_error.raw_os_error(), Some(libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP)) => Ok(Vec::new()),
        Err(ProgramError::SyscallError(e)) => Err(e.io_error),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// The programs on one hook right now (for drops on hooks that got no observers).
pub fn hook_now(ns: &Netns, ifindex: u32, egress: bool) -> Result<Option<Hook>> {
    let found = crate::netns::run_in(&ns.path, move || discover_here(Some(ifindex)))??;
    Ok(found.hooks.into_iter().find(|h| h.egress == egress).map(|h| plan::plan(ns.inode, &h, &BTreeSet::new(), 0).0))
}

/// A `cls_bpf` filter we added, to remove on exit.
struct OurFilter {
    socket: usize,
    ifindex: u32,
    parent: u32,
    prio: u16,
    protocol: u16,
    handle: u32,
}

/// Observers attached on every hook in scope; dropping it removes them.
#[derive(Default)]
pub struct TcObservers {
    pub hooks: Vec<Hook>,
    links: Vec<OwnedFd>,
    filters: Vec<OurFilter>,
    sockets: Vec<Rtnl>,
    /// Leftover filters of dead runs that were removed at start.
    pub cleaned: usize,
}

impl TcObservers {
    pub fn count(&self) -> usize {
        self.links.len() + self.filters.len()
    }
}

impl Drop for TcObservers {
    fn drop(&mut self) {
        for f in self.filters.drain(..) {
            let r = self.sockets[f.socket].del_filter(f.ifindex, f.parent, f.prio, f.protocol, f.handle, "bpf");
            // Gone already (the interface or its qdisc was removed): nothing left to clean.
            if let Err(e) = r
                && !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV | libc::EINVAL))
            {
                eprintln!("tracer: warning: cannot remove our tc observer filter (ifindex {}, prio {}): {e}; remove it with `tc filter del`", f.ifindex, f.prio);
            }
        }
    }
}

/// Removes leftovers of dead runs in every namespace, then places observers on every hook in
/// `scope` that runs BPF programs.
pub fn attach(ebpf: &mut Ebpf, spaces: &[Netns], scope: &Scope) -> Result<TcObservers> {
    let mut obs = TcObservers::default();
    let mut found = Vec::new();
    for ns in spaces {
        match crate::netns::run_in(&ns.path, || discover_here(None)) {
            Ok(Ok(mut f)) => {
                for (ifindex, parent, lf) in std::mem::take(&mut f.leftovers) {
                    match f.rtnl.del_filter(ifindex, parent, lf.prio, lf.protocol, lf.handle, &lf.kind) {
                        Ok(()) => obs.cleaned += 1,
                        Err(e) => log::warn!("cannot remove a leftover tracer filter in {} (ifindex {ifindex}): {e}", ns.name),
                    }
                }
                found.push((ns.clone(), f));
            }
            Ok(Err(e)) | Err(e) => log::warn!("no tc observers in namespace {} ({}): {e:#}", ns.name, ns.inode),
        }
    }
    if obs.cleaned > 0 {
        log::info!("removed {} tc observer filters left by an earlier run", obs.cleaned);
    }
    let name = filter_name();
    for (ns, f) in found {
        if scope.netns != 0 && ns.inode != scope.netns {
            continue;
        }
        let socket = obs.sockets.len();
        let mut rtnl = f.rtnl;
        let mut tcx_jobs = Vec::new();
        for raw in &f.hooks {
            if !scope.ifaces.is_empty() && !scope.ifaces.iter().any(|p| crate::filter::iface::matches(p, &raw.ifname)) {
                continue;
            }
            let used: BTreeSet<u16> = raw.filters.iter().map(|(f, _)| f.prio).collect();
            let (mut hook, placements) = plan::plan(ns.inode, raw, &used, std::process::id());
            for p in placements {
                let prog = observer_fd(ebpf, raw.egress, p.position())?;
                match p {
                    Placement::TcxBefore { .. } | Placement::TcxEnd { .. } => tcx_jobs.push((hook.ifindex, raw.egress, p, prog)),
                    Placement::Cls { position, prio, protocol, handle, before_handle } => {
                        let parent = if raw.egress { CLSACT_EGRESS } else { CLSACT_INGRESS };
                        let ok = rtnl.add_bpf_filter(hook.ifindex, parent, prio, protocol, handle, prog.as_raw_fd(), &name);
                        match ok {
                            Ok(()) => {
                                obs.filters.push(OurFilter { socket, ifindex: hook.ifindex, parent, prio, protocol, handle });
                                if let Some(target) = before_handle
                                    && !runs_before(&mut rtnl, hook.ifindex, parent, prio, handle, target)
                                {
                                    // The kernel put ours after the filter it should precede:
                                    // useless there, so take it out again.
                                    let _ = rtnl.del_filter(hook.ifindex, parent, prio, protocol, handle, "bpf");
                                    obs.filters.pop();
                                    hook.merge_failed(position);
                                }
                            }
                            Err(e) => {
                                log::debug!("cannot add a tc observer on {} prio {prio}: {e}", hook.ifname);
                                hook.merge_failed(position);
                            }
                        }
                    }
                }
            }
            obs.hooks.push(hook);
        }
        obs.sockets.push(rtnl);
        let links = crate::netns::run_in(&ns.path, move || {
            tcx_jobs
                .into_iter()
                .map(|(ifindex, egress, p, prog)| {
                    let before = match p {
                        Placement::TcxBefore { prog_id, .. } => Some(prog_id),
                        _ => None,
                    };
                    (ifindex, egress, p.position(), bpf::link_tcx(&prog, ifindex, egress, before))
                })
                .collect::<Vec<_>>()
        })?;
        for (ifindex, egress, position, r) in links {
            match r {
                Ok(fd) => obs.links.push(fd),
                Err(e) => {
                    log::debug!("cannot link a tcx observer on ifindex {ifindex}: {e}");
                    if let Some(h) = obs.hooks.iter_mut().find(|h| h.netns == ns.inode && h.ifindex == ifindex && h.egress == egress) {
                        h.merge_failed(position);
                    }
                }
            }
        }
    }
    Ok(obs)
}

/// True when filter `ours` runs before filter `target` in priority `prio`.
fn runs_before(rtnl: &mut Rtnl, ifindex: u32, parent: u32, prio: u16, ours: u32, target: u32) -> bool {
    let Ok(list) = rtnl.filters(ifindex, parent) else { return false };
    let order: Vec<u32> = list.iter().filter(|f| f.prio == prio).map(|f| f.handle).collect();
    matches!((order.iter().position(|&h| h == ours), order.iter().position(|&h| h == target)), (Some(a), Some(b)) if a < b)
}

/// The loaded observer for (direction, position), loading it on first use.
fn observer_fd(ebpf: &mut Ebpf, egress: bool, position: u32) -> Result<OwnedFd> {
    let name = format!("{}{}{position}", names::TC_OBSERVER_PREFIX, if egress { 'e' } else { 'i' });
    let p: &mut SchedClassifier = ebpf
        .program_mut(&name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
        .try_into()?;
    if p.fd().is_err() {
        p.load().map_err(crate::probes::brief).with_context(|| format!("cannot load tc observer {name}"))?;
    }
    Ok(p.fd()?.as_fd().try_clone_to_owned()?)
}

/// Observer positions available per direction.
pub const POSITIONS: u32 = tc::POSITIONS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names() {
        assert!(is_leftover("tracer_tc pid=4000000"));
        assert!(is_leftover("tracer_tc garbage"));
        assert!(!is_leftover(&filter_name()));
        assert!(!is_leftover("bpf_lxc.o:[from-container]"));
    }
}
