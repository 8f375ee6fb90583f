//! Where the probes sit, as enrichment reads it: the netfilter observer slots and the tc hooks
//! with their programs in run order. The probes fill these in when they attach (and on lookups
//! of hooks that changed later); enrichment names the hook, rule or program from them without
//! importing the probes.
use crate::kernel::bpf::ProgInfo;

/// Where observer `slot` sits: before the entries registered at `priority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub netns: u32,
    pub pf: u32,
    pub hook: u32,
    /// Priority of the entries this observer precedes.
    pub priority: i32,
    /// Lowest priority the observer may take: the previous entry's (registering after it at
    /// an equal priority still runs after it). The observer tries `priority - 1` first.
    pub lowest: i32,
}

/// How a program is attached to its hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    Tcx,
    /// A clsact filter; `kind` is the classifier ("bpf", "u32"…).
    Cls { kind: String, prio: u16, handle: u32, filter_name: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub attach: Attach,
    /// None for a non-BPF classifier or a program we could not look up.
    pub info: Option<ProgInfo>,
}

impl Program {
    /// "`cil_from_container` (id 42)" or "u32 filter prio 5".
    pub fn describe(&self) -> String {
        match (&self.info, &self.attach) {
            (Some(i), _) => format!("{} (id {})", i.name, i.id),
            (None, Attach::Cls { kind, prio, .. }) => format!("{kind} filter prio {prio}"),
            (None, Attach::Tcx) => "tcx program".into(),
        }
    }
}

/// One hook (interface, direction) with its programs in run order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub netns: u32,
    pub ifindex: u32,
    pub ifname: String,
    pub egress: bool,
    pub programs: Vec<Program>,
    /// `gaps[k]`: indexes of the programs between observer k and the next observer (the last
    /// gap, after the last program, is empty).
    pub gaps: Vec<Vec<usize>>,
    /// Programs before the first observer (none could be placed in front of them).
    pub unobserved: Vec<usize>,
}

impl Hook {
    /// Observer `position` could not be attached: its programs join the previous gap.
    pub fn merge_failed(&mut self, position: u32) {
        let k = position as usize;
        if k >= self.gaps.len() {
            return;
        }
        let moved = std::mem::take(&mut self.gaps[k]);
        if k == 0 {
            self.unobserved.extend(moved);
        } else {
            self.gaps[k - 1].extend(moved);
        }
        // Keep positions stable (the kernel programs carry them): the gap stays, empty, and is
        // never reported since its observer does not run.
    }

    /// The programs that may have shot a packet whose last observer was `position`.
    pub fn suspects(&self, position: u32) -> &[usize] {
        self.gaps.get(position as usize).map_or(&[], Vec::as_slice)
    }
}
