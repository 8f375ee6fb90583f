//! Drop-reason names, read from the running kernel: `enum skb_drop_reason` in BTF, else the
//! `__print_symbolic` table of the `kfree_skb` tracepoint format. Values differ between kernels
//! (`NETFILTER_DROP` is 7 on 6.1 and 12 on 6.18), so no table is compiled in.
use std::collections::HashMap;

use anyhow::{Result, bail};

use super::btf::KernelBtf;

const PREFIX: &str = "SKB_DROP_REASON_";
/// Subsystem drop reasons keep their subsystem in the upper bits (include/net/dropreason.h).
const SUBSYS_SHIFT: u32 = 16;

#[derive(Debug, Clone, Default)]
pub struct Reasons {
    names: HashMap<u32, String>,
    /// `SKB_CONSUMED`: a free that is not a drop.
    pub consumed: Option<u32>,
    pub not_dropped_yet: Option<u32>,
}

impl Reasons {
    pub fn load(btf: &KernelBtf) -> Result<Self> {
        Self::from_sources(btf.enum_values("skb_drop_reason"), || super::tracefs::format("skb", "kfree_skb"))
    }

    /// BTF's enum first; the tracepoint format (read only when needed) second.
    pub fn from_sources(btf_enum: Result<Vec<(String, u64)>>, format: impl FnOnce() -> Result<String>) -> Result<Self> {
        match btf_enum {
            // Drop reasons are u32 in the tracepoint; the enum never exceeds that.
            Ok(v) => Ok(Self::from_enum(v.into_iter().map(|(n, v)| (n, u32::try_from(v).unwrap_or(u32::MAX))))),
            Err(btf_err) => match format() {
                Ok(fmt) => Self::from_format(&fmt),
                Err(e) => bail!(
                    "this kernel reports no drop reasons (no enum skb_drop_reason in BTF: {btf_err}; no tracepoint format: {e}); tracer needs Linux 5.17 or later"
                ),
            },
        }
    }

    pub fn from_enum(values: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut r = Self::default();
        for (name, v) in values {
            match name.as_str() {
                "SKB_CONSUMED" => r.consumed = Some(v),
                "SKB_NOT_DROPPED_YET" => r.not_dropped_yet = Some(v),
                "SKB_DROP_REASON_MAX" => continue,
                _ => {}
            }
            let short = name.strip_prefix(PREFIX).or_else(|| name.strip_prefix("SKB_")).unwrap_or(&name);
            r.names.entry(v).or_insert_with(|| short.to_string());
        }
        r
    }

    /// Parses `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, …)`.
    pub fn from_format(format: &str) -> Result<Self> {
        let Some(start) = format.find("__print_symbolic(REC->reason") else {
            bail!("the kfree_skb tracepoint has no reason field: tracer needs Linux 5.17 or later");
        };
        let mut pairs = Vec::new();
        let mut rest = &format[start..];
        while let Some(open) = rest.find('{') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find('}') else { break };
            let entry = &rest[..close];
            rest = &rest[close + 1..];
            let mut it = entry.splitn(2, ',');
            let (Some(v), Some(n)) = (it.next(), it.next()) else { continue };
            let Ok(v) = v.trim().parse::<u32>() else { continue };
            let n = n.trim().trim_matches('"');
            let full = if n == "CONSUMED" || n == "NOT_DROPPED_YET" { format!("SKB_{n}") } else { format!("{PREFIX}{n}") };
            pairs.push((full, v));
        }
        if pairs.is_empty() {
            bail!("cannot read drop reasons from the kfree_skb tracepoint format");
        }
        Ok(Self::from_enum(pairs))
    }

    /// The value of a reason by its short name (e.g. `"NETFILTER_DROP"`).
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| n.as_str() == name).map(|(v, _)| *v)
    }

    pub fn name(&self, value: u32) -> String {
        if let Some(n) = self.names.get(&value) {
            return n.clone();
        }
        let subsys = value >> SUBSYS_SHIFT;
        if subsys != 0 {
            format!("SUBSYS_{subsys}_{}", value & ((1 << SUBSYS_SHIFT) - 1))
        } else {
            format!("REASON_{value}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_source_is_a_clear_error() {
        let e = Reasons::from_sources(Err(anyhow::anyhow!("BTF has no enum skb_drop_reason")), || Err(anyhow::anyhow!("tracefs is not mounted")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no drop reasons") && e.contains("Linux 5.17") && e.contains("tracefs is not mounted"), "{e}");
        // A 5.15 kernel: the tracepoint exists but has no reason field.
        let old = "print fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location";
        let e = Reasons::from_sources(Err(anyhow::anyhow!("no enum")), || Ok(old.to_string())).unwrap_err().to_string();
        assert!(e.contains("no reason field") && e.contains("5.17"), "{e}");
        // BTF wins, and the format is not even read.
        let r = Reasons::from_sources(Ok(vec![("SKB_DROP_REASON_NO_SOCKET".into(), 3)]), || panic!("format read")).unwrap();
        assert_eq!(r.name(3), "NO_SOCKET");
    }

    #[test]
    fn parses_tracepoint_format() {
        let fmt = r#"print fmt: "skbaddr=%p reason=%s", REC->skbaddr, __print_symbolic(REC->reason, { 0, "NOT_DROPPED_YET" }, { 1, "CONSUMED" }, { 2, "NOT_SPECIFIED" }, { 12, "NETFILTER_DROP" })"#;
        let r = Reasons::from_format(fmt).unwrap();
        assert_eq!(r.name(12), "NETFILTER_DROP");
        assert_eq!(r.value("NETFILTER_DROP"), Some(12));
        assert_eq!(r.consumed, Some(1));
        assert_eq!(r.not_dropped_yet, Some(0));
        assert_eq!(r.name(99), "REASON_99");
        assert_eq!(r.name(0x1_0003), "SUBSYS_1_3");
    }
}
