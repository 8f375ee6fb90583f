//! "Which BPF program on which hook shot this packet?" The drop gives the hook (interface,
//! namespace, `TC_INGRESS`/`TC_EGRESS`) and the last tc observer the packet passed; the observer
//! plan gives the program(s) right after it. Hooks without observers (programs attached after
//! the start) are looked up when a drop is first seen there.
//!
//! "Is that program still loaded" and "what is on this hook now" are asked on a worker thread
//! (bpf and netlink calls, a thread in the pod's namespace): a drop whose answer is not in
//! yet waits in the enricher and comes back from its poll.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{Node, worker::Worker};
use crate::{
    model::{
        hooks::{Attach, Hook, Program},
        tc::TcInfo,
    },
    netns::Netns,
};

type Key = (u32, u32, bool);

/// How long before a drop an answer about its program or hook may have been taken (answers
/// taken after the drop always serve).
const RECHECK_NS: u64 = 100_000_000;

/// What the worker is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Ask {
    Alive(u32),
    Hook(Key),
}

/// An answer the attributor holds, or the worker was just asked for it.
enum Cached<T> {
    Known(T),
    Asked,
}

enum Reply {
    Alive(u32, bool),
    Hook(Key, Option<Hook>),
}

/// Where a drop happened: (netns inode, ifindex, `CLOCK_MONOTONIC` ns).
pub type At = (u32, u32, u64);

pub struct TcAttributor {
    observed: HashMap<Key, Hook>,
    /// Answers: (when the work started, `CLOCK_MONOTONIC` ns; the answer).
    alive: HashMap<u32, (u64, bool)>,
    looked_up: HashMap<Key, (u64, Option<Hook>)>,
    /// Asked and not answered yet.
    asked: HashSet<Ask>,
    spaces: HashMap<u32, Netns>,
    /// Where "is it still loaded" and "what is on this hook now" are asked; `None`: nothing is
    /// looked up (programs are taken as loaded, hooks without observers as unknown).
    worker: Option<Worker<(Ask, Option<Netns>), Reply>>,
}

impl TcAttributor {
    pub fn new(hooks: Vec<Hook>, spaces: Vec<Netns>) -> Self {
        Self {
            observed: hooks.into_iter().map(|h| ((h.netns, h.ifindex, h.egress), h)).collect(),
            alive: HashMap::new(),
            looked_up: HashMap::new(),
            asked: HashSet::new(),
            spaces: spaces.into_iter().map(|n| (n.inode, n)).collect(),
            worker: None,
        }
    }

    /// Asks `node` about programs and hooks, on a worker thread.
    #[must_use]
    pub fn with_node(mut self, node: Arc<dyn Node>) -> Self {
        self.worker = Some(Worker::spawn("tracer-tc", move |(ask, ns): (Ask, Option<Netns>)| match ask {
            Ask::Alive(id) => Reply::Alive(id, node.prog_exists(id)),
            Ask::Hook(key) => Reply::Hook(key, ns.and_then(|ns| node.tc_hook(&ns, key.1, key.2))),
        }));
        self
    }

    /// Takes in the worker's answers; `wait`: block for one first (when any is pending).
    pub fn absorb(&mut self, wait: bool) {
        let Some(w) = &mut self.worker else { return };
        let mut wait = wait;
        while let Some(a) = w.answer(wait) {
            wait = false;
            match a.value {
                Reply::Alive(id, yes) => {
                    self.asked.remove(&Ask::Alive(id));
                    self.alive.insert(id, (a.start, yes));
                }
                Reply::Hook(key, hook) => {
                    self.asked.remove(&Ask::Hook(key));
                    self.looked_up.insert(key, (a.start, hook));
                }
            }
        }
        if !w.busy() {
            // Everything asked was answered, or the worker died and never will: ask afresh.
            self.asked.clear();
        }
    }

    /// Attribution of a `TC_INGRESS` (`egress` false) or `TC_EGRESS` drop `at` whose last
    /// observer code was `code` (0 = none seen). `None`: the worker was asked what it needs;
    /// call again after [`Self::absorb`].
    pub fn resolve(&mut self, at: At, ifname: &str, egress: bool, code: u32) -> Option<TcInfo> {
        self.attribute(at, ifname, egress, code, false)
    }

    /// The same, waiting (boundedly) for the worker: the capture ends, or the totals table.
    /// What it still has not answered counts as unknown (programs taken as loaded).
    pub fn resolve_now(&mut self, at: At, ifname: &str, egress: bool, code: u32) -> TcInfo {
        // Each round takes in at least one answer, or the worker has none left to give.
        for _ in 0..4 {
            if let Some(info) = self.attribute(at, ifname, egress, code, false) {
                return info;
            }
            self.absorb(true);
        }
        self.attribute(at, ifname, egress, code, true).unwrap_or_else(|| unknown(ifname, egress))
    }

    fn attribute(&mut self, (netns, ifindex, mono): At, ifname: &str, egress: bool, code: u32, now: bool) -> Option<TcInfo> {
        let mut info = unknown(ifname, egress);
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
                        let Cached::Known(current) = self.current(key, *index, mono, now) else { return None };
                        if let Some(p) = current {
                            fill(&mut info, &p);
                            info.attribution = "observer";
                            return Some(info);
                        }
                    }
                    [] => passed = before.into_iter().chain(h.unobserved.iter().filter_map(|&i| h.programs[i].info.as_ref().map(|p| p.id))).collect(),
                    many => {
                        info.attribution = "ambiguous";
                        info.candidates = many.iter().filter_map(|&i| h.programs.get(i)).map(Program::describe).collect();
                        info.hint = Some("these programs share one cls_bpf priority, where no observer fits between them".into());
                        return Some(info);
                    }
                }
            }
        }
        // No usable observer result (programs changed since the start, or none observed): the
        // hook's programs now, less those the packet is known to have passed.
        let Cached::Known(hook) = self.lookup(key, mono, now) else { return None };
        let Some(mut h) = hook else {
            info.hint = Some("no BPF program is on this hook any more".into());
            return Some(info);
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
        Some(info)
    }

    /// Program `index` of an observed hook, while it is still loaded. A program replaced or
    /// removed during the capture means the hook changed under the observers (e.g. its qdisc
    /// was recreated, or the program reloaded): their answer is then not trusted. `Asked`: the
    /// worker was asked; `now`: do not ask (taken as loaded).
    fn current(&mut self, key: Key, index: usize, mono: u64, now: bool) -> Cached<Option<Program>> {
        let Some(p) = self.observed.get(&key).and_then(|h| h.programs.get(index)).cloned() else { return Cached::Known(None) };
        let Some(id) = p.info.as_ref().map(|i| i.id).filter(|_| self.worker.is_some()) else { return Cached::Known(Some(p)) };
        match self.alive.get(&id) {
            Some((t, alive)) if t.saturating_add(RECHECK_NS) >= mono => Cached::Known(alive.then_some(p)),
            _ if now => Cached::Known(Some(p)),
            // A worker that is gone answers nothing: taken as loaded, as without one.
            _ => if self.ask(Ask::Alive(id), None) { Cached::Asked } else { Cached::Known(Some(p)) },
        }
    }

    /// The hook's programs now. `Asked`: the worker was asked; `now`: do not ask (unknown).
    fn lookup(&mut self, key: Key, mono: u64, now: bool) -> Cached<Option<Hook>> {
        if self.worker.is_none() {
            return Cached::Known(None);
        }
        match self.looked_up.get(&key) {
            Some((t, hook)) if t.saturating_add(RECHECK_NS) >= mono => Cached::Known(hook.clone()),
            _ if now => Cached::Known(None),
            _ => {
                let ns = self.spaces.get(&key.0).cloned();
                if self.ask(Ask::Hook(key), ns) { Cached::Asked } else { Cached::Known(None) }
            }
        }
    }

    /// Asks the worker once per question; false when it is gone (it is then dropped, and
    /// nothing more is looked up: a drop never waits for an answer that cannot come).
    fn ask(&mut self, ask: Ask, ns: Option<Netns>) -> bool {
        if self.asked.contains(&ask) {
            return true;
        }
        if let Some(Some(_)) = self.worker.as_mut().map(|w| w.ask((ask.clone(), ns))) {
            self.asked.insert(ask);
            return true;
        }
        log::warn!("the tc lookup thread is gone: tc programs are named from the observers only from now on");
        self.worker = None;
        false
    }
}

/// A shot nobody is named for (yet).
fn unknown(ifname: &str, egress: bool) -> TcInfo {
    TcInfo {
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
        let i = a.resolve((1, 5, 0), "lxc1", false, tracer_common::tc::code(false, 1)).unwrap();
        assert_eq!((i.prog.as_deref(), i.prog_id, i.attach, i.attribution), (Some("cil_from_container"), Some(11), Some("tcx"), "observer"));
        let i = a.resolve((1, 5, 0), "lxc1", false, tracer_common::tc::code(false, 2)).unwrap();
        assert_eq!((i.prog, i.attribution), (None, "unknown"));
        // A code of the other direction is not this hook's (and with no namespace to ask, the
        // hook's programs now are unknown).
        let i = a.resolve((1, 5, 0), "lxc1", false, tracer_common::tc::code(true, 1)).unwrap();
        assert_eq!((i.prog, i.attribution), (None, "unknown"));
    }

    /// Program 11 was unloaded and another put alone on the hook; the node answers that after
    /// a pause, as a slow netlink dump would.
    struct Changed;

    impl Node for Changed {
        fn prog_exists(&self, id: u32) -> bool {
            std::thread::sleep(std::time::Duration::from_millis(20));
            id != 11
        }

        fn tc_hook(&self, ns: &Netns, ifindex: u32, egress: bool) -> Option<Hook> {
            let mut h = hook();
            (h.netns, h.ifindex, h.egress) = (ns.inode, ifindex, egress);
            h.programs = vec![Program { attach: Attach::Tcx, info: Some(ProgInfo { id: 12, name: "new_prog".into(), tag: "cd".into() }) }];
            Some(h)
        }

        fn rulesets(&self, _ns: &Netns) -> crate::netfilter::snapshot::Snapshot {
            crate::netfilter::snapshot::Snapshot::default()
        }
    }

    /// A node whose lookups kill the tc worker thread.
    struct Dies;

    impl Node for Dies {
        fn prog_exists(&self, _id: u32) -> bool {
            panic!("the tc worker dies (test)")
        }

        fn tc_hook(&self, _ns: &Netns, _ifindex: u32, _egress: bool) -> Option<Hook> {
            None
        }

        fn rulesets(&self, _ns: &Netns) -> crate::netfilter::snapshot::Snapshot {
            crate::netfilter::snapshot::Snapshot::default()
        }
    }

    #[test]
    fn a_dead_worker_does_not_hold_drops() {
        let mut a = TcAttributor::new(vec![hook()], vec![]).with_node(Arc::new(Dies));
        let code = tracer_common::tc::code(false, 1);
        // Bounded: each round either answers or finds the thread gone (it dies on the first
        // question); the drop is then named from the observers, as without a worker.
        let mut named = None;
        for _ in 0..100 {
            named = a.resolve((1, 5, 1), "lxc1", false, code);
            if named.is_some() {
                break;
            }
            a.absorb(true);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(named.map(|i| i.attribution), Some("observer"));
        assert!(a.worker.is_none());
    }

    #[test]
    fn node_answers_come_from_the_worker_and_are_reused() {
        let ns = Netns { inode: 1, path: "/proc/self/ns/net".into(), name: "host".into() };
        let mut a = TcAttributor::new(vec![hook()], vec![ns]).with_node(Arc::new(Changed));
        let code = tracer_common::tc::code(false, 1);
        // First the program's liveness is asked (the drop waits), then the hook's programs.
        assert!(a.resolve((1, 5, 1), "lxc1", false, code).is_none());
        a.absorb(true);
        assert!(a.resolve((1, 5, 1), "lxc1", false, code).is_none());
        a.absorb(true);
        let i = a.resolve((1, 5, 1), "lxc1", false, code).unwrap();
        assert_eq!((i.prog.as_deref(), i.prog_id, i.attribution), (Some("new_prog"), Some(12), "only_program"));
        // A drop soon after the answers uses them without asking again.
        let t = crate::model::time::mono_now();
        assert!(a.resolve((1, 5, t), "lxc1", false, code).is_some());
        assert!(!a.worker.as_ref().unwrap().busy());
        // resolve_now waits for the worker itself.
        let ns = Netns { inode: 1, path: "/proc/self/ns/net".into(), name: "host".into() };
        let mut b = TcAttributor::new(vec![hook()], vec![ns]).with_node(Arc::new(Changed));
        assert_eq!(b.resolve_now((1, 5, 1), "lxc1", false, code).attribution, "only_program");
    }
}
