//! Netfilter observers: BPF netfilter links (kernel ≥ 6.4) placed just before every hook entry
//! a namespace's rulesets register. A `NETFILTER_DROP` is then attributed to the entries between
//! the last observer the packet passed and the next one. Observers always accept.
pub mod asm;

use std::{collections::BTreeSet, os::fd::OwnedFd};

use anyhow::{Result, anyhow};

use crate::{
    kernel::bpf::{self, ProgSpec},
    model::hooks::Slot,
    netfilter::Entry,
    netns::Netns,
};

/// How many priorities below an entry an observer tries when another BPF netfilter program
/// (another tracer run, say) already holds one: the kernel refuses two at the same priority.
const MAX_TRIES: i32 = 32;

/// Observers attached in every namespace; dropping it detaches them (the links are fds).
#[derive(Default)]
pub struct NfObservers {
    /// `slots[i]` describes slot id `i + 1` (0 means "no observer seen").
    pub slots: Vec<Slot>,
    links: Vec<OwnedFd>,
    /// Namespaces where the kernel refused the links (reported once).
    pub failures: Vec<String>,
}

impl NfObservers {
    pub fn links(&self) -> usize {
        self.links.len()
    }
}

/// The priorities to observe for one namespace: one observer before each distinct entry
/// priority of each (family, hook).
pub fn plan(netns: u32, entries: &[Entry]) -> Vec<Slot> {
    let mut set: BTreeSet<(u32, u32, i32)> = BTreeSet::new();
    for e in entries {
        // Nothing fits before INT_MIN+1 (and INT_MIN/INT_MAX are refused for BPF links).
        if e.priority > i32::MIN + 1 && e.priority < i32::MAX {
            set.insert((e.pf, e.hook, e.priority));
        }
    }
    let mut out: Vec<Slot> = Vec::with_capacity(set.len());
    for (pf, hook, priority) in set {
        let lowest = match out.last() {
            Some(prev) if prev.pf == pf && prev.hook == hook => prev.priority,
            _ => i32::MIN + 1,
        };
        out.push(Slot { netns, pf, hook, priority, lowest });
    }
    out
}

/// Loads one observer per slot and links each in its namespace.
pub fn attach(plans: Vec<(Netns, Vec<Slot>)>, ctx_skb_off: i16, maps: asm::Maps) -> Result<NfObservers> {
    let mut obs = NfObservers::default();
    for (ns, slots) in plans {
        let first_id = u32::try_from(obs.slots.len())? + 1;
        let mut progs = Vec::with_capacity(slots.len());
        for (i, _) in slots.iter().enumerate() {
            let id = first_id + u32::try_from(i)?;
            progs.push(load_observer(id, ctx_skb_off, maps)?);
        }
        let targets: Vec<Slot> = slots.clone();
        let linked = crate::netns::run_in(&ns.path, move || {
            progs.iter().zip(targets).map(|(p, s)| link_below(p, &s)).collect::<Vec<_>>()
        });
        // Slot ids stay aligned with the programs' immediates whatever attached.
        obs.slots.extend(slots);
        match linked {
            Ok(results) => {
                let mut errors = Vec::new();
                for r in results {
                    match r {
                        Ok(fd) => obs.links.push(fd),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                if !errors.is_empty() {
                    errors.dedup();
                    obs.failures.push(format!("{} ({}): {}", ns.name, ns.inode, errors.join("; ")));
                }
            }
            Err(e) => obs.failures.push(format!("{} ({}): {e:#}", ns.name, ns.inode)),
        }
    }
    Ok(obs)
}

/// Loads the observer program of slot `id`.
fn load_observer(id: u32, ctx_skb_off: i16, maps: asm::Maps) -> Result<OwnedFd> {
    let spec = ProgSpec { prog_type: bpf::PROG_NETFILTER, expected_attach_type: bpf::ATTACH_NETFILTER, ..ProgSpec::default() };
    bpf::load(&spec, "tracer_nf_obs", &asm::observer(id, ctx_skb_off, maps), 64 * 1024).map_err(|e| {
        log::debug!("netfilter observer verifier log:\n{}", e.log);
        anyhow!("cannot load a BPF netfilter program: {} (verifier: {})", e.errno, e.verifier)
    })
}

/// Links `prog` at the highest free priority below the slot's entries.
fn link_below(prog: &OwnedFd, s: &Slot) -> std::io::Result<OwnedFd> {
    let mut last = std::io::Error::from_raw_os_error(libc::EBUSY);
    for step in 1..=MAX_TRIES {
        let Some(prio) = s.priority.checked_sub(step) else { break };
        if prio < s.lowest || prio == i32::MIN {
            break;
        }
        match bpf::link_netfilter(prog, s.pf, s.hook, prio) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::Backend;

    fn entry(hook: u32, priority: i32) -> Entry {
        Entry { pf: 2, hook, priority, backend: Backend::Nftables, family: "ip".into(), table: "t".into(), chain: "c".into() }
    }

    #[test]
    fn one_observer_per_priority_bounded_by_the_previous_entry() {
        let plan = plan(7, &[entry(2, 0), entry(2, -150), entry(2, 0), entry(0, -300), entry(2, i32::MAX)]);
        let got: Vec<(u32, i32, i32)> = plan.iter().map(|s| (s.hook, s.priority, s.lowest)).collect();
        assert_eq!(got, vec![(0, -300, i32::MIN + 1), (2, -150, i32::MIN + 1), (2, 0, -150)]);
        assert!(plan.iter().all(|s| s.netns == 7));
    }
}
