//! Netfilter observers: BPF netfilter links (kernel ≥ 6.4) placed just before every hook entry
//! a namespace's rulesets register. A NETFILTER_DROP is then attributed to the entries between
//! the last observer the packet passed and the next one. Observers always accept.
pub mod asm;
pub mod sys;

use std::{collections::BTreeSet, os::fd::OwnedFd};

use anyhow::Result;

use crate::{netfilter::Entry, netns::Netns};

/// Where observer `slot` sits: before the entries registered at `priority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub netns: u32,
    pub pf: u32,
    pub hook: u32,
    /// Priority of the entries this observer precedes (the observer itself is at one less).
    pub priority: i32,
}

/// Observers attached in every namespace; dropping it detaches them (the links are fds).
#[derive(Default)]
pub struct Observers {
    /// `slots[i]` describes slot id `i + 1` (0 means "no observer seen").
    pub slots: Vec<Slot>,
    links: Vec<OwnedFd>,
    /// Namespaces where the kernel refused the links (reported once).
    pub failures: Vec<String>,
}

impl Observers {
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
    set.into_iter().map(|(pf, hook, priority)| Slot { netns, pf, hook, priority }).collect()
}

/// Loads one observer per slot and links each in its namespace.
pub fn attach(plans: Vec<(Netns, Vec<Slot>)>, ctx_skb_off: i16, ring_fd: i32) -> Result<Observers> {
    let mut obs = Observers::default();
    for (ns, slots) in plans {
        let first_id = u32::try_from(obs.slots.len())? + 1;
        let mut progs = Vec::with_capacity(slots.len());
        for (i, _) in slots.iter().enumerate() {
            let id = first_id + u32::try_from(i)?;
            progs.push(sys::load_program("tracer_nf_obs", &asm::observer(id, ctx_skb_off, ring_fd))?);
        }
        let targets: Vec<(u32, u32, i32)> = slots.iter().map(|s| (s.pf, s.hook, s.priority - 1)).collect();
        let linked = crate::netns::run_in(&ns.path, move || {
            progs
                .iter()
                .zip(targets)
                .map(|(p, (pf, hook, prio))| sys::link_netfilter(p, pf, hook, prio))
                .collect::<std::io::Result<Vec<OwnedFd>>>()
        });
        match linked {
            Ok(Ok(links)) => {
                obs.links.extend(links);
                obs.slots.extend(slots);
            }
            Ok(Err(e)) => {
                // Keep slot ids aligned with program immediates: record the slots, no links.
                obs.failures.push(format!("{} ({}): {e}", ns.name, ns.inode));
                obs.slots.extend(slots);
            }
            Err(e) => {
                obs.failures.push(format!("{} ({}): {e:#}", ns.name, ns.inode));
                obs.slots.extend(slots);
            }
        }
    }
    Ok(obs)
}
