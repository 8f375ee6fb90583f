//! The result port's lines: the markers the guest's init writes and the libtest JSON of the
//! test binaries, parsed into `Results` (and, one line at a time, into the live `Event`s).
use std::fmt::Write as _;

use serde_json::Value;


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
    /// Share of the guest's CPU time not idle over its life (its `/proc/stat` at the end).
    pub cpu_busy: Option<f64>,
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
                "cpu" => r.cpu_busy = cpu_busy(tail),
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

/// Busy share from the aggregate `cpu` line of `/proc/stat` (its label stripped or not):
/// idle and iowait are the idle columns, the rest (user, nice, system, irq, softirq, steal) busy.
fn cpu_busy(line: &str) -> Option<f64> {
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    #[expect(clippy::cast_precision_loss, reason = "a share of ticks, shown as a percentage")]
    (total > 0).then(|| (total - idle) as f64 / total as f64)
}
