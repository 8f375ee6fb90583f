//! The kernel modules a guest gets: everything under the directories the tests reach (netfilter,
//! tc, veth) plus what those depend on, staged with a fresh `modules.dep` so `modprobe` (and the
//! kernel's own module autoload) works inside the guest.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, Result};

use super::kernel::Kernel;
use crate::cmd;

/// Module paths (relative to lib/modules/<release>) shipped with their dependencies: iptables
/// (nft and legacy, matches, targets), nftables, conntrack/NAT, tc classifiers and actions,
/// veth. Whole directories, so a rule a test adds later autoloads what it needs.
const SHIPPED: &[&str] = &[
    "kernel/net/netfilter/",
    "kernel/net/ipv4/netfilter/",
    "kernel/net/ipv6/netfilter/",
    "kernel/net/sched/",
    "kernel/drivers/net/veth.ko",
];

/// Loaded at boot (`modprobe`), in this order; the rest autoload. A name the kernel has built
/// in succeeds; a name it lacks is reported, not fatal.
pub const BOOT: &[&str] = &[
    "veth",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_reject_inet",
    "nf_conntrack",
    "x_tables",
    "xt_comment",
    "xt_conntrack",
    "ip_tables",
    "iptable_filter",
    "ipt_REJECT",
    "ip6_tables",
    "ip6table_filter",
];

/// Files next to modules.dep that modprobe reads (builtin list, order).
const META: &[&str] = &[
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
];

/// Copies the shipped modules of `kernel` into `stage/lib/modules/<release>` and runs
/// `depmod -b stage`. Returns how many modules were staged.
pub fn stage(kernel: &Kernel, stage: &Path) -> Result<usize> {
    let dep_text = std::fs::read_to_string(kernel.modules.join("modules.dep"))
        .with_context(|| format!("cannot read modules.dep of {}", kernel.release))?;
    let deps = parse_dep(&dep_text);
    let wanted = closure(&deps, |m| SHIPPED.iter().any(|p| m.starts_with(p)));
    let _ = std::fs::remove_dir_all(stage);
    let dest = stage.join("lib/modules").join(&kernel.release);
    for m in &wanted {
        let to = dest.join(m);
        std::fs::create_dir_all(to.parent().unwrap_or(&dest))?;
        std::fs::copy(kernel.modules.join(m), &to)
            .with_context(|| format!("cannot copy module {m}"))?;
    }
    for f in META {
        let from = kernel.modules.join(f);
        if from.exists() {
            std::fs::copy(&from, dest.join(f))?;
        }
    }
    cmd::run(cmd::new("depmod").arg("-b").arg(stage).arg(&kernel.release))?;
    Ok(wanted.len())
}

/// `kernel/a.ko: kernel/b.ko kernel/c.ko` lines → module → its dependencies.
fn parse_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| {
            (
                m.trim().to_string(),
                deps.split_whitespace().map(String::from).collect(),
            )
        })
        .collect()
}

/// The modules `pick` selects and everything they depend on, transitively.
fn closure(deps: &BTreeMap<String, Vec<String>>, pick: impl Fn(&str) -> bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = deps.keys().filter(|m| pick(m)).cloned().collect();
    while let Some(m) = todo.pop() {
        if out.insert(m.clone()) {
            todo.extend(deps.get(&m).into_iter().flatten().cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_follows_dependencies() {
        let deps = parse_dep(
            "kernel/net/netfilter/nft_compat.ko: kernel/net/netfilter/x_tables.ko kernel/net/netfilter/nf_tables.ko\n\
             kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko\n\
             kernel/net/netfilter/nfnetlink.ko:\nkernel/net/netfilter/x_tables.ko:\nkernel/lib/libcrc32c.ko:\n\
             kernel/fs/ext4/ext4.ko: kernel/lib/libcrc32c.ko\n",
        );
        let got = closure(&deps, |m| m.ends_with("nft_compat.ko"));
        assert!(got.contains("kernel/lib/libcrc32c.ko"), "{got:?}");
        assert!(got.contains("kernel/net/netfilter/nfnetlink.ko"));
        assert!(!got.contains("kernel/fs/ext4/ext4.ko"));
        assert_eq!(got.len(), 5);
    }
}
