//! Kernel-side cost of a peer's BPF programs: with run-time statistics on, the kernel sums the
//! time each program runs and how often, and shows both in the fdinfo of every program fd.
//! Unlike a packet rate, that number hardly moves with the machine's load (programs run with
//! preemption off), so it says what the probe costs even on a busy machine.
use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
const PROG_TYPE_NETFILTER: u32 = 32;

/// Statistics stay on while this fd is open, and go off when the last holder closes it (also
/// when the process dies: nothing to restore, unlike the `kernel.bpf_stats_enabled` sysctl).
pub struct Enabled(#[expect(dead_code, reason = "held for its lifetime")] OwnedFd);

pub fn enable() -> Result<Enabled> {
    let attr = [BPF_STATS_RUN_TIME, 0u32];
    // SAFETY: BPF_ENABLE_STATS reads `attr` (size given) and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_ptr(), std::mem::size_of_val(&attr)) };
    if fd < 0 {
        bail!("BPF_ENABLE_STATS failed: {} (needs Linux ≥ 5.8 and CAP_SYS_ADMIN)", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd the kernel just gave us.
    Ok(Enabled(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) }))
}

/// Run time of one group of programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runs {
    pub programs: u64,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl Runs {
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
    for (ty, time, cnt) in prog_ids(pid).into_iter().filter_map(prog_stats) {
        let g = if ty == PROG_TYPE_NETFILTER { &mut c.observers } else { &mut c.probes };
        g.programs += 1;
        g.run_cnt += cnt;
        g.run_time_ns += time;
    }
    c
}

/// The same per program name (the kernel keeps 15 bytes of it): which probe costs what.
pub fn by_program(pid: i32) -> Vec<(String, Runs)> {
    let mut out: Vec<(String, Runs)> = Vec::new();
    for id in prog_ids(pid) {
        let (Some((_, time, cnt)), Some(name)) = (prog_stats(id), prog_name(id)) else { continue };
        let i = out.iter().position(|(n, _)| *n == name).unwrap_or_else(|| {
            out.push((name, Runs::default()));
            out.len() - 1
        });
        let r = &mut out[i].1;
        r.programs += 1;
        r.run_cnt += cnt;
        r.run_time_ns += time;
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
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

/// A program's name from `BPF_OBJ_GET_INFO_BY_FD` (`bpf_prog_info.name`, at byte 64).
fn prog_name(id: u32) -> Option<String> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let fd = prog_fd(id)?;
    let mut info = [0u8; 256];
    let mut attr = [0u64; 2];
    attr[0] = u64::try_from(fd.as_raw_fd()).ok()? | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: the kernel writes at most `info.len()` bytes of bpf_prog_info into `info`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
    if r < 0 {
        return None;
    }
    let name = &info[64..80];
    Some(String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or_default()).into_owned())
}

fn prog_fd(id: u32) -> Option<OwnedFd> {
    let attr = [id, 0u32, 0u32];
    // SAFETY: BPF_PROG_GET_FD_BY_ID reads `attr` (size given) and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_ptr(), std::mem::size_of_val(&attr)) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a fresh fd the kernel just gave us.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A program's type and statistics, read from the fdinfo of an fd we open for its id.
fn prog_stats(id: u32) -> Option<(u32, u64, u64)> {
    let owned = prog_fd(id)?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", owned.as_raw_fd())).ok()?;
    parse_fdinfo(&info).map(|(_, v)| v)
}

fn field<'a>(info: &'a str, k: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(':')).map(str::trim)
}

/// `(prog_id, (prog_type, run_time_ns, run_cnt))`.
fn parse_fdinfo(info: &str) -> Option<(u64, (u32, u64, u64))> {
    let f = |k: &str| field(info, k);
    Some((f("prog_id")?.parse().ok()?, (f("prog_type")?.parse().ok()?, f("run_time_ns")?.parse().ok()?, f("run_cnt")?.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_fields() {
        let info = "pos:\t0\nprog_type:\t26\nprog_tag:\t6c92\nprog_id:\t22056\nrun_time_ns:\t369466163\nrun_cnt:\t1000000\n";
        assert_eq!(parse_fdinfo(info), Some((22056, (26, 369_466_163, 1_000_000))));
        assert_eq!(parse_fdinfo("link_type:\tnetfilter\n"), None);
        let r = Runs { programs: 1, run_cnt: 4, run_time_ns: 10 };
        assert_eq!(r.ns_per_run(), Some(2.5));
        assert_eq!(Runs::default().ns_per_run(), None);
    }
}
