//! `nf_tables` over netlink (`NETLINK_NETFILTER`, uapi `linux/netfilter/nf_tables.h`): the
//! chains with their hooks, without running `nft` (a process per namespace) or listing a rule;
//! the ruleset's generation and the counters of every rule and base chain, without the rest
//! of the rules (what a counter window needs when the rules did not change). Read-only requests.
use std::{
    collections::{BTreeSet, HashMap},
    io,
    path::Path,
};

use anyhow::Result;

use super::rtnl::{NLM_F_DUMP, Rtnl, attrs, cstr, put_attr};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_COUNTERS: u16 = 8;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
/// Size of `struct nfgenmsg` (family, version, resource id), before the attributes.
const NFGENMSG_LEN: usize = 4;

/// A base chain: where `nf_tables` registered a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `NFPROTO_*` of its table (1 inet, 2 ip, 10 ip6, …).
    pub family: u8,
    pub table: String,
    pub name: String,
    pub hook: u32,
    pub priority: i32,
}

/// A chain: its table's `NFPROTO_*` family, the table, the chain.
pub type ChainKey = (u8, String, String);
/// A rule's handle and its counter (packets, bytes), if it has one.
pub type RuleCounter = (u64, Option<(u64, u64)>);

/// Every rule's counter (packets, bytes) in the kernel's order, `None` for a rule without a
/// `counter` expression, and the base chains' own counters (their policy's).
#[derive(Debug, Default)]
pub struct Counters {
    pub rules: HashMap<ChainKey, Vec<RuleCounter>>,
    pub chains: HashMap<ChainKey, (u64, u64)>,
}

pub struct Nfnl(Rtnl);

impl Nfnl {
    /// A socket in the namespace at `path`.
    pub fn open_in(path: &Path) -> Result<Self> {
        Ok(Self(crate::netns::run_in(path, || Rtnl::open_protocol(libc::NETLINK_NETFILTER))??))
    }

    /// Every base chain of every table (regular chains are only counted; no rule is read),
    /// and how many chains there are in all.
    pub fn base_chains(&mut self) -> io::Result<(Vec<BaseChain>, usize)> {
        let answers = self.0.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETCHAIN, NLM_F_DUMP, &nfgenmsg(0))?;
        Ok((answers.iter().filter_map(|(_, p)| parse_chain(p)).collect(), answers.len()))
    }

    /// The ruleset's generation: it changes with every committed change of any table (never
    /// with counters), so two reads that agree bracket a time the rules stood still.
    pub fn generation(&mut self) -> io::Result<u32> {
        let mut id = None;
        self.0.request_each(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, 0, &nfgenmsg(0), |_, p| {
            id = p.get(NFGENMSG_LEN..).and_then(|a| attrs(a).find(|(t, _)| *t == NFTA_GEN_ID)).and_then(|(_, v)| be_u32(v));
        })?;
        id.ok_or_else(|| io::Error::other("nf_tables answered no generation id"))
    }

    /// The counters of every rule and base chain (`only` None), or of the rules of `only`'s
    /// chains and of those that are base chains (a dump filtered by table and chain per
    /// chain: a window's candidate chains, not the 50,000 rules of the others). Each rule's
    /// counter is kept as it is read (a dump of 50,000 rules is never held whole).
    pub fn counters(&mut self, only: Option<&BTreeSet<ChainKey>>) -> io::Result<Counters> {
        let mut c = Counters::default();
        let mut last: Option<ChainKey> = None;
        let mut run: Vec<RuleCounter> = Vec::new();
        let mut each = |_: u16, p: &[u8]| {
            let Some((key, rule)) = parse_rule(p) else { return };
            // A chain's rules come together: keyed once per chain, not once per rule.
            if last.as_ref() != Some(&key)
                && let Some(k) = last.replace(key)
            {
                c.rules.entry(k).or_default().append(&mut run);
            }
            run.push(rule);
        };
        let rules = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE;
        match only {
            None => self.0.request_each(rules, NLM_F_DUMP, &nfgenmsg(0), &mut each)?,
            Some(chains) => {
                for key in chains {
                    self.0.request_each(rules, NLM_F_DUMP, &named(key, NFTA_RULE_TABLE, NFTA_RULE_CHAIN), &mut each)?;
                }
            }
        }
        if let Some(k) = last {
            c.rules.entry(k).or_default().append(&mut run);
        }
        let mut each = |_: u16, p: &[u8]| {
            if let Some((key, counter)) = parse_chain_counters(p) {
                c.chains.insert(key, counter);
            }
        };
        let chains = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETCHAIN;
        match only {
            None => self.0.request_each(chains, NLM_F_DUMP, &nfgenmsg(0), &mut each)?,
            Some(keys) => {
                for key in keys {
                    self.0.request_each(chains, 0, &named(key, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME), &mut each)?;
                }
            }
        }
        Ok(c)
    }
}

/// The header and the table and chain attributes of a request about one chain.
fn named((family, table, chain): &ChainKey, table_attr: u16, chain_attr: u16) -> Vec<u8> {
    let mut b = nfgenmsg(*family).to_vec();
    for (t, name) in [(table_attr, table), (chain_attr, chain)] {
        put_attr(&mut b, t, &[name.as_bytes(), b"\0"].concat());
    }
    b
}

fn nfgenmsg(family: u8) -> [u8; NFGENMSG_LEN] {
    [family, 0, 0, 0]
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?))
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(0..8)?.try_into().ok()?))
}

/// `NFTA_COUNTER_PACKETS` and `NFTA_COUNTER_BYTES` of a counter's attributes.
fn counter(v: &[u8]) -> Option<(u64, u64)> {
    let (mut packets, mut bytes) = (None, None);
    for (t, v) in attrs(v) {
        match t {
            NFTA_COUNTER_PACKETS => packets = be_u64(v),
            NFTA_COUNTER_BYTES => bytes = be_u64(v),
            _ => {}
        }
    }
    packets.zip(bytes)
}

/// A rule's chain, handle and first `counter` expression.
fn parse_rule(p: &[u8]) -> Option<(ChainKey, RuleCounter)> {
    let family = *p.first()?;
    let (mut table, mut chain, mut handle, mut count) = (None, None, None, None);
    for (t, v) in attrs(p.get(NFGENMSG_LEN..)?) {
        match t {
            NFTA_RULE_TABLE => table = Some(cstr(v)),
            NFTA_RULE_CHAIN => chain = Some(cstr(v)),
            NFTA_RULE_HANDLE => handle = be_u64(v),
            NFTA_RULE_EXPRESSIONS => {
                count = attrs(v).filter(|(t, _)| *t == NFTA_LIST_ELEM).find_map(|(_, e)| {
                    let mut name_is_counter = false;
                    let mut data = None;
                    for (et, ev) in attrs(e) {
                        match et {
                            NFTA_EXPR_NAME => name_is_counter = cstr(ev) == "counter",
                            NFTA_EXPR_DATA => data = Some(ev),
                            _ => {}
                        }
                    }
                    data.filter(|_| name_is_counter).and_then(counter)
                });
            }
            _ => {}
        }
    }
    Some(((family, table?, chain?), (handle?, count)))
}

/// A base chain's own counters (regular chains have none).
fn parse_chain_counters(p: &[u8]) -> Option<(ChainKey, (u64, u64))> {
    let family = *p.first()?;
    let (mut table, mut name, mut count) = (None, None, None);
    for (t, v) in attrs(p.get(NFGENMSG_LEN..)?) {
        match t {
            NFTA_CHAIN_TABLE => table = Some(cstr(v)),
            NFTA_CHAIN_NAME => name = Some(cstr(v)),
            NFTA_CHAIN_COUNTERS => count = counter(v),
            _ => {}
        }
    }
    Some(((family, table?, name?), count?))
}

fn parse_chain(p: &[u8]) -> Option<BaseChain> {
    let family = *p.first()?;
    let (mut table, mut name, mut hook) = (None, None, None);
    for (t, v) in attrs(p.get(NFGENMSG_LEN..)?) {
        match t {
            NFTA_CHAIN_TABLE => table = Some(cstr(v)),
            NFTA_CHAIN_NAME => name = Some(cstr(v)),
            NFTA_CHAIN_HOOK => {
                let (mut num, mut prio) = (None, None);
                for (ht, hv) in attrs(v) {
                    match ht {
                        NFTA_HOOK_HOOKNUM => num = be_u32(hv),
                        NFTA_HOOK_PRIORITY => prio = be_u32(hv).map(|p| i32::from_be_bytes(p.to_be_bytes())),
                        _ => {}
                    }
                }
                hook = num.zip(prio);
            }
            _ => {}
        }
    }
    let (hook, priority) = hook?;
    Some(BaseChain { family, table: table?, name: name?, hook, priority })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&u16::try_from(4 + v.len()).unwrap().to_ne_bytes());
        b.extend_from_slice(&t.to_ne_bytes());
        b.extend_from_slice(v);
        b.resize(b.len().div_ceil(4) * 4, 0);
        b
    }

    #[test]
    fn parses_a_base_chain_and_skips_a_regular_one() {
        let hook = [attr(NFTA_HOOK_HOOKNUM, &2u32.to_be_bytes()), attr(NFTA_HOOK_PRIORITY, &(-150i32).to_be_bytes())].concat();
        let mut msg = vec![2, 0, 0, 0];
        msg.extend(attr(NFTA_CHAIN_TABLE, b"filter\0"));
        msg.extend(attr(NFTA_CHAIN_NAME, b"FORWARD\0"));
        msg.extend(attr(NFTA_CHAIN_HOOK | (1 << 15), &hook));
        assert_eq!(parse_chain(&msg), Some(BaseChain { family: 2, table: "filter".into(), name: "FORWARD".into(), hook: 2, priority: -150 }));
        let mut regular = vec![2, 0, 0, 0];
        regular.extend(attr(NFTA_CHAIN_TABLE, b"filter\0"));
        regular.extend(attr(NFTA_CHAIN_NAME, b"KUBE-SERVICES\0"));
        assert_eq!(parse_chain(&regular), None);
        assert_eq!(parse_chain_counters(&regular), None, "a regular chain has no counters");
        let counters = [attr(NFTA_COUNTER_BYTES, &640u64.to_be_bytes()), attr(NFTA_COUNTER_PACKETS, &10u64.to_be_bytes())].concat();
        msg.extend(attr(NFTA_CHAIN_COUNTERS | (1 << 15), &counters));
        assert_eq!(parse_chain_counters(&msg), Some(((2, "filter".into(), "FORWARD".into()), (10, 640))));
    }

    fn expr(name: &[u8], data: &[u8]) -> Vec<u8> {
        attr(NFTA_LIST_ELEM | (1 << 15), &[attr(NFTA_EXPR_NAME, name), attr(NFTA_EXPR_DATA | (1 << 15), data)].concat())
    }

    #[test]
    fn parses_a_rules_first_counter_and_its_handle() {
        let counters = [attr(NFTA_COUNTER_BYTES, &1_500u64.to_be_bytes()), attr(NFTA_COUNTER_PACKETS, &3u64.to_be_bytes())].concat();
        let exprs = [expr(b"payload\0", &attr(1, &[0; 4])), expr(b"counter\0", &counters), expr(b"counter\0", &[attr(NFTA_COUNTER_BYTES, &9u64.to_be_bytes()), attr(NFTA_COUNTER_PACKETS, &9u64.to_be_bytes())].concat())].concat();
        let mut msg = vec![10, 0, 0, 0];
        msg.extend(attr(NFTA_RULE_TABLE, b"filter\0"));
        msg.extend(attr(NFTA_RULE_CHAIN, b"KUBE-FORWARD\0"));
        msg.extend(attr(NFTA_RULE_HANDLE, &42u64.to_be_bytes()));
        msg.extend(attr(NFTA_RULE_EXPRESSIONS | (1 << 15), &exprs));
        assert_eq!(parse_rule(&msg), Some(((10, "filter".into(), "KUBE-FORWARD".into()), (42, Some((3, 1_500))))));
        // Without a counter expression: the rule, no counter.
        let mut bare = vec![1, 0, 0, 0];
        bare.extend(attr(NFTA_RULE_TABLE, b"t\0"));
        bare.extend(attr(NFTA_RULE_CHAIN, b"c\0"));
        bare.extend(attr(NFTA_RULE_HANDLE, &7u64.to_be_bytes()));
        bare.extend(attr(NFTA_RULE_EXPRESSIONS | (1 << 15), &expr(b"immediate\0", &attr(1, &[0; 4]))));
        assert_eq!(parse_rule(&bare), Some(((1, "t".into(), "c".into()), (7, None))));
        for n in 0..msg.len() {
            let _ = parse_rule(&msg[..n]);
        }
    }
}
