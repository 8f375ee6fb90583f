//! The pcapng side of `tracer merge`: every input's packets read (interfaces, times, bytes,
//! comments), then written as one file, in time order, with interfaces named `node/ifname`.
use std::{borrow::Cow, io::Read, path::Path};

use anyhow::{Context as _, Result, bail};
use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        Block, PcapNgReader, PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};

use super::load::NodeData;

/// An interface of one input's pcapng.
#[derive(Debug, Clone)]
pub struct IfaceDesc {
    pub linktype: DataLink,
    pub snaplen: u32,
    pub name: String,
    pub description: Option<String>,
    /// Nanoseconds per unit of the packets' raw timestamps.
    ns_per_unit: u64,
}

/// One packet of one input.
#[derive(Debug, Clone)]
pub struct Packet {
    pub t_ns: u64,
    /// Index into its input's interfaces.
    pub iface: usize,
    pub orig_len: u32,
    pub data: Vec<u8>,
    pub comments: Vec<String>,
}

impl Packet {
    /// What the capture wrote it for: a drop (`drop reason=…`) or a followed packet as first
    /// seen (`packet N path: …`, with `--path --all`).
    pub fn comment(&self) -> &str {
        self.comments.first().map_or("", String::as_str)
    }
}

/// `if_tsresol`: a power of ten (bit 7 clear) down to nanoseconds; pcapng's default is µs.
fn ns_per_unit(idb: &InterfaceDescriptionBlock) -> Result<u64> {
    let res = idb.options.iter().find_map(|o| if let InterfaceDescriptionOption::IfTsResol(r) = o { Some(*r) } else { None }).unwrap_or(6);
    if res & 0x80 != 0 || res > 9 {
        bail!("interface time resolution {res:#x} is not a tracer pcapng's");
    }
    Ok(10u64.pow(9 - u32::from(res)))
}

/// Appends the packets (and interfaces) of one pcapng stream.
pub fn read(r: &mut dyn Read, ifaces: &mut Vec<IfaceDesc>, packets: &mut Vec<Packet>) -> Result<()> {
    let base = ifaces.len();
    let mut reader = PcapNgReader::new(r)?;
    while let Some(block) = reader.next_block() {
        match block? {
            Block::InterfaceDescription(idb) => {
                let name = idb.options.iter().find_map(|o| if let InterfaceDescriptionOption::IfName(n) = o { Some(n.to_string()) } else { None });
                let description = idb.options.iter().find_map(|o| if let InterfaceDescriptionOption::IfDescription(n) = o { Some(n.to_string()) } else { None });
                let ns = ns_per_unit(&idb)?;
                ifaces.push(IfaceDesc { linktype: idb.linktype, snaplen: idb.snaplen, name: name.unwrap_or_else(|| "(no device)".into()), description, ns_per_unit: ns });
            }
            Block::EnhancedPacket(epb) => {
                let iface = base + usize::try_from(epb.interface_id)?;
                let Some(desc) = ifaces.get(iface) else { bail!("a packet on interface {} that was never described", epb.interface_id) };
                let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                let comments = epb.options.iter().filter_map(|o| if let EnhancedPacketOption::Comment(c) = o { Some(c.to_string()) } else { None }).collect();
                packets.push(Packet { t_ns: raw.saturating_mul(desc.ns_per_unit), iface, orig_len: epb.original_len, data: epb.data.into_owned(), comments });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes every node's packets into one pcapng, sorted by time (ties keep input order);
/// returns the number of packets.
pub fn write(path: &Path, nodes: &[NodeData]) -> Result<u64> {
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let shb = SectionHeaderBlock {
        options: vec![
            SectionHeaderOption::UserApplication(Cow::Owned(format!("tracer {} merge", env!("CARGO_PKG_VERSION")))),
            SectionHeaderOption::Comment(Cow::Owned(format!("merged from nodes: {}", names.join(", ")))),
        ],
        endianness: Endianness::native(),
        ..SectionHeaderBlock::default()
    };
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = PcapNgWriter::with_section_header(std::io::BufWriter::new(file), shb)?;
    // One interface per (node, interface of its input), named `node/ifname`.
    let mut first_id = Vec::with_capacity(nodes.len());
    let mut next = 0u32;
    for n in nodes {
        first_id.push(next);
        for i in &n.ifaces {
            let mut options = vec![InterfaceDescriptionOption::IfName(Cow::Owned(format!("{}/{}", n.name, i.name))), InterfaceDescriptionOption::IfTsResol(9)];
            let desc = i.description.as_deref().map_or_else(|| format!("node {}", n.name), |d| format!("{d}, node {}", n.name));
            options.push(InterfaceDescriptionOption::IfDescription(Cow::Owned(desc)));
            w.write_pcapng_block(InterfaceDescriptionBlock { linktype: i.linktype, snaplen: i.snaplen, options })?;
            next += 1;
        }
    }
    let mut order: Vec<(u64, usize, usize)> = nodes.iter().enumerate().flat_map(|(ni, n)| n.packets.iter().enumerate().map(move |(pi, p)| (p.t_ns, ni, pi))).collect();
    order.sort_unstable();
    for &(_, ni, pi) in &order {
        let p = &nodes[ni].packets[pi];
        let options = p.comments.iter().map(|c| EnhancedPacketOption::Comment(Cow::Borrowed(c.as_str()))).collect();
        let epb = EnhancedPacketBlock {
            interface_id: first_id[ni] + u32::try_from(p.iface)?,
            timestamp: std::time::Duration::from_nanos(p.t_ns),
            original_len: p.orig_len,
            data: Cow::Borrowed(&p.data),
            options,
        };
        w.write_pcapng_block(epb)?;
    }
    std::io::Write::flush(w.get_mut()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(order.len() as u64)
}
