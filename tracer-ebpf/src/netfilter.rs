//! The netfilter side of drop attribution. The observers themselves are tiny programs the
//! loader assembles and attaches with BPF netfilter links (aya has no netfilter program type);
//! they write `NF_RING`. Here the drop probe reads it back.
use tracer_common::NF_RING_LEN;

use crate::maps::NF_RING;

/// The observer slot `skb` passed last on this CPU, newest first; 0 when none.
#[inline(always)]
pub fn last_slot(skb: u64) -> u32 {
    let Some(r) = NF_RING.get_ptr(0) else { return 0 };
    // SAFETY: this CPU's ring; observers of this CPU do not run while the drop probe runs.
    let r = unsafe { &*r };
    for i in 1..=NF_RING_LEN as u32 {
        let idx = (r.head.wrapping_sub(i) as usize) & (NF_RING_LEN - 1);
        if r.skb[idx] == skb {
            return r.slot[idx];
        }
    }
    0
}
