//! A forwarded packet's netfilter drop (`nf_slot::FORWARDED_*`) through the pipeline.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tracer_common::{EVENT_HEADER_LEN, kind};

use super::{NETFILTER_DROP, NETNS, Rules, pipeline, wire};
use crate::{
    enrich::{Node, netfilter::Attributor, window::Windows},
    model::{hooks::Slot, time::mono_now},
    netfilter::{NFPROTO_IPV4, iptables::Save, snapshot::Snapshot},
    netns::Netns,
};

/// A wire record with `nf_slot` as the drop probe wrote it.
fn with_nf_slot(bytes: &[u8], slot: u32) -> Vec<u8> {
    let mut h = crate::model::wire::Wire::parse(bytes).unwrap().hdr;
    h.nf_slot = slot;
    // SAFETY: PacketEvent is plain old data.
    let head = unsafe { std::slice::from_raw_parts((&raw const h).cast::<u8>(), EVENT_HEADER_LEN) };
    [head, &bytes[EVENT_HEADER_LEN..]].concat()
}

/// A forwarded packet's drop (`nf_slot::FORWARDED_IPV4`) in a namespace whose forwarding hooks
/// got no observer: the ring's slot (INPUT's observer: another packet's note at the same skb
/// address) is not its history; FORWARD's one chain that can drop is, with the packet's device
/// as FORWARD's input (the `-i` makes the match certain). Unflagged, the same slot names INPUT.
#[test]
fn a_forwarded_drop_is_placed_at_the_forwarding_hooks_chain() {
    let (mut p, seen) = pipeline(u64::MAX);
    let node = Arc::new(Rules { moved: 0, calls: Mutex::new(0) });
    let ns = Netns { inode: NETNS, path: PathBuf::from("/proc/self/ns/net"), name: "host".into() };
    let save = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n[0:0] -A INPUT -p udp -m udp --dport 9999 -j DROP\n[0:0] -A FORWARD -i lxc1 -p udp -m udp --dport 9999 -j DROP\nCOMMIT\n";
    let snap = Snapshot { legacy_v4: Save::parse(save), ..Snapshot::default() };
    let input = Slot { netns: NETNS, pf: NFPROTO_IPV4, hook: 1, priority: 0, lowest: i32::MIN + 1 };
    let nf = Attributor::new(vec![(ns, snap)], vec![input.clone()], mono_now());
    assert!(nf.forwarded(NETNS, NFPROTO_IPV4).is_some(), "no observer at FORWARD or POSTROUTING");
    p.enrich.nf = Some((nf, Windows::new(Arc::clone(&node) as Arc<dyn Node>)));
    p.handle(&with_nf_slot(&wire(kind::DROP, NETFILTER_DROP, 9999, 0, 0), 1 | tracer_common::nf_slot::FORWARDED_IPV4));
    p.handle(&wire(kind::DROP, NETFILTER_DROP, 9999, 0, 0));
    p.finish();
    assert_eq!(*node.calls.lock().unwrap(), 0, "both exact from the rules read at start");
    let s = seen.lock().unwrap();
    let got: Vec<_> = s.drops.iter().map(|e| e.netfilter.as_ref().map(|n| (n.hook.clone(), n.attribution.clone(), n.rule.clone().unwrap_or_default()))).collect();
    let want = |hook: &str, rule: &str| Some((hook.to_string(), "exact".to_string(), rule.to_string()));
    assert_eq!(got, [want("forward", "-A FORWARD -i lxc1 -p udp -m udp --dport 9999 -j DROP"), want("input", "-A INPUT -p udp -m udp --dport 9999 -j DROP")]);
    // Where FORWARD has an observer, its slot is the history and the flag adds nothing.
    let observed = Slot { netns: NETNS, pf: NFPROTO_IPV4, hook: 2, priority: 0, lowest: i32::MIN + 1 };
    let ns = Netns { inode: NETNS, path: PathBuf::from("/proc/self/ns/net"), name: "host".into() };
    let nf = Attributor::new(vec![(ns, Snapshot::default())], vec![input, observed], mono_now());
    assert!(nf.forwarded(NETNS, NFPROTO_IPV4).is_none());
}
