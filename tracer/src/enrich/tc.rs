//! "Which BPF program on which hook shot this packet?" The drop gives the hook (interface,
//! namespace, `TC_INGRESS`/`TC_EGRESS`) and the last tc observer the packet passed; the observer
//! plan gives the program(s) right after it. Hooks without observers (programs attached after
//! the start) are looked up when a drop is first seen there.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Node, Offline};
use crate::{
    model::tc::TcInfo,
    netns::Netns,
    model::hooks::{Attach, Hook, Program},
};

type Key = (u32, u32, bool);

/// How long a program's "still loaded" answer is trusted.
const RECHECK: Duration = Duration::from_millis(100);

pub struct TcAttributor {
    observed: HashMap<Key, Hook>,
    alive: HashMap<u32, (Instant, bool)>,
    /// Check that a program is still loaded before naming it (off in unit tests).
    verify: bool,
    looked_up: HashMap<Key, (Instant, Option<Hook>)>,
    spaces: HashMap<u32, Netns>,
    /// Where "is it still loaded" and "what is on this hook now" are asked.
    node: Arc<dyn Node>,
}

impl TcAttributor {
    pub fn new(hooks: Vec<Hook>, spaces: Vec<Netns>) -> Self {
        Self {
            observed: hooks.into_iter().map(|h| ((h.netns, h.ifindex, h.egress), h)).collect(),
            alive: HashMap::new(),
            verify: true,
            looked_up: HashMap::new(),
            spaces: spaces.into_iter().map(|n| (n.inode, n)).collect(),
            node: Arc::new(Offline),
        }
    }

    /// Asks `node` about programs and hooks (without it, nothing is looked up).
    #[must_use]
    pub fn with_node(mut self, node: Arc<dyn Node>) -> Self {
        self.node = node;
        self
    }

    /// Attribution of a `TC_INGRESS` (`egress` false) or `TC_EGRESS` drop on (`netns`, `ifindex`)
    /// whose last observer code was `code` (0 = none seen).
    pub fn resolve(&mut self, netns: u32, ifindex: u32, ifname: &str, egress: bool, code: u32) -> TcInfo {
        let mut info = TcInfo {
            ifname: ifname.to_string(),
            direction: if egress { "egress" } else { "ingress" },
            attach: None,
            prog: None,
            prog_id: None,
            prog_tag: None,
            verdict: "SHOT",
            prio: None,
            handle: None,
            attribution: "unknown",
            candidates: Vec::new(),
            hint: None,
        };
        let key = (netns, ifindex, egress);
        // Programs known at the start that the packet provably passed (observer after them).
        let mut passed: Vec<u32> = Vec::new();
        if code != 0 {
            let (code_egress, position) = tracer_common::tc::decode(code);
            if let Some(h) = self.observed.get(&key).filter(|_| code_egress == egress) {
                let gap = h.suspects(position).to_vec();
                let before: Vec<u32> = h.gaps.iter().take(position as usize).flatten().filter_map(|&i| h.programs[i].info.as_ref().map(|p| p.id)).collect();
                match gap.as_slice() {
                    [index] => {
                        if let Some(p) = self.current(key, *index) {
                            fill(&mut info, &p);
                            info.attribution = "observer";
                            return info;
                        }
                    }
                    [] => passed = before.into_iter().chain(h.unobserved.iter().filter_map(|&i| h.programs[i].info.as_ref().map(|p| p.id))).collect(),
                    many => {
                        info.attribution = "ambiguous";
                        info.candidates = many.iter().filter_map(|&i| h.programs.get(i)).map(Program::describe).collect();
                        info.hint = Some("these programs share one cls_bpf priority, where no observer fits between them".into());
                        return info;
                    }
                }
            }
        }
        // No usable observer result (programs changed since the start, or none observed): the
        // hook's programs now, less those the packet is known to have passed.
        let Some(mut h) = self.lookup(key).cloned() else {
            info.hint = Some("no BPF program is on this hook any more".into());
            return info;
        };
        h.programs.retain(|p| p.info.as_ref().is_none_or(|i| !passed.contains(&i.id)));
        match h.programs.as_slice() {
            [one] => {
                fill(&mut info, one);
                info.attribution = "only_program";
            }
            [] => info.hint = Some("no BPF program is on this hook".into()),
            many => {
                info.attribution = "ambiguous";
                info.candidates = many.iter().map(Program::describe).collect();
                info.hint = Some("the programs on this hook changed after the start or could not be observed; rerun the capture to place observers".into());
            }
        }
        info
    }

    /// Program `index` of an observed hook, while it is still loaded. A program replaced or
    /// removed during the capture means the hook changed under the observers (e.g. its qdisc
    /// was recreated, or the program reloaded): their answer is then not trusted.
    fn current(&mut self, key: Key, index: usize) -> Option<Program> {
        let p = self.observed.get(&key)?.programs.get(index)?.clone();
        let Some(id) = p.info.as_ref().map(|i| i.id).filter(|_| self.verify) else { return Some(p) };
        let now = Instant::now();
        let alive = match self.alive.get(&id) {
            Some((t, a)) if now.duration_since(*t) < RECHECK => *a,
            _ => {
                let a = self.node.prog_exists(id);
                self.alive.insert(id, (now, a));
                a
            }
        };
        alive.then_some(p)
    }

    /// The hook's programs now (asked again when the last answer is older than `RECHECK`).
    fn lookup(&mut self, key: Key) -> Option<&Hook> {
        let now = Instant::now();
        let stale = self.looked_up.get(&key).is_none_or(|(t, _)| now.duration_since(*t) >= RECHECK);
        if stale {
            let hook = self.spaces.get(&key.0).and_then(|ns| self.node.tc_hook(ns, key.1, key.2));
            self.looked_up.insert(key, (now, hook));
        }
        self.looked_up.get(&key).and_then(|(_, h)| h.as_ref())
    }
}

fn fill(info: &mut TcInfo, p: &Program) {
    match &p.attach {
        Attach::Tcx => info.attach = Some("tcx"),
        Attach::Cls { prio, handle, .. } => {
            info.attach = Some("cls_bpf");
            info.prio = Some(*prio);
            info.handle = Some(*handle);
        }
    }
    match &p.info {
        Some(i) => {
            info.prog = Some(i.name.clone());
            info.prog_id = Some(i.id);
            info.prog_tag = Some(i.tag.clone());
        }
        None => info.candidates = vec![p.describe()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::bpf::ProgInfo;

    fn hook() -> Hook {
        let p = |id, name: &str| Program { attach: Attach::Tcx, info: Some(ProgInfo { id, name: name.into(), tag: "ab".into() }) };
        Hook {
            netns: 1,
            ifindex: 5,
            ifname: "lxc1".into(),
            egress: false,
            programs: vec![p(10, "cil_to_container"), p(11, "cil_from_container")],
            gaps: vec![vec![0], vec![1], vec![]],
            unobserved: vec![],
        }
    }

    #[test]
    fn observer_code_names_the_program_after_it() {
        let mut a = TcAttributor::new(vec![hook()], vec![]);
        a.verify = false;
        let i = a.resolve(1, 5, "lxc1", false, tracer_common::tc::code(false, 1));
        assert_eq!((i.prog.as_deref(), i.prog_id, i.attach, i.attribution), (Some("cil_from_container"), Some(11), Some("tcx"), "observer"));
        let i = a.resolve(1, 5, "lxc1", false, tracer_common::tc::code(false, 2));
        assert_eq!((i.prog, i.attribution), (None, "unknown"));
        // A code of the other direction is not this hook's (and with no namespace to ask, the
        // hook's programs now are unknown).
        let i = a.resolve(1, 5, "lxc1", false, tracer_common::tc::code(true, 1));
        assert_eq!((i.prog, i.attribution), (None, "unknown"));
    }
}
