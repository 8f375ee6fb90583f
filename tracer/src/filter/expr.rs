//! tcpdump expressions: libpcap compiles them to classic BPF, once for packets that start at
//! an Ethernet header and once for packets that start at the IP header; the kernel programs
//! interpret whichever fits the drop point.
use anyhow::{Result, anyhow, bail};
use pcap::{Capture, Linktype};
use tracer_common::{CbpfInsn, FILTER_PLACEHOLDER_INSNS, MAX_FILTER_INSNS};

use crate::kernel::bpf::Insn;

/// libpcap's `DLT_RAW` (Linux value): packets that begin with an IPv4 or IPv6 header.
const DLT_RAW: Linktype = Linktype(12);

#[derive(Debug, Clone, Default)]
pub struct CompiledFilter {
    pub expression: String,
    pub ethernet: Vec<CbpfInsn>,
    pub raw_ip: Vec<CbpfInsn>,
    /// Both programs translated to eBPF for the kernel's filter placeholder; None when the
    /// translation failed (the kernel then interprets the classic programs).
    pub ebpf: Option<Vec<Insn>>,
}

impl CompiledFilter {
    pub fn is_active(&self) -> bool {
        !self.expression.trim().is_empty()
    }

    /// How the kernel evaluates the expression (the summary's `filter`); None without one.
    pub fn mode(&self) -> Option<&'static str> {
        self.is_active().then_some(if self.ebpf.is_some() { "ebpf" } else { "interpreted" })
    }

    /// Packet bytes the filter can ever read (both link types): the kernel copies no more
    /// than this (or the snaplen) per packet. `MAX_CAPTURE` when it cannot be bounded.
    pub fn window(&self) -> u32 {
        window(&self.ethernet).max(window(&self.raw_ip))
    }

    /// True when the compiled expression can read packets where they lie: translated, and
    /// using no memory words (those live beside the copied bytes).
    pub fn reads_in_place(&self) -> bool {
        self.ebpf.is_some() && !super::translate::uses_memory(&[&self.ethernet, &self.raw_ip])
    }
}

/// Compiles `expression` (tcpdump/pcap-filter syntax). An empty expression matches everything.
pub fn compile(expression: &str) -> Result<CompiledFilter> {
    if expression.trim().is_empty() {
        return Ok(CompiledFilter::default());
    }
    let ethernet = compile_for(expression, Linktype::ETHERNET)
        .map_err(|e| anyhow!("bad filter expression {expression:?}: {e}"))?;
    // Link-layer primitives (ether host, vlan…) cannot match a packet without a MAC header;
    // libpcap refuses them for DLT_RAW, and then such packets simply never match.
    let raw_ip = compile_for(expression, DLT_RAW).unwrap_or_else(|_| vec![reject_all()]);
    let ebpf = match super::translate::translate(&ethernet, &raw_ip) {
        Ok(code) if code.len() <= FILTER_PLACEHOLDER_INSNS => Some(code),
        Ok(code) => {
            log::info!("the expression translates to {} eBPF instructions, more than the {FILTER_PLACEHOLDER_INSNS} the kernel side has room for: interpreted", code.len());
            None
        }
        Err(e) => {
            log::info!("the expression cannot be translated to eBPF ({e:#}): interpreted");
            None
        }
    };
    Ok(CompiledFilter { expression: expression.to_string(), ethernet, raw_ip, ebpf })
}

fn reject_all() -> CbpfInsn {
    CbpfInsn { code: 0x06, jt: 0, jf: 0, k: 0 }
}

fn compile_for(expression: &str, linktype: Linktype) -> Result<Vec<CbpfInsn>> {
    let cap = Capture::dead(linktype)?;
    let prog = cap.compile(expression, true)?;
    let insns: Vec<CbpfInsn> = prog
        .get_instructions()
        .iter()
        .map(|i| parse_insn(&i.to_string()))
        .collect::<Result<_>>()?;
    if insns.len() > MAX_FILTER_INSNS as usize {
        bail!("the expression compiles to {} instructions; at most {MAX_FILTER_INSNS} are supported", insns.len());
    }
    Ok(insns)
}

/// Largest packet offset (exclusive) `insns` can load from. libpcap's programs set X only from
/// `ldx msh` (an IPv4 header length, at most 60) or constants; anything else that sets X makes
/// indirect loads unbounded, and then the whole capture window is needed.
pub fn window(insns: &[CbpfInsn]) -> u32 {
    const LD: u16 = 0x00;
    const LDX: u16 = 0x01;
    const MISC: u16 = 0x07;
    const ABS: u16 = 0x20;
    const IND: u16 = 0x40;
    const MSH: u16 = 0xa0;
    const IMM: u16 = 0x00;
    let full = u32::try_from(tracer_common::MAX_CAPTURE).unwrap_or(u32::MAX);
    let mut max_x: u32 = 0;
    for i in insns {
        match (i.code & 0x07, i.code & 0xe0) {
            (LDX, MSH) => max_x = max_x.max(60),
            (LDX, IMM) => max_x = max_x.max(i.k),
            (LDX | MISC, _) => return full,
            _ => {}
        }
    }
    let mut end = 0u32;
    for i in insns {
        let width = tracer_common::cbpf::load_width(i.code & 0x18).unwrap_or(4);
        let reach = match (i.code & 0x07, i.code & 0xe0) {
            (LD, ABS) => i.k.saturating_add(width),
            (LD, IND) => max_x.saturating_add(i.k).saturating_add(width),
            (LDX, MSH) => i.k.saturating_add(1),
            _ => 0,
        };
        end = end.max(reach);
    }
    end.min(full)
}

/// pcap's `BpfInstruction` prints as "code jt jf k".
fn parse_insn(s: &str) -> Result<CbpfInsn> {
    let mut it = s.split_whitespace().map(str::parse::<u64>);
    let mut next = || it.next().ok_or_else(|| anyhow!("short instruction {s:?}"))?.map_err(|e| anyhow!("{e}"));
    Ok(CbpfInsn {
        code: u16::try_from(next()?)?,
        jt: u8::try_from(next()?)?,
        jf: u8::try_from(next()?)?,
        k: u32::try_from(next()?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_both_link_types() {
        let f = compile("udp and dst port 9999").unwrap();
        assert!(f.is_active());
        assert!(f.ethernet.len() > 3);
        assert!(f.raw_ip.len() > 3);
        assert_ne!(f.ethernet, f.raw_ip);
    }

    #[test]
    fn link_layer_only_expression_rejects_raw() {
        let f = compile("ether host 02:00:00:00:00:01").unwrap();
        assert_eq!(f.raw_ip, vec![reject_all()]);
    }

    #[test]
    fn bad_expression_is_an_error() {
        let e = compile("udp and and").unwrap_err().to_string();
        assert!(e.contains("bad filter expression"), "{e}");
    }

    /// Our interpreter (the code the kernel runs) agrees with libpcap's on real packets.
    #[test]
    fn interpreter_matches_libpcap() {
        use etherparse::PacketBuilder;
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let eth = || PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        for (src, dst, sport, dport) in [([10, 0, 0, 1], [10, 0, 0, 2], 1234, 53), ([10, 9, 0, 1], [192, 168, 1, 2], 53, 9999)] {
            let mut v = Vec::new();
            eth().ipv4(src, dst, 64).udp(sport, dport).write(&mut v, b"payload").unwrap();
            packets.push(v);
            let mut v = Vec::new();
            eth().ipv4(src, dst, 63).tcp(sport, dport, 1, 1000).syn().write(&mut v, &[]).unwrap();
            packets.push(v);
            let mut v = Vec::new();
            eth().ipv4(src, dst, 5).icmpv4_echo_request(1, 2).write(&mut v, b"ping").unwrap();
            packets.push(v);
        }
        let mut v = Vec::new();
        eth().ipv6([0xfd; 16], [0xfe; 16], 64).udp(5, 53).write(&mut v, b"x").unwrap();
        packets.push(v);
        let exprs = [
            "udp", "tcp", "icmp", "ip6", "udp port 53", "dst port 9999", "host 10.0.0.2", "net 10.9.0.0/16",
            "tcp[tcpflags] & tcp-syn != 0", "udp[2:2] = 53", "ip[8] = 63", "not icmp and src host 10.0.0.1",
            "len > 60", "ip6 and udp", "portrange 50-60", "ether src 02:00:00:00:00:01", "ip[6:2] & 0x1fff = 0",
        ];
        for e in exprs {
            let ours = compile(e).unwrap();
            let theirs = Capture::dead(Linktype::ETHERNET).unwrap().compile(e, true).unwrap();
            for (i, pkt) in packets.iter().enumerate() {
                for cut in [pkt.len(), 34, 20] {
                    let data = &pkt[..cut.min(pkt.len())];
                    // libpcap's filter sees caplen = wirelen = data.len().
                    let a = tracer_common::cbpf::run(&ours.ethernet, data, u32::try_from(data.len()).unwrap()) != 0;
                    let b = theirs.filter(data);
                    assert_eq!(a, b, "expression {e:?}, packet {i}, {cut} bytes");
                }
            }
        }
    }

    #[test]
    fn window_bounds_the_bytes_a_filter_reads() {
        // Ethernet + IPv4 header (≤ 60) + UDP ports: well under the full window.
        let w = compile("udp dst port 53").unwrap().window();
        assert!((38..=14 + 60 + 4).contains(&w), "{w}");
        assert_eq!(compile("ip[8] = 64").unwrap().window(), 14 + 9);
        assert!(compile("udp[8:4] = 0x01020304").unwrap().window() <= 14 + 60 + 12);
        // X from a packet byte: unbounded.
        let tax = [CbpfInsn { code: 0x30, jt: 0, jf: 0, k: 0 }, CbpfInsn { code: 0x07, jt: 0, jf: 0, k: 0 }];
        assert_eq!(window(&tax), u32::try_from(tracer_common::MAX_CAPTURE).unwrap());
    }

    #[test]
    fn an_expression_using_memory_words_does_not_read_packets_in_place() {
        assert!(compile("udp dst port 53").unwrap().reads_in_place());
        // Arithmetic on two packet fields: libpcap keeps one in a memory word, which the
        // translation finds beside the copied bytes.
        let m = compile("ip[2:2] - ((ip[0] & 0xf) << 2) > 100").unwrap();
        assert!(m.ebpf.is_some(), "translated");
        assert!(!m.reads_in_place());
        assert!(!CompiledFilter::default().reads_in_place());
    }

    #[test]
    fn empty_matches_all() {
        assert!(!compile("  ").unwrap().is_active());
    }
}
