//! Kernel-side cost of a peer's BPF programs: with run-time statistics on, the kernel sums the
//! time each program runs and how often, and shows both in the fdinfo of every program fd.
//! Unlike a packet rate, that number hardly moves with the machine's load (programs run with
//! preemption off), so it says what the probe costs even on a busy machine.
use std::{
    collections::{BTreeSet, HashMap},
    os::fd::OwnedFd,
};

use anyhow::{Context as _, Result};
use aya::{
    programs::{ProgramInfo, loaded_programs},
    sys::{Stats, enable_stats},
};
use aya_obj::generated::bpf_prog_type;
use serde_json::{Value, json};

/// Statistics stay on while this fd is open, and go off when the last holder closes it (also
/// when the process dies: nothing to restore, unlike the `kernel.bpf_stats_enabled` sysctl).
pub struct Enabled(#[expect(dead_code, reason = "held for its lifetime")] OwnedFd);

pub fn enable() -> Result<Enabled> {
    enable_stats(Stats::RunTime).map(Enabled).context("BPF_ENABLE_STATS failed (needs Linux ≥ 5.8 and CAP_SYS_ADMIN)")
}

/// Run time of one group of programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runs {
    pub programs: u64,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl Runs {
    fn add(&mut self, p: &ProgramInfo) {
        self.programs += 1;
        self.run_cnt += p.run_count();
        self.run_time_ns += u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX);
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// A peer's programs: netfilter observers apart from the rest (the drop probe, bpftrace's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub probes: Runs,
    pub observers: Runs,
}

impl Cost {
    pub fn to_json(self) -> Value {
        let g = |r: Runs| json!({ "programs": r.programs, "run_cnt": r.run_cnt, "run_time_ns": r.run_time_ns, "ns_per_run": r.ns_per_run().map(|v| super::stats::round(v, 1)) });
        json!({ "probes": g(self.probes), "observers": g(self.observers) })
    }
}

/// Sums the run time of every BPF program `pid` holds, directly (a program fd) or through a
/// link (the netfilter observers keep only their links), each program once.
pub fn of_process(pid: i32) -> Cost {
    let mut c = Cost::default();
    let loaded = loaded();
    for p in prog_ids(pid).iter().filter_map(|id| loaded.get(id)) {
        let g = if p.program_type() == bpf_prog_type::BPF_PROG_TYPE_NETFILTER { &mut c.observers } else { &mut c.probes };
        g.add(p);
    }
    c
}

/// The same per program name (the kernel keeps 15 bytes of it): which probe costs what.
pub fn by_program(pid: i32) -> Vec<(String, Runs)> {
    let mut out: Vec<(String, Runs)> = Vec::new();
    let loaded = loaded();
    for p in prog_ids(pid).iter().filter_map(|id| loaded.get(id)) {
        let name = p.name_as_str().unwrap_or("?").to_string();
        let i = out.iter().position(|(n, _)| *n == name).unwrap_or_else(|| {
            out.push((name, Runs::default()));
            out.len() - 1
        });
        out[i].1.add(p);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every program loaded on the host by id, with its statistics.
fn loaded() -> HashMap<u32, ProgramInfo> {
    loaded_programs().flatten().map(|p| (p.id(), p)).collect()
}

fn prog_ids(pid: i32) -> BTreeSet<u32> {
    let mut ids: BTreeSet<u32> = BTreeSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return ids };
    for fd in fds.flatten() {
        let is_bpf = std::fs::read_link(fd.path())
            .is_ok_and(|t| matches!(t.to_str(), Some("anon_inode:bpf-prog" | "anon_inode:bpf_link")));
        if !is_bpf {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).unwrap_or_default();
        if let Some(id) = field(&info, "prog_id").and_then(|v| v.parse().ok()) {
            ids.insert(id);
        }
    }
    ids
}

fn field<'a>(info: &'a str, k: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(':')).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_fields() {
        let info = "pos:\t0\nprog_type:\t26\nprog_tag:\t6c92\nprog_id:\t22056\nrun_time_ns:\t369466163\nrun_cnt:\t1000000\n";
        assert_eq!(field(info, "prog_id"), Some("22056"));
        assert_eq!(field("link_type:\tnetfilter\n", "prog_id"), None);
        let r = Runs { programs: 1, run_cnt: 4, run_time_ns: 10 };
        assert_eq!(r.ns_per_run(), Some(2.5));
        assert_eq!(Runs::default().ns_per_run(), None);
    }
}
