//! Differential tests of the translator: libpcap's own `pcap_offline_filter`, our classic-BPF
//! interpreter and the translated eBPF (run by `ebpf_vm`, and by the kernel when root) give
//! one verdict on crafted and random packets over a corpus of expressions.
use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use pcap::{Capture, Linktype};
use tracer_common::{CbpfInsn, linktype};

use super::{ebpf_vm, expr, translate};

/// Expressions users write, and ones that exercise every classic instruction libpcap emits
/// (indirect loads, `ldx msh`, memory words, arithmetic, VLAN offsets, IPv6).
pub const EXPRESSIONS: &[&str] = &[
    "udp", "tcp", "icmp", "ip6", "arp", "vlan", "udp port 53", "dst port 9999", "host 10.0.0.2", "net 10.9.0.0/16",
    "tcp[tcpflags] & tcp-syn != 0", "udp[2:2] = 53", "ip[8] = 63", "not icmp and src host 10.0.0.1", "len > 60",
    "less 100", "ip6 and udp", "portrange 50-60", "ether src 02:00:00:00:00:01", "ip[6:2] & 0x1fff = 0",
    "ip and (tcp or udp) and not port 22", "icmp[icmptype] == icmp-echo", "ip6 and tcp dst port 443",
    "ip[0] & 0xf > 5", "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420", "host 10.240.1.10 and udp port 33001",
    "ether[12:2] = 0x0800", "ip proto 47", "ip multicast", "ip broadcast", "greater 1000", "src net 10.0.0.0/8 and dst port 80",
    "vlan and udp port 53", "vlan 100 and host 10.0.0.2", "ip6 host fd00::1", "ip6 net fd00::/8 and tcp", "ip[2:2] * 2 > 100",
    "ip[2:2] / 4 = 21", "ip[2:2] % 7 = 3", "ip[2:2] - 20 > 30", "ip[2:2] + 1 < 50", "ip[1] | 4 = 4", "ip[1] ^ 0xff = 0xff",
    "ip[2:2] << 1 > 100", "ip[2:2] >> 3 = 8", "(ip[2:2] & 0xff) != 0", "udp and udp[8:4] = 0x01020304", "tcp[13] = 2",
    "ip[6] & 0x20 != 0", "ip[6:2] & 0x1fff != 0", "ip6[6] = 44", "ip6 proto 17", "udp dst port 9999 or tcp dst port 8080",
    "not (udp or tcp)", "len >= 64 and len <= 128", "ip[2:2] / ip[8] > 2", "ip[8] % ip[9] = 1", "ip[1] << ip[0] = 0",
    "ip[2:2] >> ip[9] = 0", "ip6 and ip6[40] = 58", "icmp6", "ip6 and udp port 53", "ip host 10.0.0.1 and ip host 10.0.0.2",
];

/// A small deterministic generator (xorshift64*): the tests need variety, not quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Crafted Ethernet packets: UDP, TCP, ICMP over IPv4 and IPv6, VLAN tags, IPv4 options and
/// fragments, IPv6 extension headers, ARP.
pub fn crafted() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let eth = || PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    for (src, dst, sport, dport) in [([10, 0, 0, 1], [10, 0, 0, 2], 1234, 53), ([10, 9, 0, 1], [192, 168, 1, 2], 53, 9999), ([10, 240, 1, 10], [224, 0, 0, 1], 80, 33001)] {
        let mut v = Vec::new();
        eth().ipv4(src, dst, 64).udp(sport, dport).write(&mut v, b"\x01\x02\x03\x04payload").unwrap();
        out.push(v);
        let mut v = Vec::new();
        eth().ipv4(src, dst, 63).tcp(sport, dport, 1, 1000).syn().write(&mut v, b"GET / HTTP/1.1\r\n").unwrap();
        out.push(v);
        let mut v = Vec::new();
        eth().ipv4(src, dst, 5).icmpv4_echo_request(1, 2).write(&mut v, b"ping").unwrap();
        out.push(v);
        let mut v = Vec::new();
        eth().single_vlan(100.try_into().unwrap()).ipv4(src, dst, 64).udp(sport, dport).write(&mut v, b"vlan").unwrap();
        out.push(v);
    }
    let mut v = Vec::new();
    eth().ipv6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0xfe; 16], 64).udp(5, 53).write(&mut v, b"x").unwrap();
    out.push(v);
    let mut v = Vec::new();
    eth().ipv6([0xfd; 16], [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 64).tcp(40000, 443, 7, 100).syn().write(&mut v, &[]).unwrap();
    out.push(v);
    let mut v = Vec::new();
    eth().ipv6([0xfd; 16], [0xfe; 16], 64).icmpv6_echo_request(1, 1).write(&mut v, b"p").unwrap();
    out.push(v);
    out.push(ipv6_with_extensions());
    out.extend(ipv4_fragments_and_options());
    // ARP request.
    let mut arp = vec![0xff; 6];
    arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    out.push(arp);
    out
}

/// IPv6, hop-by-hop options then a fragment header then UDP to port 53.
fn ipv6_with_extensions() -> Vec<u8> {
    let mut p = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    let payload: Vec<u8> = [
        vec![44, 0, 1, 4, 0, 0, 0, 0],       // hop-by-hop: next = fragment, PadN
        vec![17, 0, 0, 1, 0, 0, 0, 42],      // fragment: next = UDP, offset 0, M
        vec![0x30, 0x39, 0, 53, 0, 12, 0, 0], // UDP 12345 → 53
        b"dns!".to_vec(),
    ]
    .concat();
    p.extend([0x60, 0, 0, 0]);
    p.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
    p.extend([0, 64]);
    p.extend([0xfd; 16]);
    p.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend(payload);
    p
}

/// IPv4 with options (IHL 6), a first fragment and a later fragment (no UDP header in it).
fn ipv4_fragments_and_options() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (ihl_options, frag) in [(4usize, 0u16), (0, 0x2000), (0, 0x00b9), (8, 0x20b9)] {
        let mut ip = Ipv4Header::new(16, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2]).unwrap();
        ip.options = (&[1u8; 8][..ihl_options]).try_into().unwrap();
        let mut hdr = Vec::new();
        ip.write(&mut hdr).unwrap();
        hdr[6..8].copy_from_slice(&frag.to_be_bytes());
        let mut p = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        p.extend(hdr);
        p.extend([0x04, 0xd2, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        out.push(p);
    }
    out
}

/// Random packets: random bytes behind a plausible Ethernet + IP start, and pure noise.
pub fn random(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    let base = crafted();
    (0..n)
        .map(|i| {
            let mut p = if i % 3 == 0 { Vec::new() } else { base[usize::try_from(rng.below(base.len() as u64)).unwrap()].clone() };
            let len = usize::try_from(rng.below(160)).unwrap();
            p.resize(len.max(p.len()), 0);
            // Flip a few bytes (or all of a noise packet).
            let flips = if i % 3 == 0 { p.len() } else { usize::try_from(rng.below(4)).unwrap() };
            for _ in 0..flips {
                if !p.is_empty() {
                    let at = usize::try_from(rng.below(p.len() as u64)).unwrap();
                    p[at] = rng.next().to_le_bytes()[0];
                }
            }
            p
        })
        .collect()
}

/// Every cut of `p` from 0 to its length (truncated captures).
fn cuts(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    (0..=p.len()).map(move |n| &p[..n])
}

fn libpcap(expr: &str, lt: Linktype) -> Option<pcap::BpfProgram> {
    Capture::dead(lt).ok()?.compile(expr, true).ok()
}

/// The packet without its Ethernet header (VLAN tags included), for `DLT_RAW` programs.
fn strip_l2(p: &[u8]) -> Option<&[u8]> {
    match p.get(12..14)? {
        [0x81, 0x00] => p.get(18..),
        [0x08, 0x00] | [0x86, 0xdd] => p.get(14..),
        _ => None,
    }
}

#[test]
fn translation_agrees_with_libpcap() {
    let mut rng = Rng::new(0x7261_6365);
    let mut packets = crafted();
    packets.extend(random(&mut rng, 300));
    let mut checked = 0u64;
    for e in EXPRESSIONS {
        let ours = expr::compile(e).unwrap_or_else(|err| panic!("{e}: {err:#}"));
        let code = ours.ebpf.as_ref().unwrap_or_else(|| panic!("{e}: not translated"));
        for (lt, theirs) in [(linktype::ETHERNET, libpcap(e, Linktype::ETHERNET)), (linktype::RAW_IP, libpcap(e, Linktype(12)))] {
            for p in &packets {
                let p = if lt == linktype::ETHERNET { p.as_slice() } else { strip_l2(p).unwrap_or(p) };
                for data in cuts(p) {
                    let wire = u32::try_from(data.len()).unwrap();
                    let translated = ebpf_vm::run(code, data, wire, lt).unwrap_or_else(|| panic!("{e}: the translation misbehaved"));
                    // libpcap refuses link-layer primitives for DLT_RAW: those never match.
                    let expected = theirs.as_ref().is_some_and(|t| t.filter(data));
                    assert_eq!(translated != 0, expected, "{e:?}, link type {lt}, packet {data:02x?}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 100_000, "{checked}");
}

/// Random classic programs (any opcode, in-range forward jumps): the translation and the
/// interpreter agree, and the translation never does what the kernel would refuse.
#[test]
fn translation_agrees_with_interpreter_on_random_programs() {
    let mut rng = Rng::new(99);
    let packets: Vec<Vec<u8>> = crafted().into_iter().chain(random(&mut rng, 40)).collect();
    for round in 0..3000 {
        let prog = random_program(&mut rng);
        let code = translate::translate(&prog, &prog).unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        for p in &packets {
            let data = &p[..usize::try_from(rng.below(p.len() as u64 + 1)).unwrap()];
            let wire = u32::try_from(data.len()).unwrap() + u32::try_from(rng.below(3)).unwrap();
            let ours = tracer_common::cbpf::run(&prog, data, wire);
            let translated = ebpf_vm::run(&code, data, wire, linktype::ETHERNET).unwrap_or_else(|| panic!("round {round}: misbehaved on {prog:?}"));
            assert_eq!(translated, ours, "round {round}: {prog:?} on {data:02x?}");
        }
    }
}

/// A random program whose jumps stay inside it (the interpreter's and the translation's
/// handling of jumps that wrap around 2^32 differ; libpcap never emits them).
pub fn random_program(rng: &mut Rng) -> Vec<CbpfInsn> {
    const CODES: &[u16] = &[
        0x00, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x60, 0x80, 0x01, 0x61, 0x81, 0xb1, 0x02, 0x03, 0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c,
        0x34, 0x3c, 0x44, 0x4c, 0x54, 0x5c, 0x64, 0x6c, 0x74, 0x7c, 0x84, 0x94, 0x9c, 0xa4, 0xac, 0x05, 0x15, 0x1d, 0x25, 0x2d, 0x35,
        0x3d, 0x45, 0x4d, 0x06, 0x0e, 0x16, 0x07, 0x87, 0x38, 0xb0, 0xc4, 0x55, 0x21,
    ];
    let len = 1 + usize::try_from(rng.below(24)).unwrap();
    (0..len)
        .map(|pc| {
            let code = CODES[usize::try_from(rng.below(CODES.len() as u64)).unwrap()];
            let room = u64::try_from(len - pc).unwrap();
            let k = match rng.below(4) {
                0 => u32::try_from(rng.below(64)).unwrap(),
                1 => u32::try_from(rng.below(2100)).unwrap(),
                2 => u32::try_from(rng.next() >> 32).unwrap(),
                _ => u32::try_from(rng.below(40)).unwrap(),
            };
            let k = if code == 0x05 { u32::try_from(rng.below(room + 1)).unwrap() } else { k };
            CbpfInsn { code, jt: u8::try_from(rng.below(room.min(255) + 1)).unwrap(), jf: u8::try_from(rng.below(room.min(255) + 1)).unwrap(), k }
        })
        .collect()
}

/// The same comparison in the kernel (root only; skipped otherwise): each translation loaded
/// behind a small harness program (its verifier must accept it) and run with
/// `BPF_PROG_TEST_RUN` on the packets, its verdicts equal to libpcap's and to `ebpf_vm`'s.
#[test]
fn kernel_runs_the_translation_as_libpcap_filters() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (BPF_PROG_LOAD, BPF_PROG_TEST_RUN)");
        return;
    }
    let mut rng = Rng::new(0x6b65_726e);
    let crafted = crafted();
    let random = random(&mut rng, 100);
    let map = kernel::Array::new().expect("BPF_MAP_CREATE");
    let mut runs = 0u64;
    for e in EXPRESSIONS {
        let code = expr::compile(e).unwrap().ebpf.unwrap();
        let prog = kernel::harness(&map, &code).unwrap_or_else(|err| panic!("{e}: the kernel refuses the translation: {err}"));
        for (lt, theirs) in [(linktype::ETHERNET, libpcap(e, Linktype::ETHERNET)), (linktype::RAW_IP, libpcap(e, Linktype(12)))] {
            let packets = crafted.iter().flat_map(|p| cuts(p)).chain(random.iter().map(Vec::as_slice));
            for p in packets {
                let p = if lt == linktype::ETHERNET { p } else { strip_l2(p).unwrap_or(p) };
                let wire = u32::try_from(p.len()).unwrap();
                let got = kernel::run(&map, &prog, p, wire, lt).expect("BPF_PROG_TEST_RUN");
                assert_eq!(Some(got), ebpf_vm::run(&code, p, wire, lt), "{e:?}, link type {lt}, packet {p:02x?}");
                assert_eq!(got != 0, theirs.as_ref().is_some_and(|t| t.filter(p)), "{e:?}, link type {lt}, packet {p:02x?}");
                runs += 1;
            }
        }
    }
    eprintln!("{runs} kernel test runs");
    assert!(runs > 10_000, "{runs}");
}

/// Just enough raw `bpf(2)` for the kernel test: an array map holding the packet, a harness
/// that passes it to the translation as the probes do, and test runs.
mod kernel {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    use tracer_common::{CAPTURE_SLACK, MAX_CAPTURE};

    use crate::kernel::bpf::{self, Insn};

    /// caplen, wirelen, link type, padding; then the packet bytes and the filter's 16 memory
    /// words (as in the probes' scratch record).
    const HDR: usize = 16;
    const VALUE: usize = HDR + MAX_CAPTURE + CAPTURE_SLACK + 64;

    pub struct Array(OwnedFd);

    impl Array {
        pub fn new() -> std::io::Result<Self> {
            // map_type 2 (array), key 4, value VALUE, 1 entry.
            let mut attr = [2 | (4 << 32), VALUE as u64 | (1 << 32), 0, 0, 0, 0, 0, 0];
            let fd = bpf::syscall(0, &mut attr)?;
            // SAFETY: a new fd from the kernel.
            Ok(Self(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap()) }))
        }

        fn fd(&self) -> i32 {
            self.0.as_raw_fd()
        }
    }

    /// A tc program: looks the packet up and runs the translation inlined as the loader puts
    /// it in the probes (its exits jumping past it) with r1..r4 as they pass them; returns
    /// its verdict.
    pub fn harness(map: &Array, code: &[Insn]) -> Result<OwnedFd, String> {
        let i = Insn::new;
        let mut p = vec![
            i(0x62, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = 0
            i(0xbf, 2, 10, 0, 0),
            i(0x07, 2, 0, 0, -4),
            i(0x18, 1, 1, 0, map.fd()), // r1 = map (pseudo map fd)
            i(0, 0, 0, 0, 0),
            i(0x85, 0, 0, 0, 1), // map_lookup_elem
            i(0x55, 0, 0, 2, 0), // if r0 != 0 skip the exit
            i(0xb7, 0, 0, 0, -1),
            i(0x95, 0, 0, 0, 0),
            i(0x61, 2, 0, 0, 0), // caplen
            i(0x61, 3, 0, 4, 0), // wirelen
            i(0x61, 4, 0, 8, 0), // link type
            i(0xbf, 1, 0, 0, 0),
            i(0x07, 1, 0, 0, i32::try_from(HDR).unwrap()), // r1 = packet bytes
        ];
        p.extend(crate::filter::inline::inlined(code));
        p.push(i(0x95, 0, 0, 0, 0));
        let spec = bpf::ProgSpec { prog_type: bpf::PROG_SCHED_CLS, ..Default::default() };
        bpf::load(&spec, "filter_test", &p, 16 << 20).map_err(|e| format!("{e}\n{}", e.log))
    }

    pub fn run(map: &Array, prog: &OwnedFd, packet: &[u8], wirelen: u32, linktype: u8) -> std::io::Result<u32> {
        let mut value = vec![0u8; VALUE];
        let cap = packet.len().min(MAX_CAPTURE);
        value[0..4].copy_from_slice(&u32::try_from(cap).unwrap().to_ne_bytes());
        value[4..8].copy_from_slice(&wirelen.to_ne_bytes());
        value[8..12].copy_from_slice(&u32::from(linktype).to_ne_bytes());
        value[HDR..HDR + cap].copy_from_slice(&packet[..cap]);
        let key = 0u32;
        let mut attr = [u64::try_from(map.fd()).unwrap(), std::ptr::from_ref(&key) as u64, value.as_ptr() as u64, 0, 0, 0];
        bpf::syscall(2, &mut attr)?;
        // A tc program needs an Ethernet-sized input; the packet itself is in the map.
        let dummy = [0u8; 64];
        let mut attr = [0u64; 10];
        attr[0] = u64::try_from(prog.as_raw_fd()).unwrap();
        attr[1] = dummy.len() as u64;
        attr[2] = dummy.as_ptr() as u64;
        bpf::syscall(10, &mut attr)?;
        Ok((attr[0] >> 32) as u32)
    }
}
