//! Reading a pcapng back: with the pcap-file crate (structure: interface blocks, link types,
//! comments) and with tshark (what a user will see).
use std::{fs::File, path::Path};

use anyhow::{Context as _, Result, anyhow};
use pcap_file::{
    DataLink,
    pcapng::{
        Block, PcapNgReader,
        blocks::{enhanced_packet::EnhancedPacketOption, interface_description::InterfaceDescriptionOption},
    },
};

use crate::cmd;

/// One interface description block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: Option<String>,
    pub description: Option<String>,
    pub linktype: DataLink,
}

/// One enhanced packet block.
#[derive(Debug, Clone)]
pub struct Packet {
    pub interface_id: u32,
    pub comments: Vec<String>,
    pub original_len: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Pcapng {
    pub interfaces: Vec<Interface>,
    pub packets: Vec<Packet>,
}

impl Pcapng {
    /// The interface block a packet refers to.
    pub fn interface_of(&self, p: &Packet) -> Result<&Interface> {
        self.interfaces.get(p.interface_id as usize).ok_or_else(|| anyhow!("packet refers to interface {} of {}", p.interface_id, self.interfaces.len()))
    }
}

/// Parses every block of a pcapng file.
pub fn read(path: &Path) -> Result<Pcapng> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = PcapNgReader::new(f).with_context(|| format!("{} is not pcapng", path.display()))?;
    let mut out = Pcapng::default();
    while let Some(block) = r.next_block() {
        match block.with_context(|| format!("bad block in {}", path.display()))? {
            Block::InterfaceDescription(idb) => {
                let mut i = Interface { name: None, description: None, linktype: idb.linktype };
                for o in idb.options {
                    match o {
                        InterfaceDescriptionOption::IfName(n) => i.name = Some(n.into_owned()),
                        InterfaceDescriptionOption::IfDescription(d) => i.description = Some(d.into_owned()),
                        _ => {}
                    }
                }
                out.interfaces.push(i);
            }
            Block::EnhancedPacket(epb) => out.packets.push(Packet {
                interface_id: epb.interface_id,
                original_len: epb.original_len,
                data: epb.data.into_owned(),
                comments: epb
                    .options
                    .into_iter()
                    .filter_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.into_owned()),
                        _ => None,
                    })
                    .collect(),
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// `tshark -r FILE -T fields -e F…`: one row per packet, one column per field.
pub fn tshark_fields(path: &Path, fields: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut args: Vec<String> = vec!["-n".into(), "-r".into(), path.display().to_string(), "-T".into(), "fields".into(), "-E".into(), "separator=/t".into()];
    for f in fields {
        args.push("-e".into());
        args.push((*f).to_string());
    }
    let out = cmd::run("tshark", &args)?;
    Ok(out.lines().map(|l| l.split('\t').map(ToString::to_string).collect()).collect())
}
