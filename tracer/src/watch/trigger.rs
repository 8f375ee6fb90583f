//! `--trigger SPEC`: when to dump. Grammar (tokens separated by spaces):
//!
//! ```text
//! spec      := [name ":"] condition+ "at" [">=" | "≥"] rate "/s" ["for" duration]
//! condition := REASON | "reason=" REASON | "rule~" text | "pod=" ns "/" name | "iface=" name
//! ```
//!
//! A trigger fires when the drops matching every condition reach `rate` per second on average
//! over the last `duration` (default 1s), counted from the exact kernel totals the metrics
//! hold (so a rate-limited flood still fires). `rule~` is a substring of the rule as the
//! capture prints it (`-A FORWARD … -j DROP` for iptables).
use std::time::Duration;

use anyhow::{Result, bail};

use super::metrics::DropLabels;

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Reason(String),
    Rule(String),
    Pod(String),
    Iface(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The `trigger` label of `tracer_dumps_total` and the dump's name part.
    pub name: String,
    pub conds: Vec<Cond>,
    /// Drops per second.
    pub rate: f64,
    pub window: Duration,
}

/// Parses one spec; the error says which token is wrong and shows the form.
pub fn parse(spec: &str) -> Result<Spec> {
    const FORM: &str = "expected `[NAME:] CONDITION... at [>=]RATE/s [for DURATION]`, e.g. `NETFILTER_DROP at >=50/s for 5s`";
    let text = spec.trim();
    let (name, body) = match text.split_once(':') {
        Some((n, b)) if is_name(n.trim()) && !n.contains('=') && !n.contains('~') => (Some(n.trim().to_string()), b),
        _ => (None, text),
    };
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let Some(at) = tokens.iter().position(|t| *t == "at") else { bail!("--trigger {spec:?}: no `at RATE/s`; {FORM}") };
    let mut conds = Vec::new();
    for t in &tokens[..at] {
        conds.push(condition(t).map_err(|e| anyhow::anyhow!("--trigger {spec:?}: {e}; {FORM}"))?);
    }
    if conds.is_empty() {
        bail!("--trigger {spec:?}: name at least a drop reason, a rule~substring or a pod=NS/NAME before `at`; {FORM}");
    }
    let mut rest = tokens[at + 1..].iter().copied().peekable();
    let mut rate_tok = rest.next().unwrap_or_default();
    if matches!(rate_tok, ">=" | "≥") {
        rate_tok = rest.next().unwrap_or_default();
    }
    let rate_tok = rate_tok.trim_start_matches(">=").trim_start_matches('≥');
    let Some(num) = rate_tok.strip_suffix("/s") else { bail!("--trigger {spec:?}: rate {rate_tok:?} must end in /s; {FORM}") };
    let rate: f64 = num.parse().map_err(|_| anyhow::anyhow!("--trigger {spec:?}: rate {num:?} is not a number; {FORM}"))?;
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--trigger {spec:?}: the rate must be above 0/s");
    }
    let window = match (rest.next(), rest.next()) {
        (None, _) => Duration::from_secs(1),
        (Some("for"), Some(d)) => humantime::parse_duration(d).map_err(|e| anyhow::anyhow!("--trigger {spec:?}: duration {d:?}: {e}; {FORM}"))?,
        (Some(t), _) => bail!("--trigger {spec:?}: unexpected {t:?} after the rate; {FORM}"),
    };
    if let Some(t) = rest.next() {
        bail!("--trigger {spec:?}: unexpected {t:?} at the end; {FORM}");
    }
    if window < Duration::from_secs(1) || window > Duration::from_hours(1) {
        bail!("--trigger {spec:?}: the window must be between 1s and 1h");
    }
    let name = name.unwrap_or_else(|| body.split_whitespace().collect::<Vec<_>>().join(" "));
    Ok(Spec { name, conds, rate, window })
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn condition(t: &str) -> Result<Cond, String> {
    let nonempty = |v: &str, what: &str| if v.is_empty() { Err(format!("{what} is empty in {t:?}")) } else { Ok(v.to_string()) };
    if let Some(v) = t.strip_prefix("reason=") {
        return reason(v).map(Cond::Reason);
    }
    if let Some(v) = t.strip_prefix("rule~").or_else(|| t.strip_prefix("chain~")) {
        return nonempty(v, "the rule text").map(Cond::Rule);
    }
    if let Some(v) = t.strip_prefix("pod=") {
        if !v.contains('/') {
            return Err(format!("pod {v:?} must be NAMESPACE/NAME"));
        }
        return Ok(Cond::Pod(v.to_string()));
    }
    if let Some(v) = t.strip_prefix("iface=") {
        return nonempty(v, "the interface").map(Cond::Iface);
    }
    if t.contains('=') || t.contains('~') {
        return Err(format!("unknown condition {t:?} (reason=, rule~, pod=, iface=)"));
    }
    reason(t).map(Cond::Reason)
}

/// A drop reason as the kernel names it, without `SKB_DROP_REASON_`.
fn reason(v: &str) -> Result<String, String> {
    let v = v.strip_prefix("SKB_DROP_REASON_").unwrap_or(v);
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("{v:?} is not a drop reason (upper case, e.g. NETFILTER_DROP)"));
    }
    Ok(v.to_string())
}

impl Spec {
    /// Whether a metric series counts towards this trigger.
    pub fn matches(&self, l: &DropLabels) -> bool {
        self.conds.iter().all(|c| match c {
            Cond::Reason(r) => l.reason == *r,
            Cond::Rule(s) => l.rule.contains(s.as_str()),
            Cond::Pod(p) => l.pod == *p,
            Cond::Iface(i) => l.ifname == *i,
        })
    }
}

/// A trigger's recent counts, by the kernel read that counted them (`CLOCK_MONOTONIC` ns).
/// Counts can arrive late (a netfilter rule is named once a ruleset snapshot closes its
/// window), so the window ends at the newest read seen, not at the present, and counts read
/// before the trigger was (re)armed never count.
pub struct Rate {
    pub spec: Spec,
    buckets: Vec<(u64, u64)>,
    since: u64,
}

impl Rate {
    pub fn new(spec: Spec) -> Self {
        Self { spec, buckets: Vec::new(), since: 0 }
    }

    /// `n` matching drops counted by the read at `at`.
    pub fn add(&mut self, at: u64, n: u64) {
        if at >= self.since && n > 0 {
            self.buckets.push((at, n));
        }
    }

    /// Whether the drops of the window ending at the newest read reach the rate.
    pub fn reached(&mut self) -> bool {
        let Some(newest) = self.buckets.iter().map(|&(t, _)| t).max() else { return false };
        let window = u64::try_from(self.spec.window.as_nanos()).unwrap_or(u64::MAX);
        // Reads come about every second: a window of W seconds holds W reads.
        let from = newest.saturating_sub(window.saturating_sub(window / 10));
        self.buckets.retain(|&(t, _)| t >= from);
        let total: u64 = self.buckets.iter().map(|&(_, n)| n).sum();
        #[expect(clippy::cast_precision_loss, reason = "drop counts far below 2^52")]
        let reached = total as f64 >= self.spec.rate * self.spec.window.as_secs_f64();
        reached
    }

    /// Forgets what was counted up to `now` (the trigger fired, or is held back).
    pub fn reset_at(&mut self, now: u64) {
        self.buckets.clear();
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let s = parse("NETFILTER_DROP at ≥ 50/s for 5s").unwrap();
        assert_eq!(s.conds, vec![Cond::Reason("NETFILTER_DROP".into())]);
        assert!((s.rate - 50.0).abs() < f64::EPSILON);
        assert_eq!(s.window, Duration::from_secs(5));
        assert_eq!(s.name, "NETFILTER_DROP at ≥ 50/s for 5s");
        let s = parse("fw: rule~KUBE-FIREWALL pod=default/web-0 at >=2.5/s").unwrap();
        assert_eq!(s.name, "fw");
        assert_eq!(s.conds, vec![Cond::Rule("KUBE-FIREWALL".into()), Cond::Pod("default/web-0".into())]);
        assert_eq!(s.window, Duration::from_secs(1));
        assert_eq!(parse("reason=SKB_DROP_REASON_NO_SOCKET at 1/s").unwrap().conds, vec![Cond::Reason("NO_SOCKET".into())]);
    }

    #[test]
    fn errors_name_the_token() {
        for (bad, says) in [
            ("NETFILTER_DROP", "no `at"),
            ("at 5/s", "name at least"),
            ("NETFILTER_DROP at 5", "must end in /s"),
            ("NETFILTER_DROP at x/s", "not a number"),
            ("NETFILTER_DROP at 0/s", "above 0"),
            ("netfilter_drop at 1/s", "not a drop reason"),
            ("pod=web at 1/s", "NAMESPACE/NAME"),
            ("foo=bar at 1/s", "unknown condition"),
            ("NO_SOCKET at 1/s for ever", "duration"),
            ("NO_SOCKET at 1/s during 5s", "unexpected"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn rate_over_the_window() {
        const S: u64 = 1_000_000_000;
        let mut r = Rate::new(parse("X at 10/s for 2s").unwrap());
        r.add(S, 5);
        assert!(!r.reached());
        r.add(2 * S, 10);
        assert!(!r.reached());
        // Late counts of an earlier read still count while in the window.
        r.add(S + S / 2, 5);
        assert!(r.reached());
        // The first reads left the window.
        r.add(4 * S, 1);
        assert!(!r.reached());
        // Reads before a reset never count again.
        r.reset_at(5 * S);
        r.add(4 * S, 100);
        assert!(!r.reached());
        r.add(5 * S, 20);
        assert!(r.reached());
    }
}
