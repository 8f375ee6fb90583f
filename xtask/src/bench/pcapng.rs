//! Reads a pcapng back to count what it holds: enhanced packet blocks, and how many carry a
//! comment (the tracer puts reason, location and interface there). A block walk is all the
//! bench needs; a truncated or malformed file is an error, not a short count.
use std::{
    io::{BufReader, Read},
    path::Path,
};

use anyhow::{Context as _, Result};
use pcap_file::pcapng::{Block, PcapNgReader, blocks::enhanced_packet::EnhancedPacketOption};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub with_comment: u64,
    pub interfaces: u64,
}

pub fn count(path: &Path) -> Result<Counts> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    count_from(BufReader::with_capacity(1 << 20, f)).with_context(|| format!("reading {}", path.display()))
}

/// Walks the blocks with the pcap-file crate (the same reader the tests use).
pub fn count_from(r: impl Read) -> Result<Counts> {
    let mut reader = PcapNgReader::new(r).context("not a pcapng file")?;
    let mut c = Counts::default();
    while let Some(block) = reader.next_block() {
        match block.context("bad or truncated block")? {
            Block::InterfaceDescription(_) => c.interfaces += 1,
            Block::EnhancedPacket(epb) => {
                c.packets += 1;
                if epb.options.iter().any(|o| matches!(o, EnhancedPacketOption::Comment(_))) {
                    c.with_comment += 1;
                }
            }
            _ => {}
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHB: u32 = 0x0A0D_0D0A;
    const EPB: u32 = 6;
    const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
    const OPT_COMMENT: u16 = 1;

    fn block(ty: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(12 + body.len()).unwrap();
        let mut v = ty.to_le_bytes().to_vec();
        v.extend(len.to_le_bytes());
        v.extend(body);
        v.extend(len.to_le_bytes());
        v
    }

    fn epb(data: &[u8], comment: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [0u32, 0, 0, u32::try_from(data.len()).unwrap(), u32::try_from(data.len()).unwrap()] {
            b.extend(w.to_le_bytes());
        }
        b.extend(data);
        b.resize(b.len().div_ceil(4) * 4, 0);
        if let Some(c) = comment {
            b.extend(OPT_COMMENT.to_le_bytes());
            b.extend(u16::try_from(c.len()).unwrap().to_le_bytes());
            b.extend(c.as_bytes());
            b.resize(b.len().div_ceil(4) * 4, 0);
            b.extend([0u8; 4]);
        }
        block(EPB, &b)
    }

    fn file(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut shb = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        shb.extend(1u16.to_le_bytes());
        shb.extend(0u16.to_le_bytes());
        shb.extend((-1i64).to_le_bytes());
        let mut v = block(SHB, &shb);
        for b in blocks {
            v.extend(b);
        }
        v
    }

    #[test]
    fn counts_packets_comments_and_interfaces() {
        let idb = block(1, &[1, 0, 0, 0, 0, 0, 4, 0]);
        let f = file(&[idb, epb(&[1, 2, 3], Some("NETFILTER_DROP at x")), epb(&[9; 64], None), epb(&[7; 5], Some("y"))]);
        let c = count_from(&f[..]).unwrap();
        assert_eq!(c, Counts { packets: 3, with_comment: 2, interfaces: 1 });
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let f = file(&[epb(&[1, 2, 3], None)]);
        assert!(count_from(&f[..f.len() - 2]).is_err());
        assert!(count_from(&b"not a pcapng at all"[..]).is_err());
        assert!(count_from(&b""[..]).is_err());
    }
}
