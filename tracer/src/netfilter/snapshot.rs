//! Reading a namespace's rulesets with the tools the user has (iptables-save, nft). A missing
//! tool means that back end's rules cannot be named; the snapshot says which were missing so
//! the capture can tell the user what it skipped.
use std::{collections::BTreeSet, path::Path, process::Stdio};

use super::{NFPROTO_IPV6, counters::Needs, iptables::Save, nft::Ruleset};
use crate::{kernel::nfnl::ChainKey, netns};

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nft_v4: Save,
    pub nft_v6: Save,
    pub legacy_v4: Save,
    pub legacy_v6: Save,
    pub nft: Ruleset,
    /// Tools needed here but not found in PATH.
    pub missing: BTreeSet<String>,
    /// The `nf_tables` generation the listing read (the same before and after it), when
    /// known: a later window with the same one needs only the counters (`counters.rs`).
    pub generation: Option<u32>,
    /// The chains whose counters this snapshot read, when not all (a window's candidate
    /// chains: the others' are those of an earlier read, see `counters.rs`).
    pub fresh: Option<std::sync::Arc<BTreeSet<ChainKey>>>,
}

impl Snapshot {
    /// Lists every ruleset of the namespace at `ns_path`. Only the tools whose tables exist
    /// are run (a pod namespace usually has none), so a node with a hundred pods starts fast.
    pub fn take(ns_path: &Path) -> Self {
        let before = super::counters::generation(ns_path);
        let mut snap = Self::list(ns_path);
        snap.generation = before.filter(|g| super::counters::generation(ns_path) == Some(*g));
        snap
    }

    /// A window's snapshot after `prev`: its copy with fresh counters (of `needs`' chains)
    /// when the rules did not change since (netlink dumps), else [`Snapshot::take`].
    pub fn refresh(ns_path: &Path, prev: &Self, needs: &Needs) -> Self {
        if let Some(s) = super::counters::refreshed(ns_path, prev, needs.as_ref()) {
            match &s.fresh {
                Some(chains) => log::debug!("{}: counters of {} chains read over netlink (rules unchanged)", ns_path.display(), chains.len()),
                None => log::debug!("{}: counters of every chain read over netlink (rules unchanged)", ns_path.display()),
            }
            return s;
        }
        log::debug!("{}: rules listed again (changed, legacy, or unknown generation)", ns_path.display());
        Self::take(ns_path)
    }

    fn list(ns_path: &Path) -> Self {
        let missing = std::sync::Mutex::new(BTreeSet::new());
        let run = |prog: &str, args: &[&str]| -> Option<String> {
            let mut cmd = netns::command_in(ns_path, prog).ok()?;
            match cmd.args(args).stdin(Stdio::null()).stderr(Stdio::null()).output() {
                Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(prog.to_string());
                    None
                }
                _ => None,
            }
        };
        // Legacy tables are listed by the kernel per namespace.
        let legacy = netns::run_in(ns_path, || {
            let present = |f: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).is_ok_and(|s| !s.trim().is_empty());
            (present("ip_tables_names"), present("ip6_tables_names"))
        })
        .unwrap_or((true, true));
        // The chains only (base chains with hooks, no rules): the rules of the tables
        // iptables-nft keeps are read from iptables-nft-save, whose text names them; listing
        // them again as `nft -j` JSON costs seconds and hundreds of MB at 20,000 rules.
        let chains_json = run("nft", &["-j", "list", "chains"]);
        let chains = chains_json.as_deref().map(|j| Ruleset::parse(j, "")).unwrap_or_default();
        // Without nft we cannot tell which nf_tables families are in use: ask iptables-nft.
        let has = |f: &str| chains_json.is_none() || chains.chains.iter().any(|c| c.family == f);
        let (ip, ip6) = (has("ip"), has("ip6"));
        let save = |yes: bool, prog: &str| if yes { Save::parse(&run(prog, &["-c"]).unwrap_or_default()) } else { Save::default() };
        // The listings are independent: run at once, a snapshot takes as long as the slowest
        // tool (seconds on a node with tens of thousands of rules), not their sum.
        let ((nft_v4, nft_v6), (legacy_v4, legacy_v6)) = std::thread::scope(|s| {
            let v4 = s.spawn(|| save(ip, "iptables-nft-save"));
            let v6 = s.spawn(|| save(ip6, "ip6tables-nft-save"));
            let l4 = s.spawn(|| save(legacy.0, "iptables-legacy-save"));
            let l6 = save(legacy.1, "ip6tables-legacy-save");
            let join = |h: std::thread::ScopedJoinHandle<'_, Save>| h.join().unwrap_or_default();
            ((join(v4), join(v6)), (join(l4), l6))
        });
        // Native nftables tables (and iptables-nft's where iptables-nft-save cannot read
        // them): listed table by table, with their rules.
        let by_iptables = |c: &super::nft::NftChain| match c.family.as_str() {
            "ip" => nft_v4.table(&c.table).is_some(),
            "ip6" => nft_v6.table(&c.table).is_some(),
            _ => false,
        };
        let native: BTreeSet<(String, String)> = chains.chains.iter().filter(|c| !by_iptables(c)).map(|c| (c.family.clone(), c.table.clone())).collect();
        let mut nft = Ruleset { chains: chains.chains.into_iter().filter(|c| !native.contains(&(c.family.clone(), c.table.clone()))).collect() };
        for (family, table) in &native {
            let json = run("nft", &["-j", "list", "table", family, table]).unwrap_or_default();
            let text = run("nft", &["-a", "list", "table", family, table]).unwrap_or_default();
            nft.chains.extend(Ruleset::parse(&json, &text).chains);
        }
        Self { nft_v4, nft_v6, legacy_v4, legacy_v6, nft, missing: missing.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner), generation: None, fresh: None }
    }

    /// Whether this snapshot read the counters of every chain in `needs`.
    pub fn reads(&self, needs: &Needs) -> bool {
        super::counters::covers(self.fresh.as_deref(), needs)
    }

    pub fn iptables_nft(&self, pf: u32) -> &Save {
        if pf == NFPROTO_IPV6 { &self.nft_v6 } else { &self.nft_v4 }
    }

    pub fn iptables_legacy(&self, pf: u32) -> &Save {
        if pf == NFPROTO_IPV6 { &self.legacy_v6 } else { &self.legacy_v4 }
    }
}

/// Says once which of the `tools` missing where rulesets were read it has not said yet.
pub fn warn_missing<'a>(tools: impl IntoIterator<Item = &'a str>) {
    // Once per tool: rules are read at start for some namespaces and after ready for others.
    static WARNED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let missing: BTreeSet<&str> = tools.into_iter().filter(|t| !warned.contains(*t)).collect();
    warned.extend(missing.iter().map(|t| (*t).to_string()));
    if !missing.is_empty() {
        let tools: Vec<&str> = missing.into_iter().collect();
        eprintln!(
            "tracer: warning: not found in PATH: {}; netfilter drops in the rulesets they read are counted but not attributed to a table, chain or rule (install them or fix PATH)",
            tools.join(", ")
        );
    }
}
