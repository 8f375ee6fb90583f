//! What a guest said on its result port (ttyS1), turned into a per-kernel report: every test's
//! outcome and time, the kernel's BPF abilities, what the tracer picked, and whatever keeps the
//! run from being green.
use std::fmt::Write as _;

use serde_json::{Value, json};

mod results;
#[cfg(test)]
mod tests;

pub use results::{Event, Outcome, Results, event, parse};

/// One kernel's run.
#[derive(Debug)]
pub struct Report {
    pub series: String,
    pub package: String,
    pub version: String,
    pub config: Vec<(String, String)>,
    pub filter: Option<String>,
    pub build_s: f64,
    pub wall_s: f64,
    /// QEMU's CPU time on the host (user + system).
    pub qemu_cpu_s: f64,
    pub timed_out: bool,
    pub qemu_status: String,
    /// Kernel panics and oopses seen on the console.
    pub alerts: Vec<String>,
    pub results: Results,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.tests.iter().filter(|t| f(&t.outcome)).count()
    }

    /// Why this kernel's run is not green (empty: it is).
    pub fn problems(&self) -> Vec<String> {
        let r = &self.results;
        let mut p = Vec::new();
        if self.timed_out {
            p.push(format!("timed out after {:.0} s", self.wall_s));
        }
        if !r.done {
            p.push(format!(
                "the guest stopped before its final marker (qemu: {})",
                self.qemu_status
            ));
        }
        p.extend(
            self.alerts
                .iter()
                .filter(|a| a.contains("Kernel panic"))
                .map(|a| format!("console: {a}")),
        );
        p.extend(
            self.disagreements()
                .into_iter()
                .map(|d| format!("hook probes disagree on {d}")),
        );
        for t in &r.unfinished {
            p.push(format!("{t} was running when the guest stopped"));
        }
        for t in r.tests.iter().filter(|t| t.outcome == Outcome::Failed) {
            p.push(format!("{}/{} failed", t.binary, t.name));
        }
        for b in &r.binaries {
            // A first run that had failures exits non-zero even when a retry clears them.
            let failed_here = r.tests.iter().any(|t| {
                t.binary == b.name
                    && (t.outcome == Outcome::Failed || (!b.retry && t.outcome == Outcome::Flaky))
            });
            match b.status {
                Some(0) => {}
                Some(s) if !failed_here => p.push(format!(
                    "{} exited with status {s} without a failed test",
                    b.name
                )),
                None if r.done => p.push(format!("{} has no end marker", b.name)),
                _ => {}
            }
        }
        if r.done && r.tests.is_empty() {
            p.push(match &self.filter {
                Some(f) => format!("no test matched --test {f:?}"),
                None => "no test ran".into(),
            });
        }
        p
    }

    /// The hooks `tracer doctor` probed: (name as kernel-probe calls it, support, detail).
    pub fn doctor_hooks(&self) -> Vec<(String, String, String)> {
        let Some(hooks) = self
            .results
            .doctor
            .as_ref()
            .and_then(|d| d["kernel"]["hooks"].as_array())
        else {
            return Vec::new();
        };
        hooks
            .iter()
            .map(|h| {
                let name = h["hook"].as_str().unwrap_or_default();
                // The doctor says "netfilter" for what the testbed calls "netfilter_link".
                let name = if name == "netfilter" {
                    "netfilter_link"
                } else {
                    name
                };
                let s = |k: &str| h[k].as_str().unwrap_or_default().to_string();
                (name.to_string(), s("support"), s("detail"))
            })
            .collect()
    }

    /// Hooks where the tracer's probe (doctor) and the testbed's (kernel-probe), both of which
    /// attach a program, reach different answers: one of them is wrong about this kernel.
    pub fn disagreements(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, support, detail) in self.doctor_hooks() {
            let Some(p) = self.results.probes.iter().find(|p| p.name == name) else {
                continue;
            };
            let doctor_yes = match support.as_str() {
                "yes" => true,
                "no" => false,
                _ => continue,
            };
            if doctor_yes != p.ok {
                out.push(format!(
                    "{name}: kernel-probe says {} ({}), tracer doctor says {support} ({detail})",
                    if p.ok { "yes" } else { "no" },
                    p.detail
                ));
            }
        }
        out
    }

    pub fn tracer_probe(&self) -> Option<&str> {
        self.results
            .tracer_summary
            .as_ref()
            .and_then(|s| s["probe"].as_str())
    }

    pub fn render(&self) -> String {
        let r = &self.results;
        let mut s = String::new();
        let problems = self.problems();
        let _ = writeln!(
            s,
            "== kernel {}: {} {} (uname -r: {})",
            self.series,
            self.package,
            self.version,
            r.release.as_deref().unwrap_or("?")
        );
        let _ = writeln!(
            s,
            "   result: {} - {} passed ({} partly: a kernel feature missing), {} FLAKY, {} failed, {} skipped, {} ignored; guest {:.0} s (boot to /init {}, guest CPUs {} busy, QEMU {:.0} CPU-s = {:.2} host CPUs), initramfs build {:.0} s",
            if problems.is_empty() { "PASS" } else { "FAIL" },
            self.count(|o| *o == Outcome::Passed),
            r.tests
                .iter()
                .filter(|t| t.outcome == Outcome::Passed && !t.unchecked.is_empty())
                .count(),
            self.count(|o| *o == Outcome::Flaky),
            self.count(|o| *o == Outcome::Failed),
            self.count(|o| matches!(o, Outcome::Skipped(_))),
            self.count(|o| *o == Outcome::Ignored),
            self.wall_s,
            r.boot_s.map_or("?".into(), |b| format!("{b:.1} s")),
            r.cpu_busy.map_or("?".into(), |b| format!("{:.0} %", b * 100.0)),
            self.qemu_cpu_s,
            self.qemu_cpu_s / self.wall_s.max(1.0),
            self.build_s,
        );
        if !r.probes.is_empty() {
            let _ = writeln!(s, "   BPF on this kernel (kernel-probe):");
            for p in &r.probes {
                let _ = writeln!(
                    s,
                    "     {:<15} {:<4} {}",
                    p.name,
                    if p.ok { "yes" } else { "NO" },
                    p.detail
                );
            }
        }
        match (self.tracer_probe(), &r.tracer_failed) {
            (Some(p), _) => {
                let _ = writeln!(s, "   tracer drop probe: {p}");
            }
            (None, Some(e)) => {
                let _ = writeln!(s, "   tracer: a 1 s capture failed: {e}");
            }
            (None, None) => {}
        }
        if let Some(d) = &r.doctor {
            let hooks: Vec<String> = self
                .doctor_hooks()
                .iter()
                .map(|(n, sup, _)| format!("{n} {sup}"))
                .collect();
            let _ = writeln!(
                s,
                "   tracer doctor: {} ({} findings on this bare guest); hooks: {}",
                d["status"].as_str().unwrap_or("?"),
                d["findings"].as_array().map_or(0, Vec::len),
                hooks.join(", ")
            );
        } else if let Some(e) = &r.doctor_failed {
            let _ = writeln!(s, "   tracer doctor failed: {e}");
        }
        let cfg: Vec<String> = self
            .config
            .iter()
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("CONFIG_")))
            .collect();
        let _ = writeln!(s, "   config: {}", cfg.join(" "));
        if !r.modprobe_failed.is_empty() {
            let _ = writeln!(
                s,
                "   modprobe failed (not in this kernel): {}",
                r.modprobe_failed.join(" ")
            );
        }
        for a in &self.alerts {
            let _ = writeln!(s, "   console: {a}");
        }
        self.render_tests(&mut s);
        for p in &problems {
            let _ = writeln!(s, "   problem: {p}");
        }
        s
    }

    /// Every test with outcome and time, then the output of the failed ones.
    fn render_tests(&self, s: &mut String) {
        let r = &self.results;
        let _ = writeln!(s, "   tests:");
        for t in &r.tests {
            let secs = t.secs.map_or(String::new(), |x| format!("{x:6.1} s"));
            let why = match &t.outcome {
                Outcome::Skipped(why) => format!("  ({why})"),
                _ if !t.unchecked.is_empty() => {
                    format!("  (not checked here: {})", t.unchecked.join("; "))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "     {:<8} {secs:>8}  {}/{}{why}",
                t.outcome.label(),
                t.binary,
                t.name
            );
        }
        for t in r
            .tests
            .iter()
            .filter(|t| matches!(t.outcome, Outcome::Failed | Outcome::Flaky))
        {
            let _ = writeln!(
                s,
                "   --- {}/{} output ({}):",
                t.binary,
                t.name,
                t.outcome.label()
            );
            for l in t.output.trim().lines().take(60) {
                let _ = writeln!(s, "     | {l}");
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let r = &self.results;
        json!({
            "kernel": self.series,
            "package": self.package,
            "version": self.version,
            "release": r.release,
            "pass": self.problems().is_empty(),
            "problems": self.problems(),
            "passed": self.count(|o| *o == Outcome::Passed),
            "failed": self.count(|o| *o == Outcome::Failed),
            "flaky": self.count(|o| *o == Outcome::Flaky),
            "skipped": self.count(|o| matches!(o, Outcome::Skipped(_))),
            "ignored": self.count(|o| *o == Outcome::Ignored),
            "guest_s": self.wall_s,
            "boot_s": r.boot_s,
            "guest_cpu_busy": r.cpu_busy,
            "qemu_cpu_s": self.qemu_cpu_s,
            "initramfs_build_s": self.build_s,
            "timed_out": self.timed_out,
            "probes": r.probes.iter().map(|p| json!({"name": p.name, "ok": p.ok, "detail": p.detail})).collect::<Vec<_>>(),
            "tracer_probe": self.tracer_probe(),
            "tracer_failed": r.tracer_failed,
            "doctor_status": r.doctor.as_ref().map(|d| d["status"].clone()),
            "doctor_hooks": self.doctor_hooks().iter().map(|(n, sup, det)| json!({"hook": n, "support": sup, "detail": det})).collect::<Vec<_>>(),
            "doctor_failed": r.doctor_failed,
            "config": self.config.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "modprobe_failed": r.modprobe_failed,
            "tests": r.tests.iter().map(|t| json!({
                "binary": t.binary, "name": t.name, "outcome": t.outcome.label(), "secs": t.secs,
                "skip_reason": match &t.outcome { Outcome::Skipped(w) => Some(w.clone()), _ => None },
                "unchecked": t.unchecked,
            })).collect::<Vec<_>>(),
        })
    }
}
