//! Kernel numbers to names: drop reasons (this kernel's enum), locations (kallsyms, cached
//! per address), event times (monotonic → wall clock) and `--stack`'s kernel stacks.
use std::collections::HashMap;

use aya::maps::{MapData, StackTraceMap};

use crate::{
    kernel::{kallsyms::Kallsyms, reasons::Reasons},
    model::{conntrack::CtNames, time::Clock},
};

pub struct Namer {
    pub reasons: Reasons,
    kallsyms: Kallsyms,
    symbols: HashMap<u64, String>,
    pub clock: Clock,
    /// `--stack`: the kernel's stack map, and each id's frames once read (an id never changes
    /// its stack: without `BPF_F_REUSE_STACKID` a colliding stack gets no id instead).
    stacks: Option<StackTraceMap<MapData>>,
    frames: HashMap<u32, Option<Vec<String>>>,
    /// The kernel's conntrack state and status names.
    pub ct: CtNames,
}

impl Namer {
    pub fn new(reasons: Reasons, kallsyms: Kallsyms, clock: Clock) -> Self {
        Self { reasons, kallsyms, symbols: HashMap::new(), clock, stacks: None, frames: HashMap::new(), ct: CtNames::default() }
    }

    /// `--stack`: where the drop events' stacks are.
    #[must_use]
    pub fn with_stacks(mut self, stacks: Option<StackTraceMap<MapData>>) -> Self {
        self.stacks = stacks;
        self
    }

    /// The running kernel's conntrack names (else drops carry no `ct`).
    #[must_use]
    pub fn with_conntrack(mut self, ct: CtNames) -> Self {
        self.ct = ct;
        self
    }

    /// The frames of stack `id`, from the dropping function out: the probe and the tracing
    /// machinery that ran it (up to the last `bpf_trace_run*`/`__bpf_trace_*` frame; our own
    /// program, loaded after kallsyms was read, has no name of its own) are left out.
    pub fn stack_frames(&mut self, id: u32) -> Option<Vec<String>> {
        if let Some(f) = self.frames.get(&id) {
            return f.clone();
        }
        let ips: Option<Vec<u64>> = self.stacks.as_ref().and_then(|m| m.get(&id, 0).ok()).map(|t| t.frames().iter().map(|f| f.ip).collect());
        let frames = ips.map(|ips| {
            let names: Vec<String> = ips.into_iter().map(|ip| self.symbolize(ip)).collect();
            let skip = names.iter().take(8).rposition(|n| is_tracing_frame(n)).map_or(0, |i| i + 1);
            names.into_iter().skip(skip).collect::<Vec<_>>()
        });
        self.frames.insert(id, frames.clone());
        frames
    }

    pub fn symbolize(&mut self, addr: u64) -> String {
        self.symbols.entry(addr).or_insert_with(|| self.kallsyms.symbolize(addr)).clone()
    }

    pub fn wall(&self, mono_ns: u64) -> std::time::Duration {
        self.clock.wall(mono_ns)
    }
}

/// Frames of the machinery that runs a tracing program, above the code that dropped.
fn is_tracing_frame(name: &str) -> bool {
    name.starts_with("bpf_trace_run") || name.starts_with("__bpf_trace_")
}
