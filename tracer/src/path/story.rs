//! One packet, one story: the hooks a packet passed, in order, and how it ended. Built from
//! path events keyed by the packet id the kernel assigned when the packet first matched.
use std::collections::HashMap;

use crate::model::path::{End, Hop, Story};

/// Stories under construction, bounded: the oldest are closed when too many are open.
pub struct Stories {
    open: HashMap<u64, Story>,
    max_open: usize,
}

impl Stories {
    pub fn new(max_open: usize) -> Self {
        Self { open: HashMap::new(), max_open }
    }

    /// Adds a hop; returns stories closed to make room (oldest first).
    pub fn hop(&mut self, packet_id: u64, t_ns: u64, hook: &str, ifname: &str, netns: u32) -> Vec<Story> {
        let mut evicted = Vec::new();
        if !self.open.contains_key(&packet_id) && self.open.len() >= self.max_open {
            let oldest = self.open.values().min_by_key(|s| s.first_ns).map(|s| s.packet_id);
            if let Some(story) = oldest.and_then(|id| self.open.remove(&id)) {
                evicted.push(story);
            }
        }
        let s = self.open.entry(packet_id).or_insert_with(|| Story { packet_id, first_ns: t_ns, hops: Vec::new(), end: None });
        s.hops.push(Hop { t_ns: t_ns.saturating_sub(s.first_ns), hook: hook.to_string(), ifname: ifname.to_string(), netns });
        evicted
    }

    /// Offset of a story's latest hop from its first.
    pub fn last_offset(&self, packet_id: u64) -> Option<u64> {
        self.open.get(&packet_id)?.hops.last().map(|h| h.t_ns)
    }

    /// Ends a story; None when the packet was never seen (e.g. its first hop was lost).
    pub fn end(&mut self, packet_id: u64, end: End) -> Option<Story> {
        let mut s = self.open.remove(&packet_id)?;
        s.end = Some(end);
        Some(s)
    }

    /// Every story still open (the capture ends).
    pub fn drain(&mut self) -> Vec<Story> {
        let mut v: Vec<Story> = self.open.drain().map(|(_, s)| s).collect();
        v.sort_by_key(|s| s.first_ns);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_then_delivered() {
        let mut s = Stories::new(16);
        s.hop(1, 100, "netif_receive_skb", "lxca", 1);
        s.hop(1, 150, "net_dev_start_xmit", "lxcb", 1);
        s.hop(1, 170, "netif_receive_skb", "eth0", 2);
        s.hop(1, 190, "skb_copy_datagram_iovec", "", 2);
        let st = s.end(1, End::Consumed { location: "skb_free_datagram+0x1".into() }).unwrap();
        assert_eq!(st.hops.iter().map(|h| h.t_ns).collect::<Vec<_>>(), vec![0, 50, 70, 90]);
        assert_eq!(st.fate(), "delivered to socket (netns 2)");
        assert!(s.end(1, End::Consumed { location: String::new() }).is_none());
    }

    #[test]
    fn dropped_and_bounded() {
        let mut s = Stories::new(2);
        s.hop(1, 1, "netif_receive_skb", "lxca", 1);
        s.hop(2, 2, "netif_receive_skb", "lxca", 1);
        let evicted: Vec<u64> = s.hop(3, 3, "netif_receive_skb", "lxca", 1).iter().map(|st| st.packet_id).collect();
        assert_eq!(evicted, vec![1]);
        let st = s.end(3, End::Dropped { reason: "NETFILTER_DROP".into(), location: "nft_do_chain+0x1".into() }).unwrap();
        assert_eq!(st.fate(), "dropped: NETFILTER_DROP at nft_do_chain+0x1");
        assert_eq!(s.drain().len(), 1);
    }
}
