//! What the kernel offers the tracer: BTF, drop reasons, and the hooks a capture can use.
//! Only what blocks a capture is a finding; hooks that are merely absent (kprobe, fentry on
//! locked-down kernels) are shown in the hook table.
use crate::kernel::{
    btf::{KernelBtf, VMLINUX},
    features::{self, Hook},
};

use super::report::{Finding, KernelReport, Outcome, Report, Severity};

pub fn check(report: &mut Report) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    let btf = KernelBtf::load();
    let btf_outcome = match &btf {
        Ok(_) => Outcome::checked(format!("{VMLINUX} present"), vec![]),
        Err(e) => Outcome::checked(
            format!("{e:#}"),
            vec![Finding::new(
                "kernel.no-btf",
                Severity::Critical,
                "the kernel exposes no BTF: tracer cannot compute struct offsets",
                vec![format!("{VMLINUX} is missing or unreadable: {e:#}")],
                "Use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default in current Debian, Ubuntu, RHEL 8.2+ and Fedora kernels).",
            )],
        ),
    };
    report.record("kernel.btf", btf_outcome);

    let reasons = btf.as_ref().ok().and_then(|b| b.enum_values("skb_drop_reason").ok()).unwrap_or_default();
    let reasons_outcome = if reasons.is_empty() {
        if btf.is_ok() {
            Outcome::checked(
                "no enum skb_drop_reason in BTF",
                vec![Finding::new(
                    "kernel.no-drop-reasons",
                    Severity::Warning,
                    "the kernel's BTF has no drop reasons: drops will be reported without a reason",
                    vec!["enum skb_drop_reason not found in kernel BTF".into()],
                    "Drop reasons need Linux 5.17 or later; on older kernels the tracer still sees drops and where they happen.",
                )],
            )
        } else {
            Outcome::Skipped("no BTF to read drop reasons from".into())
        }
    } else {
        let netfilter = reasons.iter().find(|(n, _)| n == "SKB_DROP_REASON_NETFILTER_DROP").map_or_else(String::new, |(_, v)| format!(", NETFILTER_DROP = {v}"));
        Outcome::checked(format!("{} values in enum skb_drop_reason{netfilter}", reasons.len()), vec![])
    };
    report.record("kernel.drop-reasons", reasons_outcome);

    let feats = features::probe(btf.as_ref().ok());
    let drop_hooks = [Hook::TpBtf, Hook::RawTp, Hook::Tracepoint];
    let usable: Vec<&str> = feats.hooks.iter().filter(|h| feats.usable(h.hook)).map(|h| h.hook.name()).collect();
    let hooks_outcome = if drop_hooks.iter().any(|&h| feats.usable(h)) {
        Outcome::checked(format!("usable: {}", usable.join(", ")), vec![])
    } else {
        let evidence = feats.hooks.iter().filter(|h| drop_hooks.contains(&h.hook)).map(|h| format!("{}: {}", h.hook, h.detail)).collect();
        Outcome::checked(
            "no way to attach to skb:kfree_skb",
            vec![Finding::new(
                "kernel.no-drop-hook",
                Severity::Critical,
                "tracer capture cannot attach to the kfree_skb tracepoint",
                evidence,
                "Run as root (CAP_BPF + CAP_PERFMON), check kernel lockdown (`cat /sys/kernel/security/lockdown`) and kernel.unprivileged_bpf_disabled; the kernel needs CONFIG_BPF_EVENTS.",
            )],
        )
    };
    report.record("kernel.hooks", hooks_outcome);
    report.kernel = Some(KernelReport { release, btf: btf.is_ok(), drop_reasons: reasons.len(), hooks: feats.hooks });
}
