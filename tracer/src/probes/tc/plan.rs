//! Where observers go on one hook, and which programs lie between two observers. Pure logic:
//! the attach code in mod.rs carries it out.
use std::collections::BTreeSet;

use crate::kernel::rtnl::PROTO_ALL;

use super::RawHook;
use crate::model::hooks::{Attach, Hook, Program};

/// One observer to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A tcx link just before program `prog_id`.
    TcxBefore { position: u32, prog_id: u32 },
    /// A tcx link after every program.
    TcxEnd { position: u32 },
    /// A `cls_bpf` filter at (`prio`, `protocol`); `before_handle`: it shares that priority with
    /// the filter it must precede (new filters run first in their priority).
    Cls { position: u32, prio: u16, protocol: u16, handle: u32, before_handle: Option<u32> },
}

impl Placement {
    pub fn position(&self) -> u32 {
        match self {
            Self::TcxBefore { position, .. } | Self::TcxEnd { position } | Self::Cls { position, .. } => *position,
        }
    }
}

/// Handles of our filters: "trc" and the position, unlikely to collide (checked anyway).
fn our_handle(position: u32, taken: &BTreeSet<u32>) -> u32 {
    let mut h = 0x7472_6300 | position;
    while taken.contains(&h) {
        h = h.wrapping_add(0x100);
    }
    h
}

/// Observers for `raw`: one before each tcx program, one before each `cls_bpf` priority, one
/// after everything; at most `tc::POSITIONS` of them. `used` holds the priorities in use on the
/// hook. `pid == 0` plans for lookup only (no placements are wanted).
pub fn plan(netns: u32, raw: &RawHook, used: &BTreeSet<u16>, pid: u32) -> (Hook, Vec<Placement>) {
    let max = super::POSITIONS;
    let mut hook = Hook {
        netns,
        ifindex: raw.ifindex,
        ifname: raw.ifname.clone(),
        egress: raw.egress,
        programs: Vec::new(),
        gaps: Vec::new(),
        unobserved: Vec::new(),
    };
    let mut out = Vec::new();
    let place = |hook: &mut Hook, out: &mut Vec<Placement>, p: Option<Placement>| {
        if let Some(p) = p
            && u32::try_from(out.len()).is_ok_and(|n| n < max)
            && pid != 0
        {
            out.push(p);
            hook.gaps.push(Vec::new());
        }
    };
    let push = |hook: &mut Hook, prog: Program| {
        let i = hook.programs.len();
        hook.programs.push(prog);
        match hook.gaps.last_mut() {
            Some(g) => g.push(i),
            None => hook.unobserved.push(i),
        }
    };
    for info in &raw.tcx {
        let position = u32::try_from(out.len()).unwrap_or(u32::MAX);
        place(&mut hook, &mut out, Some(Placement::TcxBefore { position, prog_id: info.id }));
        push(&mut hook, Program { attach: Attach::Tcx, info: Some(info.clone()) });
    }
    let mut i = 0;
    while i < raw.filters.len() {
        let (first, _) = &raw.filters[i];
        let group_end = raw.filters[i..].iter().position(|(f, _)| f.prio != first.prio).map_or(raw.filters.len(), |n| i + n);
        let position = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let handles: BTreeSet<u32> = raw.filters[i..group_end].iter().map(|(f, _)| f.handle).collect();
        let p = if first.prio > 1 && !used.contains(&(first.prio - 1)) {
            Some(Placement::Cls { position, prio: first.prio - 1, protocol: PROTO_ALL, handle: our_handle(position, &BTreeSet::new()), before_handle: None })
        } else if first.kind == "bpf" {
            Some(Placement::Cls { position, prio: first.prio, protocol: first.protocol, handle: our_handle(position, &handles), before_handle: Some(first.handle) })
        } else {
            None
        };
        place(&mut hook, &mut out, p);
        for (f, info) in &raw.filters[i..group_end] {
            let attach = Attach::Cls { kind: f.kind.clone(), prio: f.prio, handle: f.handle, filter_name: f.bpf.as_ref().and_then(|b| b.name.clone()) };
            push(&mut hook, Program { attach, info: info.clone() });
        }
        i = group_end;
    }
    let position = u32::try_from(out.len()).unwrap_or(u32::MAX);
    let end = match raw.filters.last() {
        Some((f, _)) => f.prio.checked_add(1).map(|prio| Placement::Cls { position, prio, protocol: PROTO_ALL, handle: our_handle(position, &BTreeSet::new()), before_handle: None }),
        None if !raw.tcx.is_empty() => Some(Placement::TcxEnd { position }),
        None => None,
    };
    place(&mut hook, &mut out, end);
    (hook, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{
        bpf::ProgInfo,
        rtnl::{BpfFilter, Filter},
    };

    fn info(id: u32, name: &str) -> ProgInfo {
        ProgInfo { id, name: name.into(), tag: "00".into() }
    }

    fn bpf(prio: u16, handle: u32) -> Filter {
        Filter { prio, protocol: PROTO_ALL, handle, kind: "bpf".into(), bpf: Some(BpfFilter { prog_id: None, name: None, tag: None, direct_action: true }) }
    }

    fn raw(tcx: Vec<ProgInfo>, filters: Vec<(Filter, Option<ProgInfo>)>) -> RawHook {
        RawHook { ifindex: 5, ifname: "lxc1".into(), egress: false, tcx, filters }
    }

    #[test]
    fn tcx_chain_gets_one_observer_per_program_and_an_end() {
        let r = raw(vec![info(1, "a"), info(2, "b")], vec![]);
        let (h, p) = plan(9, &r, &BTreeSet::new(), 1);
        assert_eq!(
            p,
            vec![
                Placement::TcxBefore { position: 0, prog_id: 1 },
                Placement::TcxBefore { position: 1, prog_id: 2 },
                Placement::TcxEnd { position: 2 }
            ]
        );
        assert_eq!(h.gaps, vec![vec![0], vec![1], vec![]]);
        assert_eq!(h.suspects(1), &[1]);
        assert!(h.suspects(2).is_empty());
    }

    #[test]
    fn cls_bpf_at_prio_one_shares_the_priority() {
        let r = raw(vec![], vec![(bpf(1, 1), Some(info(7, "cil_from_container"))), (bpf(2, 1), Some(info(8, "x")))]);
        let used = r.filters.iter().map(|(f, _)| f.prio).collect();
        let (h, p) = plan(9, &r, &used, 1);
        assert!(matches!(p[0], Placement::Cls { position: 0, prio: 1, before_handle: Some(1), .. }));
        // prio 1 is taken, so the observer before prio 2 shares it too.
        assert!(matches!(p[1], Placement::Cls { position: 1, prio: 2, before_handle: Some(1), .. }));
        assert!(matches!(p[2], Placement::Cls { position: 2, prio: 3, before_handle: None, .. }));
        assert_eq!(h.gaps, vec![vec![0], vec![1], vec![]]);
    }

    #[test]
    fn free_priority_before_is_used() {
        let r = raw(vec![info(3, "t")], vec![(bpf(10, 1), None)]);
        let used = r.filters.iter().map(|(f, _)| f.prio).collect();
        let (h, p) = plan(9, &r, &used, 1);
        assert!(matches!(p[1], Placement::Cls { position: 1, prio: 9, before_handle: None, .. }));
        assert_eq!(h.gaps, vec![vec![0], vec![1], vec![]]);
    }

    #[test]
    fn failed_observer_merges_its_gap() {
        let r = raw(vec![info(1, "a"), info(2, "b")], vec![]);
        let (mut h, _) = plan(9, &r, &BTreeSet::new(), 1);
        h.merge_failed(1);
        assert_eq!(h.suspects(0), &[0, 1]);
        h.merge_failed(0);
        assert_eq!(h.unobserved, vec![0, 1]);
    }

    #[test]
    fn positions_are_bounded() {
        let r = raw((1..20).map(|i| info(i, "p")).collect(), vec![]);
        let (h, p) = plan(9, &r, &BTreeSet::new(), 1);
        assert_eq!(p.len(), super::super::POSITIONS as usize);
        assert_eq!(h.programs.len(), 19);
        assert_eq!(h.gaps.iter().map(Vec::len).sum::<usize>(), 19);
    }

    #[test]
    fn lookup_only_places_nothing() {
        let r = raw(vec![info(1, "a")], vec![]);
        let (h, p) = plan(9, &r, &BTreeSet::new(), 0);
        assert!(p.is_empty());
        assert_eq!(h.unobserved, vec![0]);
    }
}
