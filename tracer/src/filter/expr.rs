//! tcpdump expressions: libpcap compiles them to classic BPF, once for packets that start at
//! an Ethernet header and once for packets that start at the IP header; the kernel programs
//! interpret whichever fits the drop point.
use anyhow::{Result, anyhow, bail};
use pcap::{Capture, Linktype};
use tracer_common::{CbpfInsn, MAX_FILTER_INSNS};

/// libpcap's DLT_RAW (Linux value): packets that begin with an IPv4 or IPv6 header.
const DLT_RAW: Linktype = Linktype(12);

#[derive(Debug, Clone, Default)]
pub struct CompiledFilter {
    pub expression: String,
    pub ethernet: Vec<CbpfInsn>,
    pub raw_ip: Vec<CbpfInsn>,
}

impl CompiledFilter {
    pub fn is_active(&self) -> bool {
        !self.expression.trim().is_empty()
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
    Ok(CompiledFilter { expression: expression.to_string(), ethernet, raw_ip })
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

    #[test]
    fn empty_matches_all() {
        assert!(!compile("  ").unwrap().is_active());
    }
}
