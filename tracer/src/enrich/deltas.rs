//! Rule counters over a window: how far each candidate's moved, and which chains' counters a
//! window must read to tell its drops' candidates apart.
use std::collections::BTreeSet;

use crate::netfilter::{
    Backend, Entry,
    counters::{self, Needs},
    eval::Candidate,
    iptables::Save,
    nft::Ruleset,
};

/// The chains whose counters tell `cands` apart: each candidate rule's (a policy's: its base
/// chain's own). Legacy rules are not read over netlink, and no candidate may mean the
/// rules changed: every chain then.
pub fn needs<'a>(cands: impl ExactSizeIterator<Item = (&'a Entry, &'a Candidate)>) -> Needs {
    let any = cands.len() > 0;
    let mut chains = BTreeSet::new();
    for (e, c) in cands {
        let family = match e.backend {
            Backend::IptablesNft => u8::try_from(e.pf).ok()?,
            Backend::Nftables => counters::family_of(&e.family)?,
            Backend::IptablesLegacy => return None,
            Backend::Conntrack => continue,
        };
        let chain = if c.chain.is_empty() { &e.chain } else { &c.chain };
        chains.insert((family, e.table.clone(), chain.clone()));
    }
    any.then_some(chains)
}

/// How far candidate `c`'s counter (a policy's: its chain's) moved from `old` to `new`.
pub fn iptables(old: &Save, new: &Save, table: &str, c: &Candidate) -> u64 {
    let (Some(nc), oc) = (new.chain(table, &c.chain), old.chain(table, &c.chain)) else { return 0 };
    let Some(i) = c.index else {
        return nc.packets.saturating_sub(oc.map_or(0, |o| o.packets));
    };
    let now = nc.rules.get(i).map_or(0, |r| r.packets);
    let before = oc
        .and_then(|o| o.rules.get(i).filter(|r| r.text == c.rule).or_else(|| o.rules.iter().find(|r| r.text == c.rule)))
        .map_or(0, |r| r.packets);
    now.saturating_sub(before)
}

/// How far native nft candidate `c`'s counter moved (None: the rule has no `counter`).
pub fn nft(old: &Ruleset, new: &Ruleset, e: &Entry, c: &Candidate) -> Option<u64> {
    let i = c.index?;
    let rule = new.chain(&e.family, &e.table, &c.chain)?.rules.get(i)?;
    let now = rule.packets?;
    let before = old
        .chain(&e.family, &e.table, &c.chain)
        .and_then(|ch| ch.rules.iter().find(|r| r.handle == rule.handle))
        .and_then(|r| r.packets)
        .unwrap_or(0);
    Some(now.saturating_sub(before))
}
