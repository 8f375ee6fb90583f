//! The netfilter side of drop attribution. The observers themselves are tiny programs the
//! loader assembles and attaches with BPF netfilter links (aya has no netfilter program type);
//! they write `NF_RING`. Here the drop probe reads it back.
use tracer_common::{NF_RING_LEN, nf_slot};

use crate::{
    maps::NF_RING,
    skb::{self, Mem},
};

/// What a `NETFILTER_DROP` carries: the observer slot `skb` passed last (`last_slot`), flagged
/// `nf_slot::FORWARDED_*` when its route says it was being forwarded (it died at FORWARD or
/// POSTROUTING). A namespace with at most one chain at those hooks that can drop has no
/// observer there, and the flag names that chain; elsewhere the slot does.
#[inline(always)]
pub fn drop_slot<M: Mem>(skb: u64, cfg: &crate::config::Cfg, o: &crate::config::Offs) -> u32 {
    let slot = last_slot(skb);
    if cfg.forward_input_v4() == 0 && cfg.forward_input_v6() == 0 {
        return slot;
    }
    let input = skb::route_input::<M>(skb, o, cfg.direct_facts() != 0);
    if input == 0 {
        slot
    } else if input == cfg.forward_input_v4() {
        slot | nf_slot::FORWARDED_IPV4
    } else if input == cfg.forward_input_v6() {
        slot | nf_slot::FORWARDED_IPV6
    } else {
        slot
    }
}

/// The observer slot `skb` passed last on this CPU; 0 when none.
#[inline(always)]
pub fn last_slot(skb: u64) -> u32 {
    let Some(r) = NF_RING.get_ptr(0) else { return 0 };
    // SAFETY: this CPU's ring; observers of this CPU do not run while the drop probe runs.
    let r = unsafe { &*r };
    // Every entry is compared at a constant offset (unrolled: a load and a branch each, where
    // walking from the head computed each index first), and only a hit, the rare case (`tracer
    // watch` asks on every netfilter drop, most often for an skb no observer saw), works out
    // its age: the newest note of the skb wins (it may have passed several observers).
    let mut slot = 0;
    let mut best = NF_RING_LEN as u32;
    for i in 0..NF_RING_LEN {
        if r.skb[i] == skb {
            let age = r.head.wrapping_sub(i as u32 + 1) & (NF_RING_LEN as u32 - 1);
            if age < best {
                best = age;
                slot = r.slot[i];
            }
        }
    }
    slot
}
