//! The per-packet text timeline (like pwru's, but one line per hook with interface and
//! namespace, and the fate at the end).
use std::fmt::Write as _;

use super::story::Story;

/// `summary` is the packet's one-line description (protocol, addresses, flags).
pub fn render(story: &Story, summary: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "packet {}  {summary}", story.packet_id);
    let width = story.hops.iter().map(|h| h.hook.len()).max().unwrap_or(0);
    for h in &story.hops {
        let dev = if h.ifname.is_empty() { "-" } else { h.ifname.as_str() };
        let _ = writeln!(o, "  {:>12}  {:<width$}  {dev:<15}  netns {}", format_offset(h.t_ns), h.hook, h.netns);
    }
    let _ = writeln!(o, "  => {}", story.fate());
    o
}

#[expect(clippy::cast_precision_loss, reason = "offsets within a packet's path, far below 2^52 ns, for display")]
fn format_offset(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("+{:.1}us", ns as f64 / 1e3)
    } else {
        format!("+{:.3}ms", ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::story::{End, Stories};

    #[test]
    fn renders_hops_and_fate() {
        let mut s = Stories::new(4);
        s.hop(9, 1_000, "netif_receive_skb", "lxca", 11);
        s.hop(9, 4_200, "kfree_skb", "lxca", 11);
        let st = s.end(9, End::Dropped { reason: "NETFILTER_DROP".into(), location: "nft_do_chain+0x46f".into() }).unwrap();
        let t = render(&st, "udp 10.0.0.1.5 > 10.0.0.2.53");
        assert!(t.starts_with("packet 9  udp 10.0.0.1.5 > 10.0.0.2.53\n"), "{t}");
        assert!(t.contains("+0.0us  netif_receive_skb  lxca"), "{t}");
        assert!(t.contains("+3.2us  kfree_skb"), "{t}");
        assert!(t.ends_with("=> dropped: NETFILTER_DROP at nft_do_chain+0x46f\n"), "{t}");
    }
}
