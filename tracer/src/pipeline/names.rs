//! Kernel numbers to names: drop reasons (this kernel's enum), locations (kallsyms, cached
//! per address) and event times (monotonic → wall clock).
use std::collections::HashMap;

use crate::{
    kernel::{kallsyms::Kallsyms, reasons::Reasons},
    model::time::Clock,
};

pub struct Namer {
    pub reasons: Reasons,
    kallsyms: Kallsyms,
    symbols: HashMap<u64, String>,
    pub clock: Clock,
}

impl Namer {
    pub fn new(reasons: Reasons, kallsyms: Kallsyms, clock: Clock) -> Self {
        Self { reasons, kallsyms, symbols: HashMap::new(), clock }
    }

    pub fn symbolize(&mut self, addr: u64) -> String {
        self.symbols.entry(addr).or_insert_with(|| self.kallsyms.symbolize(addr)).clone()
    }

    pub fn wall(&self, mono_ns: u64) -> std::time::Duration {
        self.clock.wall(mono_ns)
    }
}
