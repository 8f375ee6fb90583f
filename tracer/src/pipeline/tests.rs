//! The pipeline without root: synthetic wire records in, an in-memory sink out.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Result;
use tracer_common::{EVENT_HEADER_LEN, IFNAMSIZ, PacketEvent, ct_flags, hook, kind, linktype};

use super::{Namer, Pipeline};
use crate::{
    enrich::{
        Enricher, Node, ReasonCodes,
        netfilter::Attributor,
        window::{MAX_HELD, Windows},
    },
    kernel::{kallsyms::Kallsyms, reasons::Reasons},
    model::{
        drop::{DropEvent, DropRecord},
        hooks::{Hook, Slot},
        path::{Finished, HopRecord},
        time::{Clock, mono_now},
    },
    netfilter::{NFPROTO_IPV4, iptables::Save, snapshot::Snapshot},
    netns::Netns,
    path::tracker::PathTracker,
    pods::Pods,
    sinks::{Sink, Sinks},
};

/// What the in-memory sink saw.
#[derive(Default)]
struct Seen {
    drops: Vec<DropEvent>,
    in_pcap: Vec<bool>,
    hops: usize,
    fates: Vec<String>,
}

/// Keeps everything; `capacity` drop events at most (like a full disk past it).
struct Memory {
    seen: Arc<Mutex<Seen>>,
    capacity: u64,
}

impl Sink for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn drop_event(&mut self, d: &DropRecord) -> Result<()> {
        let mut s = self.seen.lock().unwrap();
        s.drops.push(d.event.clone());
        s.in_pcap.push(d.in_pcap);
        Ok(())
    }

    fn hop(&mut self, _h: &HopRecord) -> Result<()> {
        self.seen.lock().unwrap().hops += 1;
        Ok(())
    }

    fn packet(&mut self, p: &Finished) -> Result<()> {
        self.seen.lock().unwrap().fates.push(p.record.fate.clone());
        Ok(())
    }

    fn committed(&self) -> Option<u64> {
        Some((self.seen.lock().unwrap().drops.len() as u64).min(self.capacity))
    }
}

const NETFILTER_DROP: u32 = 12;
const NO_SOCKET: u32 = 3;
const NETNS: u32 = 4_026_531_840;

fn reasons() -> Reasons {
    Reasons::from_enum([("SKB_DROP_REASON_NOT_SPECIFIED".to_string(), 2), ("SKB_DROP_REASON_NO_SOCKET".to_string(), NO_SOCKET), ("SKB_DROP_REASON_NETFILTER_DROP".to_string(), NETFILTER_DROP)])
}

fn pipeline(capacity: u64) -> (Pipeline, Arc<Mutex<Seen>>) {
    let names = Namer::new(reasons(), Kallsyms::parse("ffffffff81000000 T nft_do_chain\nffffffff81001000 T tcp_v4_rcv\n"), Clock::new());
    let codes = ReasonCodes { netfilter_drop: Some(NETFILTER_DROP), tc_ingress: None, tc_egress: None };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut sinks = Sinks::default();
    sinks.push(Box::new(Memory { seen: Arc::clone(&seen), capacity }));
    (Pipeline::new(names, Enricher::new(Pods::default(), codes), sinks), seen)
}

/// A wire record: a UDP datagram 10.0.0.1:1234 → 10.0.0.2:`dport` on lxc1, as the kernel
/// writes it.
fn wire(kind: u8, reason: u32, dport: u16, packet_id: u64, hook: u32) -> Vec<u8> {
    let mut data = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1234, dport).write(&mut data, b"hello").unwrap();
    let mut ifname = [0u8; IFNAMSIZ];
    ifname[..4].copy_from_slice(b"lxc1");
    let h = PacketEvent {
        ts_ns: mono_now(),
        location: 0xffff_ffff_8100_0046,
        skb: 0xffff_8881_0000_0100,
        reason,
        ifindex: 7,
        netns: NETNS,
        len: u32::try_from(data.len()).unwrap(),
        cap_len: u32::try_from(data.len()).unwrap(),
        protocol: 0x0800,
        linktype: linktype::RAW_IP,
        kind,
        ifname,
        nf_slot: 1,
        tc_code: 0,
        packet_id,
        hook,
        stack: 0,
        mark: 0,
        ct_mark: 0,
        ct_status: 0,
        ct_zone: 0,
        ct_info: 0,
        ct_flags: 0,
        mtu: 0,
        gso_size: 0,
        gso_segs: 0,
        pkt_type: 0,
        skb_facts: 0,
        _pad: [0; 6],
    };
    // SAFETY: PacketEvent is plain old data.
    let head = unsafe { std::slice::from_raw_parts((&raw const h).cast::<u8>(), EVENT_HEADER_LEN) };
    [head, &data].concat()
}

#[test]
fn a_drop_goes_out_with_its_names() {
    let (mut p, seen) = pipeline(u64::MAX);
    p.handle(&wire(kind::DROP, NO_SOCKET, 53, 0, 0));
    p.handle(&[1, 2, 3]);
    p.finish();
    let counts = (p.emitted(), p.unreadable, p.sinks.written());
    let s = seen.lock().unwrap();
    let e = &s.drops[0];
    assert_eq!((e.reason.as_str(), e.location.as_str(), e.ifname.as_str(), e.headers.dport), ("NO_SOCKET", "nft_do_chain+0x46", "lxc1", Some(53)));
    assert_eq!(crate::model::render::drop_line(e).split_once(' ').unwrap().1, "lxc1 NO_SOCKET at nft_do_chain+0x46: udp 10.0.0.1.1234 > 10.0.0.2.53 len 33");
    assert_eq!(counts, (1, 1, 1));
}

#[test]
fn lost_events_are_what_the_outputs_did_not_commit() {
    // An output that kept 2 of 5 events bounds `events`: the drops counted by the kernel but
    // rate-limited, lost in the ring or cut off are `lost_events`.
    let (mut p, _) = pipeline(2);
    for _ in 0..5 {
        p.handle(&wire(kind::DROP, NO_SOCKET, 53, 0, 0));
    }
    p.finish();
    let t = crate::sinks::summary::Totals::new(12, p.sinks.written(), 40, 0, 7);
    assert_eq!((t.events, t.lost_events, t.rate_limited), (2, 10, 7));
}

/// An iptables ruleset whose DROP sits behind a rule on conntrack state (not decidable from
/// the packet): only the rule counters of the window can name it.
fn ruleset(packets: u64) -> Snapshot {
    let save = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n[0:0] -A INPUT -i lxc1 -m conntrack --ctstate INVALID -j DROP\n[{packets}:{}] -A INPUT -i lxc1 -p udp -m udp --dport 9999 -j DROP\nCOMMIT\n",
        packets * 33
    );
    Snapshot { legacy_v4: Save::parse(&save), ..Snapshot::default() }
}

/// The node of the window tests: every listing shows the DROP rule's counter moved by `moved`.
struct Rules {
    moved: u64,
    calls: Mutex<u32>,
}

impl Node for Rules {
    fn prog_exists(&self, _id: u32) -> bool {
        true
    }

    fn tc_hook(&self, _ns: &Netns, _ifindex: u32, _egress: bool) -> Option<Hook> {
        None
    }

    fn rulesets(&self, _ns: &Netns) -> Snapshot {
        *self.calls.lock().unwrap() += 1;
        ruleset(self.moved)
    }
}

fn with_netfilter(p: &mut Pipeline, node: &Arc<Rules>) {
    let ns = Netns { inode: NETNS, path: PathBuf::from("/proc/self/ns/net"), name: "host".into() };
    let slot = Slot { netns: NETNS, pf: NFPROTO_IPV4, hook: 1, priority: 0, lowest: 0 };
    let nf = Attributor::new(vec![(ns, ruleset(0))], vec![slot], mono_now());
    p.enrich.nf = Some((nf, Windows::new(Arc::clone(node) as Arc<dyn Node>)));
}

#[test]
fn a_counter_attributed_drop_waits_for_its_window() {
    let (mut p, seen) = pipeline(u64::MAX);
    let node = Arc::new(Rules { moved: 3, calls: Mutex::new(0) });
    with_netfilter(&mut p, &node);
    for _ in 0..3 {
        p.handle(&wire(kind::DROP, NETFILTER_DROP, 9999, 0, 0));
    }
    // Held: no snapshot was taken after them yet.
    assert!(seen.lock().unwrap().drops.is_empty());
    p.finish();
    let s = seen.lock().unwrap();
    assert_eq!(s.drops.len(), 3);
    for e in &s.drops {
        let nf = e.netfilter.as_ref().expect("attributed");
        assert_eq!((nf.attribution.as_str(), nf.rule.as_deref()), ("counters", Some("-A INPUT -i lxc1 -p udp -m udp --dport 9999 -j DROP")));
    }
    assert_eq!(*node.calls.lock().unwrap(), 1, "one snapshot closes the window of all three");
}

/// A wire record with the skb's conntrack facts: `skb->mark` 0x200 and, with `info`, an entry
/// of that `ip_conntrack_info` value.
fn with_ct(bytes: &[u8], info: Option<u8>) -> Vec<u8> {
    let mut h = crate::model::wire::Wire::parse(bytes).unwrap().hdr;
    h.mark = 0x200;
    h.ct_flags = ct_flags::MARK | if info.is_some() { ct_flags::NFCT } else { 0 };
    h.ct_info = info.unwrap_or(0);
    // SAFETY: PacketEvent is plain old data.
    let head = unsafe { std::slice::from_raw_parts((&raw const h).cast::<u8>(), EVENT_HEADER_LEN) };
    [head, &bytes[EVENT_HEADER_LEN..]].concat()
}

/// With the drop's conntrack state the rule behind `--ctstate INVALID -j DROP` is decided by
/// evaluation: exact at once, no listing of the rules; a packet without an entry is INVALID.
#[test]
fn conntrack_facts_make_a_state_guarded_drop_exact() {
    let (mut p, seen) = pipeline(u64::MAX);
    let info: Vec<(String, u64)> = [("IP_CT_ESTABLISHED", 0), ("IP_CT_NEW", 2)].iter().map(|(n, v)| ((*n).to_string(), *v)).collect();
    p.names.ct = crate::model::conntrack::CtNames::from_enums(&info, &[]);
    let node = Arc::new(Rules { moved: 0, calls: Mutex::new(0) });
    with_netfilter(&mut p, &node);
    p.handle(&with_ct(&wire(kind::DROP, NETFILTER_DROP, 9999, 0, 0), Some(2)));
    p.handle(&with_ct(&wire(kind::DROP, NETFILTER_DROP, 9999, 0, 0), None));
    assert_eq!(*node.calls.lock().unwrap(), 0, "no window needed");
    p.finish();
    let s = seen.lock().unwrap();
    let got: Vec<_> = s.drops.iter().map(|e| (e.ct.as_ref().unwrap().state, e.mark, e.netfilter.as_ref().unwrap().attribution.as_str(), e.netfilter.as_ref().unwrap().rule.clone().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("NEW", Some(0x200), "exact", "-A INPUT -i lxc1 -p udp -m udp --dport 9999 -j DROP".to_string()),
            ("INVALID", Some(0x200), "exact", "-A INPUT -i lxc1 -m conntrack --ctstate INVALID -j DROP".to_string()),
        ]
    );
    let comment = crate::model::render::drop_comment(&s.drops[0]);
    assert!(comment.contains(" mark=0x200 ct=\"NEW original\""), "{comment}");
}

/// `tracer watch` paces its snapshots: drops arriving in a burst while the gap runs wait for
/// one snapshot after it instead of a listing each; the end of the capture still closes every
/// window.
#[test]
fn snapshots_are_paced_by_the_minimum_gap() {
    let (mut p, seen) = pipeline(u64::MAX);
    let node = Arc::new(Rules { moved: 2, calls: Mutex::new(0) });
    with_netfilter(&mut p, &node);
    if let Some((_, w)) = p.enrich.nf.as_mut() {
        w.set_min_gap(std::time::Duration::from_hours(1));
    }
    for _ in 0..50 {
        p.handle(&wire(kind::DROP, NETFILTER_DROP, 9999, 0, 0));
        p.poll();
    }
    // The first poll found no snapshot taken yet (its gap counts from boot): at most that one.
    std::thread::sleep(std::time::Duration::from_millis(50));
    p.poll();
    assert!(*node.calls.lock().unwrap() <= 1, "{} listings within the gap", node.calls.lock().unwrap());
    p.finish();
    assert_eq!(seen.lock().unwrap().drops.len(), 50, "the end closes every window whatever the gap");
    assert!(*node.calls.lock().unwrap() <= 3);
}

#[test]
fn held_drops_are_bounded() {
    let (mut p, seen) = pipeline(u64::MAX);
    let node = Arc::new(Rules { moved: 1, calls: Mutex::new(0) });
    with_netfilter(&mut p, &node);
    for _ in 0..=MAX_HELD {
        p.handle(&wire(kind::DROP, NETFILTER_DROP, 9999, 0, 0));
    }
    // The bound closed a window on the way: those drops went out before the end.
    assert!(seen.lock().unwrap().drops.len() >= MAX_HELD, "{}", seen.lock().unwrap().drops.len());
    p.finish();
    assert_eq!(seen.lock().unwrap().drops.len(), MAX_HELD + 1);
}

#[test]
fn a_followed_packet_ends_where_it_is_dropped() {
    let (mut p, seen) = pipeline(u64::MAX);
    p.path = Some(PathTracker::default());
    p.all = true;
    p.handle(&wire(kind::PATH, 0, 80, 42, hook::NETIF_RECEIVE));
    p.handle(&wire(kind::PATH, 0, 80, 43, hook::NETIF_RECEIVE));
    p.handle(&wire(kind::DROP, NO_SOCKET, 80, 42, 0));
    p.finish();
    let s = seen.lock().unwrap();
    assert_eq!(s.hops, 2);
    assert_eq!(s.fates, vec!["dropped: NO_SOCKET at nft_do_chain+0x46".to_string(), "last seen at netif_receive_skb on lxc1".to_string()]);
    assert_eq!((s.drops[0].packet_id, s.in_pcap[0]), (Some(42), true), "with --all the dropped packet is in the pcapng with its path");
}

/// A node whose tc hook listing is slow (a busy netlink socket): lxc1 ingress runs one program.
struct SlowTc;

impl Node for SlowTc {
    fn prog_exists(&self, _id: u32) -> bool {
        true
    }

    fn tc_hook(&self, ns: &Netns, ifindex: u32, egress: bool) -> Option<Hook> {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let info = crate::kernel::bpf::ProgInfo { id: 77, name: "cil_from_container".into(), tag: "ab".into() };
        let programs = vec![crate::model::hooks::Program { attach: crate::model::hooks::Attach::Tcx, info: Some(info) }];
        Some(Hook { netns: ns.inode, ifindex, ifname: "lxc1".into(), egress, programs, gaps: Vec::new(), unobserved: vec![0] })
    }

    fn rulesets(&self, _ns: &Netns) -> Snapshot {
        Snapshot::default()
    }
}

const TC_INGRESS: u32 = 40;

/// A pipeline whose tc lookups go to `SlowTc` on the tc worker.
fn pipeline_with_slow_tc() -> (Pipeline, Arc<Mutex<Seen>>) {
    let (mut p, seen) = pipeline(u64::MAX);
    p.enrich.codes.tc_ingress = Some(TC_INGRESS);
    let ns = Netns { inode: NETNS, path: PathBuf::from("/proc/self/ns/net"), name: "host".into() };
    p.enrich.tc = Some(crate::enrich::tc::TcAttributor::new(Vec::new(), vec![ns]).with_node(Arc::new(SlowTc)));
    (p, seen)
}

#[test]
fn a_tc_drop_waits_for_the_tc_worker_not_the_loop() {
    let (mut p, seen) = pipeline_with_slow_tc();
    p.handle(&wire(kind::DROP, TC_INGRESS, 53, 0, 0));
    p.handle(&wire(kind::DROP, NO_SOCKET, 53, 0, 0));
    // The hook listing runs on the worker: the loop went on, and the next drop went out first.
    assert_eq!(seen.lock().unwrap().drops.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(), vec!["NO_SOCKET"]);
    assert!(p.enrich.oldest_held().is_some());
    p.finish();
    let s = seen.lock().unwrap();
    let tc = s.drops[1].tc.as_ref().expect("the tc section");
    assert_eq!((tc.prog.as_deref(), tc.prog_id, tc.attribution), (Some("cil_from_container"), Some(77), "only_program"));
}

#[test]
fn a_held_tc_drop_goes_out_on_a_poll_once_answered() {
    let (mut p, seen) = pipeline_with_slow_tc();
    p.handle(&wire(kind::DROP, TC_INGRESS, 53, 0, 0));
    // Bounded: the worker answers in ~50 ms; 500 polls 10 ms apart are 5 s.
    let mut out = false;
    for _ in 0..500 {
        p.poll();
        if !seen.lock().unwrap().drops.is_empty() {
            out = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(out, "the held drop never went out before the end");
}

mod forwarded;
