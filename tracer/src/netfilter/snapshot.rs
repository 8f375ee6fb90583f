//! Reading a namespace's rulesets with the tools the user has (iptables-save, nft). A missing
//! tool just means that back end is not in use here.
use std::{path::Path, process::Stdio};

use super::{NFPROTO_IPV6, iptables::Save, nft::Ruleset};
use crate::netns;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nft_v4: Save,
    pub nft_v6: Save,
    pub legacy_v4: Save,
    pub legacy_v6: Save,
    pub nft: Ruleset,
}

impl Snapshot {
    /// Lists every ruleset of the namespace at `ns_path`.
    pub fn take(ns_path: &Path) -> Self {
        let run = |prog: &str, args: &[&str]| -> String {
            let Ok(mut cmd) = netns::command_in(ns_path, prog) else { return String::new() };
            match cmd.args(args).stdin(Stdio::null()).stderr(Stdio::null()).output() {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
                _ => String::new(),
            }
        };
        Self {
            nft_v4: Save::parse(&run("iptables-nft-save", &["-c"])),
            nft_v6: Save::parse(&run("ip6tables-nft-save", &["-c"])),
            legacy_v4: Save::parse(&run("iptables-legacy-save", &["-c"])),
            legacy_v6: Save::parse(&run("ip6tables-legacy-save", &["-c"])),
            nft: Ruleset::parse(&run("nft", &["-j", "list", "ruleset"]), &run("nft", &["-a", "list", "ruleset"])),
        }
    }

    pub fn iptables_nft(&self, pf: u32) -> &Save {
        if pf == NFPROTO_IPV6 { &self.nft_v6 } else { &self.nft_v4 }
    }

    pub fn iptables_legacy(&self, pf: u32) -> &Save {
        if pf == NFPROTO_IPV6 { &self.legacy_v6 } else { &self.legacy_v4 }
    }
}
