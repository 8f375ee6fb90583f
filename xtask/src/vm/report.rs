//! What a guest said on its result port (ttyS1), turned into a per-kernel report: every test's
//! outcome and time, the kernel's BPF abilities, what the tracer picked, and whatever keeps the
//! run from being green.
use std::fmt::Write as _;

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
    /// Passed by returning early, after recording why (`integration_tests::skip`).
    Skipped(String),
    /// Failed, then passed when run again alone (`--retries`); the first failure is kept.
    Flaky,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Passed => "ok",
            Self::Failed => "FAILED",
            Self::Ignored => "ignored",
            Self::Skipped(_) => "skipped",
            Self::Flaky => "FLAKY",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub binary: String,
    pub name: String,
    pub outcome: Outcome,
    pub secs: Option<f64>,
    /// Captured output (failures only).
    pub output: String,
    /// Expectations the test could not check on this kernel (`integration_tests::unchecked`).
    pub unchecked: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BinaryRun {
    pub name: String,
    /// A run of only the tests that failed just before (`VMTEST retry`).
    pub retry: bool,
    pub status: Option<i32>,
    pub seconds: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Everything read from one guest's result port.
#[derive(Debug, Default)]
pub struct Results {
    pub release: Option<String>,
    pub boot_s: Option<f64>,
    pub modprobe_failed: Vec<String>,
    pub probes: Vec<Probe>,
    pub tracer_summary: Option<Value>,
    pub tracer_failed: Option<String>,
    /// `tracer doctor --json`, whole.
    pub doctor: Option<Value>,
    pub doctor_failed: Option<String>,
    pub binaries: Vec<BinaryRun>,
    pub tests: Vec<TestResult>,
    /// Tests that started and never finished (the guest died or timed out under them).
    pub unfinished: Vec<String>,
    pub skips: Vec<(String, String)>,
    pub unchecked: Vec<(String, String)>,
    pub done: bool,
    /// Lines that were neither markers nor JSON (should not happen; kept for the log).
    pub stray: Vec<String>,
}

/// One line of the result port, as the live progress printer sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Begin(String),
    Retry(String),
    End {
        name: String,
        status: Option<i32>,
    },
    Test {
        name: String,
        outcome: Outcome,
        secs: Option<f64>,
    },
    Skip {
        name: String,
        reason: String,
    },
    Unchecked {
        name: String,
        what: String,
    },
    Probe(String, bool, String),
    Done,
    Other,
}

/// Parses one line (without its newline; a trailing `\r` is ignored).
pub fn event(line: &str) -> Event {
    let line = line.trim_end_matches('\r');
    if let Some(rest) = line.strip_prefix("VMTEST ") {
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        return match word {
            "begin" => Event::Begin(tail.to_string()),
            "retry" => Event::Retry(tail.to_string()),
            "end" => {
                let mut it = tail.split_whitespace();
                let name = it.next().unwrap_or_default().to_string();
                let status = it
                    .find_map(|kv| kv.strip_prefix("status="))
                    .and_then(|v| v.parse().ok());
                Event::End { name, status }
            }
            "done" => Event::Done,
            _ => Event::Other,
        };
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Event::Other;
    };
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    match (v["type"].as_str(), v["event"].as_str()) {
        (Some("test"), Some(ev)) => {
            let outcome = match ev {
                "ok" => Outcome::Passed,
                "failed" | "timeout" => Outcome::Failed,
                "ignored" => Outcome::Ignored,
                _ => return Event::Other,
            };
            Event::Test {
                name: s("name"),
                outcome,
                secs: v["exec_time"].as_f64(),
            }
        }
        (Some("skip"), _) => Event::Skip {
            name: s("name"),
            reason: s("reason"),
        },
        (Some("unchecked"), _) => Event::Unchecked {
            name: s("name"),
            what: s("reason"),
        },
        (Some("probe"), _) => {
            Event::Probe(s("name"), v["ok"].as_bool().unwrap_or(false), s("detail"))
        }
        _ => Event::Other,
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one match over the kinds of line the result port carries"
)]
pub fn parse(text: &str) -> Results {
    let mut r = Results::default();
    let mut binary = String::new();
    let mut retrying = false;
    let mut started: Vec<String> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("VMTEST ") {
            let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            match word {
                "kernel" => r.release = Some(tail.to_string()),
                "boot-seconds" => r.boot_s = tail.trim().parse().ok(),
                "modprobe-failed" => r.modprobe_failed.push(tail.to_string()),
                "tracer-summary" => r.tracer_summary = serde_json::from_str(tail).ok(),
                "tracer-failed" => r.tracer_failed = Some(tail.to_string()),
                "doctor-json" => r.doctor = serde_json::from_str(tail).ok(),
                "doctor-failed" => r.doctor_failed = Some(tail.to_string()),
                "begin" | "retry" => {
                    binary = tail.to_string();
                    retrying = word == "retry";
                    r.binaries.push(BinaryRun {
                        name: binary.clone(),
                        retry: retrying,
                        status: None,
                        seconds: None,
                    });
                }
                "end" => {
                    let mut it = tail.split_whitespace();
                    let name = it.next().unwrap_or_default();
                    if let Some(b) = r.binaries.iter_mut().rev().find(|b| b.name == name) {
                        for kv in it {
                            if let Some(v) = kv.strip_prefix("status=") {
                                b.status = v.parse().ok();
                            } else if let Some(v) = kv.strip_prefix("seconds=") {
                                b.seconds = v.parse().ok();
                            }
                        }
                    }
                    r.unfinished
                        .extend(started.drain(..).map(|t| format!("{name}/{t}")));
                }
                "done" => r.done = true,
                _ => r.stray.push(line.to_string()),
            }
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            r.stray.push(line.to_string());
            continue;
        };
        match (v["type"].as_str(), v["event"].as_str()) {
            (Some("test"), Some("started")) => {
                started.push(v["name"].as_str().unwrap_or_default().to_string());
            }
            (Some("test"), Some(_)) => {
                if let Event::Test {
                    name,
                    outcome,
                    secs,
                } = event(line)
                {
                    started.retain(|t| *t != name);
                    let skipped = r
                        .skips
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, why)| why.clone());
                    let outcome = match (outcome, skipped) {
                        (Outcome::Passed, Some(why)) => Outcome::Skipped(why),
                        (o, _) => o,
                    };
                    let output = v["stdout"].as_str().unwrap_or_default().to_string();
                    if retrying {
                        retried(&mut r.tests, &binary, &name, &outcome, &output);
                        continue;
                    }
                    let mut unchecked: Vec<String> = r
                        .unchecked
                        .iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, w)| w.clone())
                        .collect();
                    unchecked.dedup();
                    r.tests.push(TestResult {
                        binary: binary.clone(),
                        name,
                        outcome,
                        secs,
                        output,
                        unchecked,
                    });
                }
            }
            (Some(kind @ ("skip" | "unchecked")), _) => {
                let entry = (
                    v["name"].as_str().unwrap_or_default().into(),
                    v["reason"].as_str().unwrap_or_default().into(),
                );
                if kind == "skip" {
                    r.skips.push(entry);
                } else {
                    r.unchecked.push(entry);
                }
            }
            (Some("probe"), _) => r.probes.push(Probe {
                name: v["name"].as_str().unwrap_or_default().into(),
                ok: v["ok"].as_bool().unwrap_or(false),
                detail: v["detail"].as_str().unwrap_or_default().into(),
            }),
            // libtest's suite events: the per-test lines carry everything.
            _ => {}
        }
    }
    // A test still "started" when the port went quiet was running when the guest stopped.
    r.unfinished
        .extend(started.into_iter().map(|t| format!("{binary}/{t}")));
    r
}

/// A retried test's new result: a pass turns the failure before it into `Flaky`; a failure
/// stays one, with both outputs.
fn retried(tests: &mut [TestResult], binary: &str, name: &str, outcome: &Outcome, output: &str) {
    let Some(first) = tests
        .iter_mut()
        .rev()
        .find(|t| t.binary == binary && t.name == name && t.outcome == Outcome::Failed)
    else {
        return;
    };
    match outcome {
        Outcome::Passed => first.outcome = Outcome::Flaky,
        _ => {
            let _ = write!(first.output, "\n--- failed again when run alone:\n{output}");
        }
    }
}

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
            "   result: {} - {} passed ({} partly: a kernel feature missing), {} FLAKY, {} failed, {} skipped, {} ignored; guest {:.0} s (boot to /init {}), initramfs build {:.0} s",
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

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: &str = "VMTEST kernel 6.1.0-50-cloud-amd64\r\n\
VMTEST boot-seconds 3.52\n\
VMTEST modprobe-failed nft_counter\n\
{\"detail\":\"fentry attached to tcp_v4_rcv\",\"name\":\"fentry\",\"ok\":true,\"type\":\"probe\"}\n\
{\"detail\":\"tcx attach refused: x\",\"name\":\"tcx\",\"ok\":false,\"type\":\"probe\"}\n\
VMTEST tracer-summary {\"probe\": \"tp_btf\", \"drops\": 0}\n\
VMTEST doctor-json {\"status\": \"findings\", \"findings\": [1], \"kernel\": {\"hooks\": [{\"hook\": \"fentry\", \"support\": \"yes\", \"detail\": \"d\"}, {\"hook\": \"tcx\", \"support\": \"yes\", \"detail\": \"attached\"}, {\"hook\": \"netfilter\", \"support\": \"untested\", \"detail\": \"u\"}]}}\n\
VMTEST begin drops\n\
{ \"type\": \"suite\", \"event\": \"started\", \"test_count\": 4 }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"a\" }\n\
{\"name\":\"a\",\"reason\":\"fate (needs sk_data_ready: no)\",\"type\":\"unchecked\"}\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\", \"exec_time\": 4.06 }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"tcx_one\" }\n\
{\"name\":\"tcx_one\",\"reason\":\"needs tcx: refused\",\"type\":\"skip\"}\n\
{ \"type\": \"test\", \"name\": \"tcx_one\", \"event\": \"ok\", \"exec_time\": 0.5 }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"b\" }\n\
{ \"type\": \"test\", \"name\": \"b\", \"event\": \"failed\", \"exec_time\": 1.5, \"stdout\": \"panicked at x\" }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"h\" }\n\
{ \"type\": \"test\", \"name\": \"h\", \"event\": \"ignored\", \"message\": \"helper\" }\n\
{ \"type\": \"suite\", \"event\": \"failed\", \"passed\": 2, \"failed\": 1, \"ignored\": 1 }\n\
VMTEST end drops status=101 seconds=12\n\
VMTEST begin netfilter\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"n\" }\n";

    fn report(results: Results) -> Report {
        Report {
            series: "6.1".into(),
            package: "p".into(),
            version: "v".into(),
            config: vec![],
            filter: None,
            build_s: 1.0,
            wall_s: 100.0,
            timed_out: false,
            qemu_status: "exit status: 0".into(),
            alerts: vec![],
            results,
        }
    }

    #[test]
    fn parses_markers_probes_tests_and_skips() {
        let r = parse(PORT);
        assert_eq!(r.release.as_deref(), Some("6.1.0-50-cloud-amd64"));
        assert_eq!(r.boot_s, Some(3.52));
        assert_eq!(r.modprobe_failed, ["nft_counter"]);
        assert_eq!(r.probes.len(), 2);
        assert!(r.probes[0].ok && !r.probes[1].ok);
        assert_eq!(r.tracer_summary.as_ref().unwrap()["probe"], "tp_btf");
        let outcomes: Vec<(&str, &Outcome)> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), &t.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("a", &Outcome::Passed),
                ("tcx_one", &Outcome::Skipped("needs tcx: refused".into())),
                ("b", &Outcome::Failed),
                ("h", &Outcome::Ignored)
            ]
        );
        assert_eq!(r.tests[2].output, "panicked at x");
        assert_eq!(r.tests[0].unchecked, ["fate (needs sk_data_ready: no)"]);
        assert!(r.tests[1].unchecked.is_empty());
        assert_eq!(r.binaries[0].status, Some(101));
        assert_eq!(r.binaries[0].seconds, Some(12));
        assert!(!r.done);
        assert_eq!(r.unfinished, ["netfilter/n"]);
    }

    #[test]
    fn problems_name_every_reason_to_fail() {
        let rep = report(parse(PORT));
        let p = rep.problems();
        assert!(
            p.iter().any(|l| l.contains("before its final marker")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l == "netfilter/n was running when the guest stopped"),
            "{p:?}"
        );
        assert!(p.iter().any(|l| l == "drops/b failed"), "{p:?}");
        // fentry agrees, netfilter was not tried, tcx differs.
        assert_eq!(
            rep.disagreements(),
            [
                "tcx: kernel-probe says no (tcx attach refused: x), tracer doctor says yes (attached)"
            ]
        );
        let text = rep.render();
        assert!(
            text.contains("result: FAIL - 1 passed (1 partly: a kernel feature missing), 0 FLAKY, 1 failed, 1 skipped, 1 ignored"),
            "{text}"
        );
        assert!(text.contains("tracer drop probe: tp_btf"));
        assert!(
            text.contains("tracer doctor: findings (1 findings on this bare guest); hooks: fentry yes, tcx yes, netfilter_link untested"),
            "{text}"
        );
    }

    #[test]
    fn a_clean_run_is_green_and_a_crashed_binary_is_not() {
        let ok = "VMTEST begin t\n{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\" }\nVMTEST end t status=0 seconds=1\nVMTEST done\n";
        assert_eq!(report(parse(ok)).problems(), Vec::<String>::new());
        let crashed = ok.replace("status=0", "status=134");
        assert_eq!(
            report(parse(&crashed)).problems(),
            ["t exited with status 134 without a failed test"]
        );
        let none = "VMTEST done\n";
        assert_eq!(report(parse(none)).problems(), ["no test ran"]);
    }

    #[test]
    fn a_retry_that_passes_makes_the_test_flaky_and_one_that_fails_keeps_it_failed() {
        let port = "VMTEST begin t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"failed\", \"stdout\": \"first\" }\n\
{ \"type\": \"test\", \"name\": \"b\", \"event\": \"failed\", \"stdout\": \"once\" }\n\
{ \"type\": \"test\", \"name\": \"c\", \"event\": \"ok\" }\n\
VMTEST end t status=101 seconds=9\n\
VMTEST retry t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\" }\n\
{ \"type\": \"test\", \"name\": \"b\", \"event\": \"failed\", \"stdout\": \"twice\" }\n\
VMTEST end t status=101 seconds=2\n\
VMTEST done\n";
        let rep = report(parse(port));
        let o: Vec<(&str, &Outcome)> = rep
            .results
            .tests
            .iter()
            .map(|t| (t.name.as_str(), &t.outcome))
            .collect();
        assert_eq!(
            o,
            [
                ("a", &Outcome::Flaky),
                ("b", &Outcome::Failed),
                ("c", &Outcome::Passed)
            ]
        );
        assert!(
            rep.results.tests[1].output.contains("once")
                && rep.results.tests[1].output.contains("twice")
        );
        assert_eq!(rep.problems(), ["t/b failed"]);
        // Only a flaky one: green, the first run's status explained by it.
        let flaky_only = "VMTEST begin t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"failed\", \"stdout\": \"first\" }\n\
VMTEST end t status=101 seconds=9\n\
VMTEST retry t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\" }\n\
VMTEST end t status=0 seconds=2\n\
VMTEST done\n";
        assert_eq!(report(parse(flaky_only)).problems(), Vec::<String>::new());
    }

    #[test]
    fn live_events() {
        assert_eq!(event("VMTEST begin drops\r"), Event::Begin("drops".into()));
        assert_eq!(
            event("VMTEST end drops status=0 seconds=3"),
            Event::End {
                name: "drops".into(),
                status: Some(0)
            }
        );
        assert_eq!(
            event(
                "{ \"type\": \"test\", \"name\": \"a\", \"event\": \"failed\", \"exec_time\": 1.5 }"
            ),
            Event::Test {
                name: "a".into(),
                outcome: Outcome::Failed,
                secs: Some(1.5)
            }
        );
        assert_eq!(
            event("{ \"type\": \"test\", \"event\": \"started\", \"name\": \"a\" }"),
            Event::Other
        );
        assert_eq!(event("garbage"), Event::Other);
    }
}
