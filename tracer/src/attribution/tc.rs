//! "Which BPF program on which hook shot this packet?" The drop gives the hook (interface,
//! namespace, `TC_INGRESS`/`TC_EGRESS`) and the last tc observer the packet passed; the observer
//! plan gives the program(s) right after it. Hooks without observers (programs attached after
//! the start) are looked up when a drop is first seen there.
use std::collections::HashMap;

use serde::Serialize;

use crate::{
    netns::Netns,
    probes::tc::{Attach, Hook, Program},
};

/// The `tc` object of a drop event (contract fields first; the rest only when known).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TcInfo {
    pub ifname: String,
    /// "ingress" or "egress".
    pub direction: &'static str,
    /// "tcx" or "`cls_bpf`"; null when no program could be singled out.
    pub attach: Option<&'static str>,
    pub prog: Option<String>,
    pub prog_id: Option<u32>,
    pub prog_tag: Option<String>,
    pub verdict: &'static str,
    /// `cls_bpf` priority and handle of the filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prio: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u32>,
    /// How the program was singled out: "observer" (per packet: it ran right after the last
    /// observer the packet passed), "`only_program`" (the only program on the hook), "ambiguous"
    /// (see `candidates`), "unknown".
    pub attribution: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl TcInfo {
    /// "BPF program `cil_from_container`" / "a tc program".
    pub fn who(&self) -> String {
        match &self.prog {
            Some(p) => format!("BPF program {p}"),
            None if self.candidates.is_empty() => "a tc program".into(),
            None => format!("one of {}", self.candidates.join(", ")),
        }
    }
}

type Key = (u32, u32, bool);

pub struct TcAttributor {
    observed: HashMap<Key, Hook>,
    looked_up: HashMap<Key, Option<Hook>>,
    spaces: HashMap<u32, Netns>,
}

impl TcAttributor {
    pub fn new(hooks: Vec<Hook>, spaces: Vec<Netns>) -> Self {
        Self {
            observed: hooks.into_iter().map(|h| ((h.netns, h.ifindex, h.egress), h)).collect(),
            looked_up: HashMap::new(),
            spaces: spaces.into_iter().map(|n| (n.inode, n)).collect(),
        }
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
        if code != 0 {
            let (code_egress, position) = tracer_common::tc::decode(code);
            if let Some(h) = self.observed.get(&key).filter(|_| code_egress == egress) {
                let suspects: Vec<&Program> = h.suspects(position).iter().filter_map(|&i| h.programs.get(i)).collect();
                match suspects.as_slice() {
                    [one] => {
                        fill(&mut info, one);
                        info.attribution = "observer";
                    }
                    [] => {
                        info.hint = Some("the packet passed every BPF program on this hook; a tc action or a filter attached during the capture dropped it".into());
                    }
                    many => {
                        info.attribution = "ambiguous";
                        info.candidates = many.iter().map(|p| p.describe()).collect();
                        info.hint = Some("these programs share one cls_bpf priority, where no observer fits between them".into());
                    }
                }
                return info;
            }
        }
        // No observer result: the hook's current programs.
        let hook = match self.observed.get(&key) {
            Some(h) => Some(h.clone()),
            None => self.lookup(key).cloned(),
        };
        let Some(h) = hook else {
            info.hint = Some("no BPF program is on this hook any more".into());
            return info;
        };
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

    fn lookup(&mut self, key: Key) -> Option<&Hook> {
        let spaces = &self.spaces;
        self.looked_up
            .entry(key)
            .or_insert_with(|| {
                let ns = spaces.get(&key.0)?;
                crate::probes::tc::hook_now(ns, key.1, key.2).map_err(|e| log::debug!("tc hook lookup failed: {e:#}")).ok().flatten()
            })
            .as_ref()
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
    use crate::probes::tc::sys::ProgInfo;

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
        let i = a.resolve(1, 5, "lxc1", false, tracer_common::tc::code(false, 1));
        assert_eq!((i.prog.as_deref(), i.prog_id, i.attach, i.attribution), (Some("cil_from_container"), Some(11), Some("tcx"), "observer"));
        let i = a.resolve(1, 5, "lxc1", false, tracer_common::tc::code(false, 2));
        assert_eq!((i.prog, i.attribution), (None, "unknown"));
        // A code of the other direction is not this hook's.
        let i = a.resolve(1, 5, "lxc1", false, tracer_common::tc::code(true, 1));
        assert_eq!(i.attribution, "ambiguous");
        assert_eq!(i.candidates.len(), 2);
    }
}
