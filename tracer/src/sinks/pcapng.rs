//! `--pcap FILE`: pcapng with one interface block per (namespace, interface, link type) seen,
//! nanosecond timestamps, and a comment on every packet saying where and why it was dropped.
use std::{borrow::Cow, collections::HashMap, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};
use tracer_common::linktype;

use super::record::RecordSink;
pub use crate::model::drop::Iface;
use crate::model::{
    drop::DropRecord,
    path::Finished,
    render,
};

/// Blocks are serialised into memory one at a time and handed to the sink whole, so the file
/// only ever holds complete blocks (a reader never meets half a block, even after SIGKILL).
pub struct Pcapng {
    w: PcapNgWriter<Vec<u8>>,
    sink: RecordSink,
    ids: HashMap<Iface, u32>,
    snaplen: u32,
    path: String,
}

impl Pcapng {
    /// Creates the file with its section header on disk at once: a valid (empty) pcapng from
    /// the start. `node` names the node in the section header (`shb_hardware` and a comment).
    pub fn create(path: &Path, snaplen: u32, node: Option<&str>) -> Result<Self> {
        let mut sink = RecordSink::create(path)?;
        let mut w = PcapNgWriter::with_section_header(Vec::new(), section_header(node)).with_context(|| format!("cannot write {}", path.display()))?;
        sink.push(&std::mem::take(w.get_mut()), false)?;
        sink.flush()?;
        Ok(Self { w, sink, ids: HashMap::new(), snaplen, path: path.display().to_string() })
    }

    /// Hands the block just serialised to the sink.
    fn commit_block(&mut self, drop_event: bool) -> Result<()> {
        let block = std::mem::take(self.w.get_mut());
        self.sink.push(&block, drop_event)
    }

    fn interface_id(&mut self, iface: &Iface) -> Result<u32> {
        if let Some(id) = self.ids.get(iface) {
            return Ok(*id);
        }
        let dl = if iface.linktype == linktype::ETHERNET { DataLink::ETHERNET } else { DataLink::RAW };
        let name = if iface.ifname.is_empty() { "(no device)".to_string() } else { iface.ifname.clone() };
        let idb = InterfaceDescriptionBlock {
            linktype: dl,
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name)),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                    "ifindex {} in netns {}{}{}",
                    iface.ifindex,
                    iface.netns,
                    iface.pod.as_deref().map(|p| format!(", pod {p}")).unwrap_or_default(),
                    if iface.linktype == linktype::ETHERNET { "" } else { " (from the IP header)" }
                ))),
                // pcap-file writes nanosecond timestamps.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.w.write_pcapng_block(idb).with_context(|| format!("cannot write {}", self.path))?;
        self.commit_block(false)?;
        let id = u32::try_from(self.ids.len())?;
        self.ids.insert(iface.clone(), id);
        Ok(id)
    }

    /// Appends one packet; `drop_event` marks a drop event (the records `lost_events` counts).
    pub fn write(&mut self, iface: &Iface, ts: Duration, original_len: u32, data: &[u8], comment: String, drop_event: bool) -> Result<()> {
        let interface_id = self.interface_id(iface)?;
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: ts,
            original_len: original_len.max(u32::try_from(data.len())?),
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment))],
        };
        self.w.write_pcapng_block(epb).with_context(|| format!("cannot write {}", self.path))?;
        self.commit_block(drop_event)
    }

    /// Counts a drop event whose packet was written earlier (`--all`).
    pub fn count_event(&mut self) {
        self.sink.count_event();
    }

    pub fn flush(&mut self) -> Result<()> {
        self.sink.flush()
    }

    pub fn sink(&self) -> &RecordSink {
        &self.sink
    }
}

/// The section header: the writing tool, and the node (`tracer merge` names interfaces
/// `node/ifname`; one capture's file says its node here).
pub fn section_header(node: Option<&str>) -> SectionHeaderBlock<'static> {
    let mut options = vec![SectionHeaderOption::UserApplication(Cow::Owned(format!("tracer {}", env!("CARGO_PKG_VERSION"))))];
    if let Some(n) = node {
        options.push(SectionHeaderOption::Hardware(Cow::Owned(format!("node {n}"))));
        options.push(SectionHeaderOption::Comment(Cow::Owned(format!("node={n}"))));
    }
    // Native byte order, as PcapNgWriter::new writes (the default section header is big endian).
    SectionHeaderBlock { endianness: Endianness::native(), options, ..SectionHeaderBlock::default() }
}

/// The pcapng as an output: drops with their comment; with `--all`, every followed packet
/// once, with its path (a drop of such a packet then only counts).
pub struct PcapSink {
    pub pcap: Pcapng,
    pub all: bool,
}

impl super::Sink for PcapSink {
    fn name(&self) -> &'static str {
        "pcapng"
    }

    fn drop_event(&mut self, d: &DropRecord) -> Result<()> {
        if d.in_pcap {
            self.pcap.count_event();
            return Ok(());
        }
        self.pcap.write(&d.iface, d.ts, d.event.len, &d.data, render::drop_comment(&d.event), true)
    }

    fn packet(&mut self, p: &Finished) -> Result<()> {
        let (true, Some(c)) = (self.all, &p.packet) else { return Ok(()) };
        self.pcap.write(&c.iface, c.ts, c.len, &c.data, render::packet_comment(&p.record), false)
    }

    fn flush(&mut self) -> Result<()> {
        self.pcap.flush()
    }

    fn committed(&self) -> Option<u64> {
        Some(self.pcap.sink().committed_events())
    }

    fn failure(&self) -> Option<&str> {
        self.pcap.sink().failure()
    }
}

#[cfg(test)]
mod tests {
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::fs::File;

    use super::*;

    #[test]
    #[expect(clippy::many_single_char_names, reason = "the writer, its two interfaces and the reader: short names read best")]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("tracer-pcapng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcapng");
        let mut p = Pcapng::create(&path, 256, Some("node-1")).unwrap();
        let a = Iface { netns: 1, ifindex: 2, ifname: "lxc1".into(), linktype: linktype::ETHERNET, pod: Some("default/web-0".into()) };
        let b = Iface { linktype: linktype::RAW_IP, ..a.clone() };
        p.write(&a, Duration::from_nanos(1_500_000_001), 100, &[1, 2, 3], "reason=X".into(), true).unwrap();
        p.write(&b, Duration::from_nanos(2), 3, &[4, 5, 6], "reason=Y".into(), true).unwrap();
        p.write(&a, Duration::from_nanos(3), 3, &[7], "reason=Z".into(), false).unwrap();
        p.flush().unwrap();
        assert_eq!(p.sink().committed_events(), 2);
        drop(p);
        let mut r = PcapNgReader::new(File::open(&path).unwrap()).unwrap();
        let (mut idbs, mut epbs) = (0, Vec::new());
        while let Some(block) = r.next_block() {
            match block.unwrap() {
                Block::InterfaceDescription(_) => idbs += 1,
                Block::EnhancedPacket(e) => epbs.push((e.interface_id, e.timestamp, e.original_len, e.options.len())),
                _ => {}
            }
        }
        assert_eq!(idbs, 2);
        assert_eq!(epbs, vec![(0, Duration::from_nanos(1_500_000_001), 100, 1), (1, Duration::from_nanos(2), 3, 1), (0, Duration::from_nanos(3), 3, 1)]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
