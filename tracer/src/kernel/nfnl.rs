//! `nf_tables` over netlink (`NETLINK_NETFILTER`, uapi `linux/netfilter/nf_tables.h`): the
//! chains with their hooks, without running `nft` (a process per namespace) or listing a rule.
//! Read-only requests.
use std::{io, path::Path};

use anyhow::Result;

use super::rtnl::{NLM_F_DUMP, Rtnl, attrs, cstr};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
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
}

fn nfgenmsg(family: u8) -> [u8; NFGENMSG_LEN] {
    [family, 0, 0, 0]
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?))
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
    }
}
