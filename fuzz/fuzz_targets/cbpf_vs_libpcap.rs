//! Our classic-BPF interpreter (the fallback the kernel programs run, `tracer_common::cbpf`)
//! and the translation to eBPF (what they run normally, `tracer::filter::translate`, executed
//! by `tracer::filter::ebpf_vm`) must agree with libpcap's own (`BpfProgram::filter`) on any
//! packet, for the programs libpcap compiles from real expressions, Ethernet and raw IP alike. Input: one byte picks the
//! expression, one the link type, the rest is the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcap::{Capture, Linktype};
use tracer_common::CbpfInsn;

const EXPRESSIONS: &[&str] = &[
    "udp", "tcp", "icmp", "ip6", "arp", "vlan", "udp port 53", "dst port 9999", "host 10.0.0.2", "net 10.9.0.0/16",
    "tcp[tcpflags] & tcp-syn != 0", "udp[2:2] = 53", "ip[8] = 63", "not icmp and src host 10.0.0.1", "len > 60",
    "less 100", "ip6 and udp", "portrange 50-60", "ether src 02:00:00:00:00:01", "ip[6:2] & 0x1fff = 0",
    "ip and (tcp or udp) and not port 22", "icmp[icmptype] == icmp-echo", "ip6 and tcp dst port 443",
    "ip[0] & 0xf > 5", "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420", "host 10.240.1.10 and udp port 33001",
    "ether[12:2] = 0x0800", "ip proto 47", "ip multicast", "ip broadcast", "greater 1000", "src net 10.0.0.0/8 and dst port 80",
];

struct Compiled {
    ours: Vec<CbpfInsn>,
    ebpf: Vec<tracer::kernel::bpfsys::Insn>,
    theirs: pcap::BpfProgram,
}

thread_local! {
    /// (expression, ethernet?) → both programs, compiled once per process.
    static PROGRAMS: Vec<[Option<Compiled>; 2]> = EXPRESSIONS
        .iter()
        .map(|e| {
            let ours = tracer::filter::expr::compile(e).ok();
            let theirs = |lt| Capture::dead(lt).ok().and_then(|c| c.compile(e, true).ok());
            [
                ours.as_ref().zip(theirs(Linktype::ETHERNET)).map(|(o, t)| Compiled { ours: o.ethernet.clone(), ebpf: o.ebpf.clone().expect("translated"), theirs: t }),
                ours.as_ref().zip(theirs(Linktype(12))).map(|(o, t)| Compiled { ours: o.raw_ip.clone(), ebpf: o.ebpf.clone().expect("translated"), theirs: t }),
            ]
        })
        .collect();
}

fuzz_target!(|data: &[u8]| {
    let [pick, link, packet @ ..] = data else { return };
    PROGRAMS.with(|programs| {
        let Some(c) = &programs[usize::from(*pick) % programs.len()][usize::from(*link & 1)] else { return };
        let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let ours = tracer_common::cbpf::run(&c.ours, packet, len) != 0;
        let expr = EXPRESSIONS[usize::from(*pick) % programs.len()];
        let theirs = c.theirs.filter(packet);
        assert_eq!(ours, theirs, "expression {expr:?}, link {}", link & 1);
        // The translation holds both link types; `link` picks the one libpcap compiled here.
        let lt = if link & 1 == 0 { tracer_common::linktype::ETHERNET } else { tracer_common::linktype::RAW_IP };
        let translated = tracer::filter::ebpf_vm::run(&c.ebpf, packet, len, lt).expect("the translation misbehaved");
        // Beyond the kernel's capture window the kernel side never sees the bytes.
        if packet.len() <= tracer_common::MAX_CAPTURE {
            assert_eq!(translated != 0, theirs, "translated expression {expr:?}, link {}", link & 1);
        }
    });
});
