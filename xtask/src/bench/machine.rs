//! What else the machine is doing: CPU time from /proc/stat (busy share during a run, and the
//! background load just before it), other processes holding BPF programs or links (a foreign
//! tracer's probes would tax our baseline too), and a description of the machine.
use std::{fmt::Write as _, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// Jiffies per CPU from /proc/stat: `[busy, idle (+iowait), steal]`.
#[derive(Debug, Clone)]
pub struct CpuTimes(Vec<[u64; 3]>);

pub fn cpu_times() -> Result<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    Ok(CpuTimes(
        text.lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .map(|l| {
                // user nice system idle iowait irq softirq steal guest guest_nice
                let f: Vec<u64> = l.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
                let g = |i: usize| f.get(i).copied().unwrap_or(0);
                let idle = g(3) + g(4);
                let busy = g(0) + g(1) + g(2) + g(5) + g(6);
                [busy, idle, g(7)]
            })
            .collect(),
    ))
}

/// CPU use between two samples.
#[derive(Debug, Clone, Default)]
#[expect(clippy::struct_field_names, reason = "all are percentages; the suffix says so where they are read")]
pub struct CpuUse {
    /// Busy share of all CPUs, percent (steal excluded).
    pub busy_pct: f64,
    pub per_cpu_pct: Vec<f64>,
    /// Time the hypervisor ran something else while we wanted the CPU, percent.
    pub steal_pct: f64,
}

impl CpuUse {
    pub fn between(a: &CpuTimes, b: &CpuTimes) -> Self {
        let mut per_cpu_pct = Vec::new();
        let (mut busy, mut total, mut steal) = (0u64, 0u64, 0u64);
        for (x, y) in a.0.iter().zip(&b.0) {
            let d = [y[0].saturating_sub(x[0]), y[1].saturating_sub(x[1]), y[2].saturating_sub(x[2])];
            let t = d[0] + d[1] + d[2];
            per_cpu_pct.push(pct(d[0], t));
            busy += d[0];
            steal += d[2];
            total += t;
        }
        Self { busy_pct: pct(busy, total), per_cpu_pct, steal_pct: pct(steal, total) }
    }

    pub fn to_json(&self) -> Value {
        json!({ "busy_pct": round1(self.busy_pct), "per_cpu_pct": self.per_cpu_pct.iter().map(|v| round1(*v)).collect::<Vec<_>>(), "steal_pct": round1(self.steal_pct) })
    }
}

#[expect(clippy::cast_precision_loss, reason = "jiffy counts far below 2^52")]
fn pct(part: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { 100.0 * part as f64 / total as f64 }
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// CPU use of the machine over `window`, while the bench itself does nothing.
pub fn background(window: Duration) -> Result<CpuUse> {
    let a = cpu_times()?;
    std::thread::sleep(window);
    Ok(CpuUse::between(&a, &cpu_times()?))
}

/// Other processes holding BPF programs or links, as `comm(pid)`: a tracer someone else runs
/// probes our traffic too (netfilter observers go into every namespace, a `kfree_skb` probe sees
/// every drop), so runs next to one are flagged. `ours` are excluded (this process, our peer).
pub fn foreign_bpf(ours: &[i32]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return found };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == i32::try_from(std::process::id()).unwrap_or(0) || ours.contains(&pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else { continue };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| matches!(t.to_str(), Some("anon_inode:bpf_link" | "anon_inode:bpf-prog")))
        });
        if holds {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push(format!("{}({pid})", comm.trim()));
        }
    }
    found
}

/// Named network namespaces (under /var/run/netns): the tracer snapshots the ruleset of each
/// at start, so its start-up time grows with them (other suites' namespaces count too).
pub fn named_netns() -> usize {
    std::fs::read_dir("/var/run/netns").map_or(0, Iterator::count)
}

/// Kernel, CPUs, memory, virtualisation: what the numbers were measured on.
pub fn describe() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let virt = crate::cmd::probe(&mut std::process::Command::new("systemd-detect-virt"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "os": os,
        "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "cpu_model": model,
        "mem_gib": mem_kib / (1024 * 1024),
        "virtualization": virt,
    })
}

/// One line for the report: `kernel 6.18.44, 2 CPUs (…), 23 GiB, Debian …, kvm`.
pub fn one_line(m: &Value) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "kernel {}, {} CPUs ({}), {} GiB",
        m["kernel"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_gib"]
    );
    for k in ["os", "virtualization"] {
        if let Some(v) = m[k].as_str().filter(|v| !v.is_empty() && *v != "none") {
            let _ = write!(s, ", {v}");
        }
    }
    s
}
