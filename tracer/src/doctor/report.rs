//! What `tracer doctor` reports: findings (id, severity, evidence, action), the status of every
//! check, the kernel's hook support; rendered as a table for people or JSON for machines.
use std::fmt::Write as _;

use serde::Serialize;

use crate::kernel::features::{HookSupport, Support};

/// Evidence lines kept per finding; `count` still says how many items were affected.
const MAX_EVIDENCE: usize = 200;
/// Evidence lines the table shows per finding.
const TABLE_EVIDENCE: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable identifier of the kind of problem, e.g. `netfilter.cilium-chain-unhooked`.
    pub id: String,
    pub severity: Severity,
    /// The check that found it.
    pub check: String,
    pub summary: String,
    /// How many items (chains, map entries, interfaces…) are affected.
    pub count: usize,
    /// Concrete facts seen on the node, one per line.
    pub evidence: Vec<String>,
    /// What to do about it.
    pub action: String,
}

impl Finding {
    pub fn new(id: &str, severity: Severity, summary: impl Into<String>, evidence: Vec<String>, action: impl Into<String>) -> Self {
        let count = evidence.len();
        let mut evidence = evidence;
        if evidence.len() > MAX_EVIDENCE {
            let more = evidence.len() - MAX_EVIDENCE;
            evidence.truncate(MAX_EVIDENCE);
            evidence.push(format!("… and {more} more"));
        }
        Self { id: id.to_string(), severity, check: String::new(), summary: summary.into(), count, evidence, action: action.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Findings,
    /// Not applicable on this node (e.g. no Cilium state to check).
    Skipped,
    /// Could not be checked.
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub status: CheckStatus,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    pub release: String,
    pub btf: bool,
    /// Number of `enum skb_drop_reason` values in BTF (0 when absent).
    pub drop_reasons: usize,
    pub hooks: Vec<HookSupport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    pub netns: String,
    pub bpffs: String,
    pub cni_cache_dir: String,
    pub netns_dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `healthy`, `findings` or `incomplete` (some check could not run, nothing found).
    pub status: &'static str,
    pub exit_code: u8,
    pub scope: Scope,
    pub kernel: Option<KernelReport>,
    pub checks: Vec<CheckResult>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(scope: Scope) -> Self {
        Self { status: "healthy", exit_code: 0, scope, kernel: None, checks: Vec::new(), findings: Vec::new() }
    }

    /// Records one check's outcome: its findings, or why it could not run.
    pub fn record(&mut self, check: &str, outcome: Outcome) {
        let (status, detail) = match outcome {
            Outcome::Checked { detail, findings } => {
                let status = if findings.is_empty() { CheckStatus::Ok } else { CheckStatus::Findings };
                for mut f in findings {
                    f.check = check.to_string();
                    self.findings.push(f);
                }
                (status, detail)
            }
            Outcome::Skipped(d) => (CheckStatus::Skipped, d),
            Outcome::Error(d) => (CheckStatus::Error, d),
        };
        self.checks.push(CheckResult { check: check.to_string(), status, detail });
    }

    /// Exit code: 1 when there are findings, else 2 when a check could not run, else 0.
    pub fn finish(&mut self) {
        self.findings.sort_by_key(|f| f.severity);
        let errors = self.checks.iter().any(|c| c.status == CheckStatus::Error);
        (self.status, self.exit_code) = if !self.findings.is_empty() {
            ("findings", 1)
        } else if errors {
            ("incomplete", 2)
        } else {
            ("healthy", 0)
        };
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise the report: {e}\"}}"))
    }

    pub fn to_table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "tracer doctor: {} (netns {}, bpffs {}, CNI cache {})", self.status, self.scope.netns, self.scope.bpffs, self.scope.cni_cache_dir);
        if let Some(k) = &self.kernel {
            let _ = writeln!(
                o,
                "\nKERNEL {}: BTF {}, {} drop reasons",
                k.release,
                if k.btf { "yes" } else { "no" },
                k.drop_reasons
            );
            let rows: Vec<[String; 3]> = k
                .hooks
                .iter()
                .map(|h| {
                    let s = match h.support {
                        Support::Yes => "yes",
                        Support::No => "no",
                        Support::Untested => "untested",
                    };
                    [h.hook.to_string(), s.to_string(), h.detail.clone()]
                })
                .collect();
            table(&mut o, ["HOOK", "USABLE", "DETAIL"], &rows);
        }
        let rows: Vec<[String; 3]> = self
            .checks
            .iter()
            .map(|c| {
                let s = match c.status {
                    CheckStatus::Ok => "ok",
                    CheckStatus::Findings => "FINDINGS",
                    CheckStatus::Skipped => "skipped",
                    CheckStatus::Error => "ERROR",
                };
                [c.check.clone(), s.to_string(), c.detail.clone()]
            })
            .collect();
        let _ = writeln!(o);
        table(&mut o, ["CHECK", "STATUS", "DETAIL"], &rows);
        if self.findings.is_empty() {
            let _ = writeln!(o, "\nNo findings.");
            return o;
        }
        let _ = writeln!(o, "\nFINDINGS ({})", self.findings.len());
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "warning",
            };
            let _ = writeln!(o, "\n{sev:<8}  {}  {}", f.id, f.summary);
            for e in f.evidence.iter().take(TABLE_EVIDENCE) {
                let _ = writeln!(o, "          evidence: {e}");
            }
            if f.evidence.len() > TABLE_EVIDENCE {
                let _ = writeln!(o, "          evidence: … {} more lines (see --json)", f.evidence.len() - TABLE_EVIDENCE);
            }
            let _ = writeln!(o, "          action:   {}", f.action);
        }
        o
    }
}

/// What one check found.
pub enum Outcome {
    Checked { detail: String, findings: Vec<Finding> },
    Skipped(String),
    Error(String),
}

impl Outcome {
    pub fn checked(detail: impl Into<String>, findings: Vec<Finding>) -> Self {
        Self::Checked { detail: detail.into(), findings }
    }
}

fn table(o: &mut String, head: [&str; 3], rows: &[[String; 3]]) {
    let w0 = rows.iter().map(|r| r[0].chars().count()).chain([head[0].len()]).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].chars().count()).chain([head[1].len()]).max().unwrap_or(0);
    let _ = writeln!(o, "{:<w0$}  {:<w1$}  {}", head[0], head[1], head[2]);
    for r in rows {
        let _ = writeln!(o, "{:<w0$}  {:<w1$}  {}", r[0], r[1], r[2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope { netns: "self".into(), bpffs: "/sys/fs/bpf".into(), cni_cache_dir: "/var/lib/cni/results".into(), netns_dir: "/var/run/netns".into() }
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        let mut r = Report::new(scope());
        r.record("a", Outcome::checked("fine", vec![]));
        r.record("b", Outcome::Skipped("n/a".into()));
        r.finish();
        assert_eq!((r.status, r.exit_code), ("healthy", 0));

        r.record("c", Outcome::Error("cannot read".into()));
        r.finish();
        assert_eq!((r.status, r.exit_code), ("incomplete", 2));

        r.record("d", Outcome::checked("bad", vec![Finding::new("x.y", Severity::Warning, "s", vec!["e".into()], "do")]));
        r.finish();
        assert_eq!((r.status, r.exit_code), ("findings", 1));
        assert_eq!(r.findings[0].check, "d");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["findings"][0]["id"], "x.y");
        assert_eq!(v["findings"][0]["severity"], "warning");
        assert!(r.to_table().contains("action:   do"));
    }

    #[test]
    fn evidence_is_capped_but_counted() {
        let f = Finding::new("x", Severity::Critical, "s", (0..500).map(|i| i.to_string()).collect(), "a");
        assert_eq!(f.count, 500);
        assert_eq!(f.evidence.len(), MAX_EVIDENCE + 1);
    }
}
