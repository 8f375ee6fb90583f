//! `--pcap FILE`: pcapng with one interface block per (namespace, interface, link type) seen,
//! nanosecond timestamps, and a comment on every packet saying where and why it was dropped.
use std::{borrow::Cow, collections::HashMap, fs::File, io::BufWriter, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use tracer_common::linktype;

/// The interface a packet was seen on, as the pcapng names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Iface {
    pub netns: u32,
    pub ifindex: u32,
    pub ifname: String,
    pub linktype: u8,
    /// The pod behind the interface ("namespace/name"), when known.
    pub pod: Option<String>,
}

pub struct Pcapng {
    w: PcapNgWriter<BufWriter<File>>,
    ids: HashMap<Iface, u32>,
    snaplen: u32,
    path: String,
}

impl Pcapng {
    pub fn create(path: &Path, snaplen: u32) -> Result<Self> {
        let f = super::create(path)?;
        let w = PcapNgWriter::new(f).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { w, ids: HashMap::new(), snaplen, path: path.display().to_string() })
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
        let id = u32::try_from(self.ids.len())?;
        self.ids.insert(iface.clone(), id);
        Ok(id)
    }

    pub fn write(&mut self, iface: &Iface, ts: Duration, original_len: u32, data: &[u8], comment: String) -> Result<()> {
        let interface_id = self.interface_id(iface)?;
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: ts,
            original_len: original_len.max(u32::try_from(data.len())?),
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment))],
        };
        self.w.write_pcapng_block(epb).with_context(|| format!("cannot write {}", self.path))?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        use std::io::Write as _;
        self.w.get_mut().flush().with_context(|| format!("cannot write {}", self.path))
    }
}

#[cfg(test)]
mod tests {
    use pcap_file::pcapng::{Block, PcapNgReader};

    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("tracer-pcapng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcapng");
        let mut p = Pcapng::create(&path, 256).unwrap();
        let a = Iface { netns: 1, ifindex: 2, ifname: "lxc1".into(), linktype: linktype::ETHERNET, pod: Some("default/web-0".into()) };
        let b = Iface { linktype: linktype::RAW_IP, ..a.clone() };
        p.write(&a, Duration::from_nanos(1_500_000_001), 100, &[1, 2, 3], "reason=X".into()).unwrap();
        p.write(&b, Duration::from_nanos(2), 3, &[4, 5, 6], "reason=Y".into()).unwrap();
        p.write(&a, Duration::from_nanos(3), 3, &[7], "reason=Z".into()).unwrap();
        p.flush().unwrap();
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
